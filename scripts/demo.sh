#!/usr/bin/env bash
# Offline end-to-end demo of APRIL-GAN, runnable from any folder:
#   1. synthetic MVTec-layout (bottle, grid) and VisA-layout (candle, pcb1) datasets + meta.json
#   2. train the projections on synthetic MVTec (1 epoch)
#   3. zero-shot and few-shot (k = 1, 2; seed 1) evaluation on synthetic VisA, with overlays
#   4. predict.py on a folder of images (no labels), with the thresholds of step 3
# Model: the tiny RANDOM CLIP of the test fixtures (84 px, stages 2 4 6 8), unless --model /
# --pretrained / --config_path name another one (e.g. --model ViT-B-16 --pretrained openai when
# the weights are reachable or cached).
#
# WITH THE DEFAULT TINY RANDOM MODEL THE NUMBERS ARE MEANINGLESS: it shows the commands and the
# output files, not the method's accuracy.
# Expected time and memory: measured, in the README ("Quick start"), the one place it is stated.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
    cat <<EOF
usage: bash scripts/demo.sh [OUT] [--out DIR] [--epochs N] [model flags]

Offline demo on synthetic data: train on synthetic MVTec, evaluate zero- and few-shot on
synthetic VisA, score a folder with predict.py. Prints the tables and where the files are.

  OUT, --out DIR   output folder [./demo_out]
  --epochs N       training epochs [1]
$MODEL_FLAGS_HELP
Default model: the tiny random CLIP of tests/fixtures/golden/models (84 px, stages 2 4 6 8);
its numbers are meaningless. Any --model/--pretrained/--config_path switches to that model with
the released defaults for what you leave out ($D_IMAGE_SIZE px, stages $D_FEATURES).
EOF
}

OUT=""
EPOCHS=1
# remember the released defaults, then see which model flags the user gave
D_MODEL="$MODEL" D_PRETRAINED="$PRETRAINED" D_IMAGE_SIZE="$IMAGE_SIZE" D_FEATURES="$FEATURES"
MODEL="" PRETRAINED="" CONFIG_PATH="" IMAGE_SIZE="" FEATURES=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --out) need_value "$@"; OUT="$(abspath "$2")"; shift 2 ;;
        --epochs) need_value "$@"; EPOCHS="$2"; shift 2 ;;
        -*) parse_common "$@"; [[ $CONSUMED -gt 0 ]] || die "unknown option $1 (see --help)"
            shift "$CONSUMED" ;;
        *) [[ -z "$OUT" ]] || die "unexpected argument $1 (see --help)"
           OUT="$(abspath "$1")"; shift ;;
    esac
done
OUT="${OUT:-$(abspath demo_out)}"
TINY=0
if [[ -z "$MODEL$PRETRAINED$CONFIG_PATH" ]]; then
    TINY=1
    M="$REPO_ROOT/tests/fixtures/golden/models"
    MODEL=tiny-vit CONFIG_PATH="$M/tiny-vit.json" PRETRAINED="$M/tiny-vit-random.pt"
    IMAGE_SIZE="${IMAGE_SIZE:-84}" FEATURES="${FEATURES:-2 4 6 8}"
fi
MODEL="${MODEL:-$D_MODEL}" PRETRAINED="${PRETRAINED:-$D_PRETRAINED}"
IMAGE_SIZE="${IMAGE_SIZE:-$D_IMAGE_SIZE}" FEATURES="${FEATURES:-$D_FEATURES}"
model_args

loud() {
    [[ "$TINY" == 1 ]] || return 0
    echo "################################################################################"
    echo "#  DEMO WITH A TINY *RANDOM* MODEL ON SYNTHETIC IMAGES: ALL NUMBERS ARE         #"
    echo "#  MEANINGLESS. They show the pipeline and the file formats, not the method.    #"
    echo "################################################################################"
}

T0=$SECONDS
loud
DATA="$OUT/data" EXPS="$OUT/exps" RES="$OUT/results"
echo "== 1/4 synthetic datasets -> $DATA"
run "$PYTHON" scripts/make_synthetic_data.py "$DATA"

echo "== 2/4 train the projections on synthetic MVTec ($EPOCHS epoch(s))"
run "$PYTHON" train.py --dataset mvtec --train_data_path "$DATA/mvtec" \
    --save_path "$EXPS/train_on_mvtec" "${MODEL_ARGS[@]}" --epoch "$EPOCHS" "${EXTRA_ARGS[@]}"
CKPT="$EXPS/train_on_mvtec/epoch_$EPOCHS.pth"

echo "== 3/4 evaluate on synthetic VisA: zero-shot, then few-shot k=1,2 (seed 1)"
run "$PYTHON" test.py --mode zero_shot --dataset visa --data_path "$DATA/visa" \
    --save_path "$RES/visa_zero_shot" --checkpoint_path "$CKPT" "${MODEL_ARGS[@]}" \
    --visualize "${EXTRA_ARGS[@]}"
run "$PYTHON" test.py --mode few_shot --dataset visa --data_path "$DATA/visa" \
    --save_path "$RES/visa_few_shot" --checkpoint_path "$CKPT" "${MODEL_ARGS[@]}" \
    --few_shot_features $FEATURES --k_shot 1 2 --seed 1 --visualize "${EXTRA_ARGS[@]}"

echo "== 4/4 predict.py: score a folder of unlabelled images (candle), zero-shot thresholds"
run "$PYTHON" predict.py --image_dir "$DATA/visa/candle/Data/Images" --recursive \
    --object_name candle --save_path "$RES/predict_candle" --checkpoint_path "$CKPT" \
    "${MODEL_ARGS[@]}" --thresholds "$RES/visa_zero_shot/thresholds.json" "${EXTRA_ARGS[@]}"

[[ "$DRY_RUN" == 1 ]] && exit 0
echo
loud
echo "Zero-shot on synthetic VisA ($RES/visa_zero_shot/metrics.md):"
cat "$RES/visa_zero_shot/metrics.md"
for k in 1 2; do
    echo
    echo "Few-shot k=$k, seed 1 ($RES/visa_few_shot/k${k}_seed1/metrics.md):"
    cat "$RES/visa_few_shot/k${k}_seed1/metrics.md"
done
echo
echo "predict.py scores ($RES/predict_candle/scores.csv), first rows:"
head -n 5 "$RES/predict_candle/scores.csv"
cat <<EOF

Where things are:
  data:        $DATA/{mvtec,visa} (meta.json in each)
  checkpoint:  $CKPT
  zero-shot:   $RES/visa_zero_shot/ (report.html, metrics.json/.md/.csv, thresholds.json, overlays/)
  few-shot:    $RES/visa_few_shot/ (report.html; k1_seed1/, k2_seed1/ with report.html,
               references.json, overlays/; summary_k1.md, summary_k2.md)
  predict.py:  $RES/predict_candle/ (report.html, scores.csv, scores.json, heatmaps/, masks/)
Open the report.html files in any browser (they work offline).
Demo finished in $((SECONDS - T0)) s.
EOF
loud
