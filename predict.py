"""Score a folder of your own images of one object with APRIL-GAN (no labels needed).

    python predict.py --image_dir my_parts/ --object_name screw --save_path results/my_parts \
        --checkpoint_path exps/pretrained/visa_pretrained.pth
    python predict.py ... --reference_dir my_parts_ok/ --thresholds results/mvtec/thresholds.json

Zero-shot by default (SPEC §4): image score = softmax(100 · f_img · T)[1], anomaly map = sum of
the stage maps. With ``--reference_dir`` (normal images of the same object, all of them used)
it is few-shot (SPEC §5): the memory-bank term is added to the map, and the image score is
0.5 · (text score + s) with s = max(map) min-max normalised over the *scored folder*, as the
released code normalises over a category's test set. So few-shot scores are relative to the
folder: the same image can score differently in another folder, and a folder of one image gets
s = 0.

Outputs (``--save_path``): scores.csv (path,score[,anomalous]), scores.json, heatmaps/*.png
(image | overlay [| predicted mask]; each image's file named in scores.json), masks/*.png at
the original image size (pixels with map >= pixel threshold) when a threshold is known,
config.json, log.txt. Thresholds come from
the thresholds.json that test.py writes (F1-max on that run's test set), or from
--image_threshold / --pixel_threshold.
"""
from __future__ import annotations

import sys
from pathlib import Path

from engine.config import PredictConfig
from utils.cli import config_json, parse_config, run_main


def parse_args(argv: list[str] | None = None) -> PredictConfig:
    return parse_config(PredictConfig, argv, "predict.py", __doc__)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)

    def body() -> None:
        from engine.preflight import check_pretrained

        check_pretrained(cfg.model, cfg.pretrained)  # offline mistakes fail before torch loads
        from engine import prediction
        from utils.log import setup_logging

        log = setup_logging(Path(cfg.save_path))
        job = prediction.prepare(cfg, log)  # files, thresholds, prompts, model, memory bank
        scores = prediction.run(job)  # score every readable file
        prediction.write(job, scores, config_json(cfg, device=str(job.device)))

    return run_main(body, cfg.debug)


if __name__ == "__main__":
    sys.exit(main())
