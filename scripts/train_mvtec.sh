#!/usr/bin/env bash
# Train the APRIL-GAN projections on MVTec AD -> the weights used to evaluate on VisA.
#
# As released: the MVTec *test* split of all 15 categories is the training set, 3 epochs,
# batch 8, Adam lr 1e-3, 2x2 mosaic augmentation with probability 0.2, a checkpoint per epoch
# (epoch_N.pth). Counterpart of the released mvtec_pretrained.pth.
#
# Expected on one 24 GB GPU -- ESTIMATED, not measured: about 5-10 min, peak GPU memory about
# 4-6 GB. Basis: 3 epochs x 1,725 images = 5,175 backbone passes of ViT-L/14-336 at 518 px
# (37x37 = 1,369 patch tokens + class token, about 1 TFLOP per image), at roughly 20-40 images/s
# in fp16 on an RTX 3090/4090-class card, plus PNG decoding in 4 loader workers. The frozen ViT-L
# weights take 1.7 GB; activations are small because only the projections get gradients.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
    cat <<EOF
usage: bash scripts/train_mvtec.sh [--data DIR] [--save DIR] [--epochs N] [model flags] [-- ARGS]

Train the projections on MVTec AD (test split, all categories) for evaluating on VisA.
Writes DIR/epoch_1.pth ... epoch_N.pth, config.json and log.txt.

  --data DIR      MVTec AD root holding meta.json [data/mvtec]
                  (prepare it with: bash scripts/prepare_data.sh --archives DOWNLOADS)
  --save DIR      checkpoint folder [exps/train_on_mvtec]
  --epochs N      epochs [3, as released]
$MODEL_FLAGS_HELP

Relative paths are taken from the folder you run the script in; defaults are in the repository.
Expected time on one 24 GB GPU: about 5-10 min (an estimate, not a measurement).
EOF
}

DATA="$REPO_ROOT/data/mvtec"
SAVE="$REPO_ROOT/exps/train_on_mvtec"
EPOCHS=3
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
[[ "$DRY_RUN" == 1 || -f "$DATA/meta.json" ]] || die "$DATA/meta.json not found: prepare MVTec AD first (bash scripts/prepare_data.sh --archives DIR)"
model_args
run "$PYTHON" train.py --dataset mvtec --train_data_path "$DATA" --save_path "$SAVE" \
    "${MODEL_ARGS[@]}" --aug_rate 0.2 --epoch "$EPOCHS" --learning_rate 1e-3 \
    --print_freq 1 --save_freq 1 "${EXTRA_ARGS[@]}"
echo "trained on MVTec AD: $SAVE/epoch_$EPOCHS.pth (use it with --visa_checkpoint)"
