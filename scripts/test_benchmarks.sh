#!/usr/bin/env bash
# Zero-shot (and few-shot where a set has normal images for references) on every benchmark set
# prepared under a data root, then one cross-dataset table and an index page.
#
# Each set is a folder under --data_root indexed by `python -m datasets.prepare NAME DIR` (or
# `bash scripts/prepare_data.sh --set NAME DIR`); the README lists the sets, their layouts,
# splits, object words and licences. Writes RESULTS/<set>_{zero_shot,few_shot}/ (test.py's
# files), RESULTS/benchmarks.md, benchmarks.csv and index.html.
#
# Expected time: one test.py run per set and setting (the README's protocol table gives the
# per-image cost of the model).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
    cat <<EOF2
usage: bash scripts/test_benchmarks.sh --data_root DIR --checkpoint CK [options] [model flags]

Evaluate every prepared benchmark set under DIR (folders with a meta.json written by a set's
builder) zero-shot, and few-shot where the set has normal images to draw references from (a
set without an official split: each run leaves its references out of its test images); then
write RESULTS/benchmarks.md/.csv (one row per set and setting; means over the industrial and
the medical sets) and RESULTS/index.html. Where a paper reports APRIL-GAN on a set
(scripts/paper_tables/sets_*.csv), benchmarks.md shows ours / published and published.csv the
same in long form, marked comparable only when the projections were trained as the source
trained them, the zero-shot run tested the images the source tested
(scripts/paper_tables/sets_*_tested.csv), and otherwise saying why not.

  --data_root DIR      folder holding one prepared folder per set (required)
  --checkpoint CK      projection weights (required), e.g. exps/train_on_mvtec/epoch_3.pth
  --results DIR        output root [results/benchmarks]
  --k_shot K           reference images per category for few-shot [4]
  --seed S             seed of the reference draw [1]
  --skip_few_shot      zero-shot only
  --trained_on NAME    the dataset CK was trained on, when CK does not record it (the
                       authors' released checkpoints); train.py's checkpoints record it
$MODEL_FLAGS_HELP
EOF2
}

DATA_ROOT=""
CKPT=""
RESULTS="$REPO_ROOT/results/benchmarks"
K=4
SEED=1
FEW=1
TRAINED_ON=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --data_root) need_value "$@"; DATA_ROOT="$(abspath "$2")"; shift 2 ;;
        --checkpoint) need_value "$@"; CKPT="$(abspath "$2")"; shift 2 ;;
        --results) need_value "$@"; RESULTS="$(abspath "$2")"; shift 2 ;;
        --k_shot) need_value "$@"; K="$2"; shift 2 ;;
        --seed) need_value "$@"; SEED="$2"; shift 2 ;;
        --skip_few_shot) FEW=0; shift ;;
        --trained_on) need_value "$@"; TRAINED_ON=(--trained_on "$2"); shift 2 ;;
        *) parse_common "$@"; [[ $CONSUMED -gt 0 ]] || die "unknown option $1 (see --help)"
           shift "$CONSUMED" ;;
    esac
done
[[ -n "$DATA_ROOT" ]] || die "--data_root DIR is required (see --help)"
[[ -n "$CKPT" ]] || die "--checkpoint CK is required (see --help)"
[[ "$DRY_RUN" == 1 || -f "$CKPT" ]] || die "checkpoint $CKPT not found"
model_args
SETS="$("$PYTHON" scripts/sets_table.py list "$DATA_ROOT")" || exit 2
[[ -n "$SETS" ]] || die "no prepared benchmark set under $DATA_ROOT (index one with: python -m datasets.prepare NAME DIR)"
while read -r name path few; do
    run "$PYTHON" test.py --mode zero_shot --dataset "$name" --data_path "$path" \
        --save_path "$RESULTS/${name}_zero_shot" --checkpoint_path "$CKPT" "${MODEL_ARGS[@]}" \
        "${EXTRA_ARGS[@]}"
    if [[ "$FEW" == 1 && "$few" == 1 ]]; then
        run "$PYTHON" test.py --mode few_shot --dataset "$name" --data_path "$path" \
            --save_path "$RESULTS/${name}_few_shot" --checkpoint_path "$CKPT" \
            --k_shot "$K" --seed "$SEED" "${MODEL_ARGS[@]}" "${EXTRA_ARGS[@]}"
    fi
done <<< "$SETS"
run "$PYTHON" scripts/sets_table.py table "$RESULTS" --checkpoint "$CKPT" "${TRAINED_ON[@]}"
