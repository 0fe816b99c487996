#!/usr/bin/env bash
# Zero-shot evaluation on MVTec AD and VisA (the paper's zero-shot tables).
#
# MVTec AD is scored with the projections trained on VisA, and VisA with those trained on
# MVTec AD (cross-dataset, as in the paper). Writes RESULTS/{mvtec,visa}_zero_shot/ with
# metrics.json, metrics.md, metrics.csv, thresholds.json, config.json, log.txt.
#
# Expected time and GPU memory: the README's protocol table ("2. The protocol"), the one place
# the estimates are stated, with their basis.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
MODE=zero_shot
source "$REPO_ROOT/scripts/_eval.sh"
