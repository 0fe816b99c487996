#!/usr/bin/env bash
# Few-shot evaluation on MVTec AD and VisA: k = 1, 2, 4 reference images x seeds 1..5, all
# (k, seed) runs of a dataset in one pass (each test image through the backbone once).
#
# Writes RESULTS/{mvtec,visa}_few_shot/: k{K}_seed{S}/ (metrics.json/.md/.csv, thresholds.json,
# references.json per run) and summary_k{K}.md/.csv + summary.json (mean +- std over seeds, the
# layout of the paper's few-shot tables).
#
# Expected on one 24 GB GPU -- ESTIMATED, not measured: about 0.5-1.5 h for both datasets, peak
# GPU memory about 3-5 GB. Basis: the backbone work is small (one pass per test image, MVTec
# 1,725 + VisA 2,162, plus at most 20 reference images per category; ViT-L/14-336 at 518 px,
# about 1 TFLOP per image, a few minutes in all); the memory-bank search is about 1,369 x
# 1,369*k cosine similarities per stage and image (negligible on the GPU). The time is CPU time
# for the metrics of 15 runs x 3,887 maps of 518x518 at about 0.09 s per map on one CPU core
# (measured for the metrics alone), about 1.5 h on one core, divided among the
# --metric_workers processes (default min(4, cores - 1)). Fewer seeds (--seeds 1) cut it 5x.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
MODE=few_shot
source "$REPO_ROOT/scripts/_eval.sh"
