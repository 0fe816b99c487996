#!/usr/bin/env bash
# The whole paper protocol, in order: [prepare data] -> train on MVTec AD (3 epochs) -> train on
# VisA (15 epochs) -> zero-shot on both -> few-shot k = 1, 2, 4 x seeds 1..5 on both ->
# scripts/compare_paper.py (our tables beside the paper's, with the difference).
#
# Expected time and GPU memory: the README's protocol table ("2. The protocol"), the one place
# the estimates are stated, with their basis.
# The script measures each step and writes the times to RESULTS/timings.txt.
#
# Every model/epoch setting can be overridden, so the same protocol runs end to end on a tiny
# model in about a minute: see scripts/reproduce_tiny.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
    cat <<EOF
usage: bash scripts/reproduce_all.sh [options] [model flags] [-- ARGS for train.py/test.py]

Reproduce the paper's zero- and few-shot tables on MVTec AD and VisA, then compare them with the
paper (RESULTS/comparison.md and .csv).

  --archives DIR          first run scripts/prepare_data.sh --archives DIR --out DATA
  --data DIR              folder holding mvtec/ and visa/ (with meta.json) [data]
  --mvtec_data DIR        MVTec AD root [DATA/mvtec]
  --visa_data DIR         VisA root [DATA/visa]
  --exps DIR              checkpoints go to DIR/train_on_mvtec and DIR/train_on_visa [exps]
  --results DIR           evaluation outputs and the comparison [results]
  --epochs N              epochs of both trainings [$MVTEC_EPOCHS on MVTec AD, $VISA_EPOCHS on VisA]
  --mvtec_epochs N        epochs on MVTec AD [$MVTEC_EPOCHS]
  --visa_epochs N         epochs on VisA [$VISA_EPOCHS]
  --skip_train            evaluate the checkpoints already in --exps
  --released              skip training; evaluate the authors' exps/pretrained/*_pretrained.pth
  --k_shot K...           few-shot k values [$K_SHOTS]
  --seeds S...            few-shot seeds [$SEEDS]
  --skip_few_shot         zero-shot only
  --feature_store DIR     keep each dataset's backbone outputs in DIR/<dataset>, shared by its
                          training and evaluations, so each test image goes through the backbone
                          once (about 11 MB per image at ViT-L/518 in fp16; the need is checked
                          against the free disk before the first step) [EXPS/feature_store]
  --no_feature_store      run every step without the store (each step reruns the backbone)
$MODEL_FLAGS_HELP

Relative paths are taken from the folder you run the script in; defaults are in the repository.
Expected time: see the README's protocol table (estimates, not measured on a GPU).
EOF
}

DATA="$REPO_ROOT/data"
MVTEC_DATA=""
VISA_DATA=""
EXPS="$REPO_ROOT/exps"
RESULTS="$REPO_ROOT/results"
ARCHIVES=""
TRAIN=1
RELEASED=0
FEW=1
STORE_DIR=""
USE_STORE=1
K_SHOT="$K_SHOTS"
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --archives) need_value "$@"; ARCHIVES="$(abspath "$2")"; shift 2 ;;
        --data) need_value "$@"; DATA="$(abspath "$2")"; shift 2 ;;
        --mvtec_data) need_value "$@"; MVTEC_DATA="$(abspath "$2")"; shift 2 ;;
        --visa_data) need_value "$@"; VISA_DATA="$(abspath "$2")"; shift 2 ;;
        --exps) need_value "$@"; EXPS="$(abspath "$2")"; shift 2 ;;
        --results) need_value "$@"; RESULTS="$(abspath "$2")"; shift 2 ;;
        --epochs) need_value "$@"; MVTEC_EPOCHS="$2"; VISA_EPOCHS="$2"; shift 2 ;;
        --mvtec_epochs) need_value "$@"; MVTEC_EPOCHS="$2"; shift 2 ;;
        --visa_epochs) need_value "$@"; VISA_EPOCHS="$2"; shift 2 ;;
        --skip_train) TRAIN=0; shift ;;
        --released) TRAIN=0; RELEASED=1; shift ;;
        --skip_few_shot) FEW=0; shift ;;
        --feature_store) need_value "$@"; STORE_DIR="$(abspath "$2")"; shift 2 ;;
        --no_feature_store) USE_STORE=0; shift ;;
        --k_shot|--k-shot) take_list "$@"; K_SHOT="$LIST"; shift "$CONSUMED" ;;
        --seeds|--seed) take_list "$@"; SEEDS="$LIST"; shift "$CONSUMED" ;;
        *) parse_common "$@"; [[ $CONSUMED -gt 0 ]] || die "unknown option $1 (see --help)"
           shift "$CONSUMED" ;;
    esac
done
MVTEC_DATA="${MVTEC_DATA:-$DATA/mvtec}"
VISA_DATA="${VISA_DATA:-$DATA/visa}"
STORE_DIR="${STORE_DIR:-$EXPS/feature_store}"

# The shared flags, forwarded to every step script.
COMMON=(--model "$MODEL" --pretrained "$PRETRAINED" --image_size "$IMAGE_SIZE"
        --features_list $FEATURES --batch_size "$BATCH_SIZE")
[[ -n "$CONFIG_PATH" ]] && COMMON+=(--config_path "$CONFIG_PATH")
[[ -n "$DEVICE" ]] && COMMON+=(--device "$DEVICE")
[[ -n "$FEW_SHOT_FEATURES" ]] && COMMON+=(--few_shot_features $FEW_SHOT_FEATURES)
[[ "$DRY_RUN" == 1 ]] && COMMON+=(--dry_run)
PASS=()
[[ ${#EXTRA_ARGS[@]} -gt 0 ]] && PASS=(-- "${EXTRA_ARGS[@]}")

if [[ "$RELEASED" == 1 ]]; then
    CKPTS=(--released)
else
    CKPTS=(--mvtec_checkpoint "$EXPS/train_on_visa/epoch_$VISA_EPOCHS.pth"
           --visa_checkpoint "$EXPS/train_on_mvtec/epoch_$MVTEC_EPOCHS.pth")
fi
EVAL=(--mvtec_data "$MVTEC_DATA" --visa_data "$VISA_DATA" --results "$RESULTS" "${CKPTS[@]}")
STORE=()
[[ "$USE_STORE" == 1 ]] && STORE=(--feature_store "$STORE_DIR")

TIMINGS="$RESULTS/timings.txt"
[[ "$DRY_RUN" == 1 ]] || mkdir -p "$RESULTS"
[[ "$DRY_RUN" == 1 ]] || echo "# reproduce_all.sh step times (measured), $(date '+%Y-%m-%d %H:%M:%S')" > "$TIMINGS"
# step NAME OUTPUT_DIRS... -- CMD...: run a step script, record its wall time and, from the
# timings.json its python runs wrote, the seconds spent in the backbone and in the metrics.
step() {
    local name="$1" t0=$SECONDS outs=()
    shift
    while [[ "$1" != -- ]]; do outs+=("$1"); shift; done
    shift
    echo "=== $name"
    "$@"
    [[ "$DRY_RUN" == 1 ]] && return 0
    "$PYTHON" - "$name" "$((SECONDS - t0))" "${outs[@]}" >> "$TIMINGS" <<'PY'
import json, sys
from pathlib import Path
name, wall, outs = sys.argv[1], sys.argv[2], sys.argv[3:]
b = m = n = 0.0
for d in outs:
    f = Path(d) / "timings.json"
    if f.is_file():
        t = json.loads(f.read_text())
        b, m, n = b + t.get("backbone_s", 0), m + t.get("metrics_s", 0), n + t.get("backbone_images", 0)
print(f"{name}: {wall} s (backbone {b:.1f} s for {int(n)} images, metrics {m:.1f} s)")
PY
    tail -n 1 "$TIMINGS"
}

if [[ "$USE_STORE" == 1 && "$DRY_RUN" != 1 ]]; then
    SIZE_ARGS=(--store "$STORE_DIR" --data "$MVTEC_DATA" "$VISA_DATA" --model "$MODEL"
               --image_size "$IMAGE_SIZE" --features_list $FEATURES)
    [[ -n "$CONFIG_PATH" ]] && SIZE_ARGS+=(--config_path "$CONFIG_PATH")
    [[ -n "$DEVICE" ]] && SIZE_ARGS+=(--device "$DEVICE")
    run "$PYTHON" scripts/feature_store_size.py "${SIZE_ARGS[@]}" || exit 1
fi

S="$REPO_ROOT/scripts"
if [[ -n "$ARCHIVES" ]]; then
    step prepare_data -- bash "$S/prepare_data.sh" --archives "$ARCHIVES" --out "$DATA"
fi
if [[ "$TRAIN" == 1 ]]; then
    step train_mvtec "$EXPS/train_on_mvtec" -- bash "$S/train_mvtec.sh" --data "$MVTEC_DATA" \
        --save "$EXPS/train_on_mvtec" --epochs "$MVTEC_EPOCHS" "${STORE[@]}" "${COMMON[@]}" "${PASS[@]}"
    step train_visa "$EXPS/train_on_visa" -- bash "$S/train_visa.sh" --data "$VISA_DATA" \
        --save "$EXPS/train_on_visa" --epochs "$VISA_EPOCHS" "${STORE[@]}" "${COMMON[@]}" "${PASS[@]}"
fi
step test_zero_shot "$RESULTS/mvtec_zero_shot" "$RESULTS/visa_zero_shot" -- \
    bash "$S/test_zero_shot.sh" "${EVAL[@]}" "${STORE[@]}" "${COMMON[@]}" "${PASS[@]}"
if [[ "$FEW" == 1 ]]; then
    step test_few_shot "$RESULTS/mvtec_few_shot" "$RESULTS/visa_few_shot" -- \
        bash "$S/test_few_shot.sh" "${EVAL[@]}" --k_shot $K_SHOT --seeds $SEEDS "${STORE[@]}" \
        "${COMMON[@]}" "${PASS[@]}"
fi
step compare_paper -- run "$PYTHON" scripts/compare_paper.py --results "$RESULTS"
run "$PYTHON" -m engine.report protocol "$RESULTS"  # index.html: every run's report + the comparison
echo "done: tables in $RESULTS (comparison.md, comparison.csv), step times in $TIMINGS;"
echo "      open $RESULTS/index.html for every run's report and the paper comparison"
