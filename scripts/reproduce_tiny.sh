#!/usr/bin/env bash
# The whole reproduction protocol of scripts/reproduce_all.sh, end to end, on synthetic data and
# the tiny random CLIP of the test fixtures -- a smoke test of the pipeline, offline, on CPU.
#
# Synthetic MVTec-layout (bottle, grid) and VisA-layout (candle, pcb1) datasets are generated,
# then: train on MVTec (1 epoch) -> train on VisA (1 epoch) -> zero-shot on both -> few-shot
# k = 1, 2, 4 x seeds 1..5 on both -> comparison with the paper's tables.
# Model: tests/fixtures/golden/models/tiny-vit.json + tiny-vit-random.pt, 84 px, stages 2 4 6 8.
#
# THE NUMBERS ARE MEANINGLESS: random weights and synthetic images. Only the plumbing is tested.
# Expected time and memory: measured, in the README ("The same protocol on a tiny model").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
    cat <<EOF
usage: bash scripts/reproduce_tiny.sh [--out DIR] [--epochs N] [reproduce_all.sh options]

Run scripts/reproduce_all.sh end to end on synthetic data with the tiny random test model
(offline, CPU). Outputs: DIR/data, DIR/exps, DIR/results (comparison.md/.csv, timings.txt).
The numbers are meaningless (random weights); it checks that the protocol runs.

  --out DIR     output folder [./results/reproduce_tiny]
  --epochs N    training epochs on each dataset [1]
Any other option is passed to reproduce_all.sh (e.g. --seeds 1 2, --skip_few_shot, --dry_run).
EOF
}

OUT="$(abspath results/reproduce_tiny)"
EPOCHS=1
REST=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --out) need_value "$@"; OUT="$(abspath "$2")"; shift 2 ;;
        --epochs) need_value "$@"; EPOCHS="$2"; shift 2 ;;
        *) REST+=("$1"); shift ;;
    esac
done
# tiny maps: metrics are instant, so worker processes would only add start-up time
export METRIC_WORKERS="${METRIC_WORKERS:-0}"
M="$REPO_ROOT/tests/fixtures/golden/models"
echo "!!! tiny RANDOM model on synthetic data: the numbers below are meaningless !!!"
run "$PYTHON" scripts/make_synthetic_data.py "$OUT/data"
# Options the user gave come after ours, so they win.
bash "$REPO_ROOT/scripts/reproduce_all.sh" --data "$OUT/data" --exps "$OUT/exps" \
    --results "$OUT/results" --epochs "$EPOCHS" \
    --model tiny-vit --config_path "$M/tiny-vit.json" --pretrained "$M/tiny-vit-random.pt" \
    --image_size 84 --features_list 2 4 6 8 --device cpu "${REST[@]}"
echo "!!! tiny RANDOM model on synthetic data: the numbers above are meaningless !!!"
