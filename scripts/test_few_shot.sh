#!/usr/bin/env bash
# Few-shot evaluation on MVTec AD and VisA: k = 1, 2, 4 reference images x seeds 1..5, all
# (k, seed) runs of a dataset in one pass (each test image through the backbone once).
#
# Writes RESULTS/{mvtec,visa}_few_shot/: k{K}_seed{S}/ (metrics.json/.md/.csv, thresholds.json,
# references.json per run) and summary_k{K}.md/.csv + summary.json (mean +- std over seeds, the
# layout of the paper's few-shot tables).
#
# Expected time and GPU memory: the README's protocol table ("2. The protocol"), the one place
# the estimates are stated, with their basis.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
MODE=few_shot
source "$REPO_ROOT/scripts/_eval.sh"
