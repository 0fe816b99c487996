"""The formulas of ``models.anomaly_maps`` in words, written once: the export's sidecar,
predict.py's ``scores.json`` and its report quote these. Plain strings (no torch import), so
the commands' ``--help`` stays fast; each names the function that computes it."""
from __future__ import annotations

TEXT_SCORE = "text_score = softmax(100 * normalize(image_embed) . T)[1]"  # image_scores
MAP_ZERO_SHOT = "sum_n softmax(upsample(logits_n))[1]"  # zero_shot_map
MAP_FEW_SHOT = " + sum_m upsample(1 - max cos(tokens_m, bank_m))"  # few_shot_map, added to it
PER_IMAGE_SCORE = ("0.5 * (text_score + clip((map_max - mu) / mu, 0, 1)), mu = the references' "
                   "leave-one-out map maximum")  # per_image_scores
RELEASED_SCORE = "0.5 * (text_score + min-max over the scored images of map_max)"
# ^ combined_image_scores
SCORE_FORMULAS = {"zero_shot": TEXT_SCORE, "per_image": PER_IMAGE_SCORE,
                  "released": RELEASED_SCORE}  # by predict.py's score name
