#!/usr/bin/env bash
# Zero-shot evaluation on MVTec AD and VisA (the paper's zero-shot tables).
#
# MVTec AD is scored with the projections trained on VisA, and VisA with those trained on
# MVTec AD (cross-dataset, as in the paper). Writes RESULTS/{mvtec,visa}_zero_shot/ with
# metrics.json, metrics.md, metrics.csv, thresholds.json, config.json, log.txt.
#
# Expected on one 24 GB GPU -- ESTIMATED, not measured: about 5-10 min for both datasets,
# peak GPU memory about 3-5 GB. Basis: one backbone pass per test image (MVTec 1,725 + VisA
# 2,162 images; ViT-L/14-336 at 518 px, 1,369 patch tokens, about 1 TFLOP per image) is only
# about 2-4 min at 20-40 images/s; the rest is CPU time for the metrics at 518x518 (pixel
# AUROC/AP/F1-max, PRO, the MVTec AU-PRO extra), about 0.09 s per test image on one CPU core
# (measured for the metrics alone: 60 maps of 518x518 in about 5.4 s), about 6 min for 3,887
# maps, shared by --metric_workers processes while the GPU goes on.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
MODE=zero_shot
source "$REPO_ROOT/scripts/_eval.sh"
