#!/usr/bin/env bash
# Train the APRIL-GAN projections on VisA -> the weights used to evaluate on MVTec AD.
#
# As released: the VisA *test* split of all 12 categories (1cls split) is the training set,
# 15 epochs, batch 8, Adam lr 1e-3, no mosaic, a checkpoint per epoch (epoch_N.pth).
# Counterpart of the released visa_pretrained.pth.
#
# Expected on one 24 GB GPU -- ESTIMATED, not measured: about 20-40 min, peak GPU memory about
# 4-6 GB. Basis: 15 epochs x 2,162 images = 32,430 backbone passes of ViT-L/14-336 at 518 px
# (1,369 patch tokens + class token, about 1 TFLOP per image) at roughly 20-40 images/s in fp16
# on an RTX 3090/4090-class card; VisA's large JPEGs (about 1500x1000) are decoded by 4 loader
# workers. --cache_features DIR (pass it after --) skips the backbone after the first epoch but
# needs about 11 MiB of disk per image (fp16 tokens of 4 stages), about 24 GB for VisA.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
    cat <<EOF
usage: bash scripts/train_visa.sh [--data DIR] [--save DIR] [--epochs N] [model flags] [-- ARGS]

Train the projections on VisA (test split, all categories) for evaluating on MVTec AD.
Writes DIR/epoch_1.pth ... epoch_N.pth, config.json and log.txt.

  --data DIR      VisA root holding meta.json [data/visa]
                  (prepare it with: bash scripts/prepare_data.sh --archives DOWNLOADS)
  --save DIR      checkpoint folder [exps/train_on_visa]
  --epochs N      epochs [15, as released]
$MODEL_FLAGS_HELP

Relative paths are taken from the folder you run the script in; defaults are in the repository.
Expected time on one 24 GB GPU: about 20-40 min (an estimate, not a measurement).
EOF
}

DATA="$REPO_ROOT/data/visa"
SAVE="$REPO_ROOT/exps/train_on_visa"
EPOCHS=15
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --data) need_value "$@"; DATA="$(abspath "$2")"; shift 2 ;;
        --save) need_value "$@"; SAVE="$(abspath "$2")"; shift 2 ;;
        --epochs) need_value "$@"; EPOCHS="$2"; shift 2 ;;
        *) parse_common "$@"; [[ $CONSUMED -gt 0 ]] || die "unknown option $1 (see --help)"
           shift "$CONSUMED" ;;
    esac
done
[[ "$DRY_RUN" == 1 || -f "$DATA/meta.json" ]] || die "$DATA/meta.json not found: prepare VisA first (bash scripts/prepare_data.sh --archives DIR)"
model_args
run "$PYTHON" train.py --dataset visa --train_data_path "$DATA" --save_path "$SAVE" \
    "${MODEL_ARGS[@]}" --aug_rate 0 --epoch "$EPOCHS" --learning_rate 1e-3 \
    --print_freq 1 --save_freq 1 "${EXTRA_ARGS[@]}"
echo "trained on VisA: $SAVE/epoch_$EPOCHS.pth (use it with --mvtec_checkpoint)"
