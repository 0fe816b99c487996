# Body of test_zero_shot.sh and test_few_shot.sh (sourced after _common.sh with MODE set).

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "scripts/$(basename "$0") is the shared body of test_zero_shot.sh and test_few_shot.sh; run one of those" 
    echo "(e.g. bash scripts/test_zero_shot.sh --help)." 
    [[ "${1:-}" == -h || "${1:-}" == --help ]] && exit 0
    exit 2
fi

usage() {
    local extra=""
    if [[ "$MODE" == few_shot ]]; then
        extra="
  --k_shot K...           reference images per category [$K_SHOTS, the paper's protocol]
  --seeds S...            seeds of the reference draw [$SEEDS]
  --image_score S         released, per_image or both: both keeps the paper's (released) table
                          and adds the per-image score's, and thresholds.json holds thresholds
                          for each, so predict.py's default per-image score can use them [both]"
    fi
    cat <<EOF
usage: bash scripts/test_${MODE}.sh [options] [model flags] [-- ARGS for test.py]

${MODE/_/-} evaluation on MVTec AD and VisA with the projections trained on the other dataset.
Writes RESULTS/mvtec_${MODE}/ and RESULTS/visa_${MODE}/.

  --mvtec_data DIR        MVTec AD root with meta.json [data/mvtec]
  --visa_data DIR         VisA root with meta.json [data/visa]
  --mvtec_checkpoint FILE weights for MVTec AD, trained on VisA [exps/train_on_visa/epoch_15.pth]
  --visa_checkpoint FILE  weights for VisA, trained on MVTec AD [exps/train_on_mvtec/epoch_3.pth]
  --released              use the authors' files instead: exps/pretrained/visa_pretrained.pth
                          (for MVTec AD) and exps/pretrained/mvtec_pretrained.pth (for VisA)
  --datasets D...         which datasets [mvtec visa]
  --results DIR           output root [results]${extra}
  --feature_store DIR     read/keep the backbone outputs of each dataset in DIR/<dataset> (the
                          folders train_*.sh --feature_store DIR fills) [off]
  --save_predictions      also write predictions.npz (maps of every test image; large)
  --visualize             also write heatmap overlays
  --metric_workers N      processes computing metrics while the GPU runs on (about 2 GB RAM
                          each) [the environment variable METRIC_WORKERS when set, else
                          min(4, CPU cores - 1)]
$MODEL_FLAGS_HELP

Relative paths are taken from the folder you run the script in; defaults are in the repository.
EOF
}

MVTEC_DATA="$REPO_ROOT/data/mvtec"
VISA_DATA="$REPO_ROOT/data/visa"
MVTEC_CKPT="$REPO_ROOT/exps/train_on_visa/epoch_15.pth"
VISA_CKPT="$REPO_ROOT/exps/train_on_mvtec/epoch_3.pth"
RESULTS="$REPO_ROOT/results"
DATASETS="mvtec visa"
K_SHOT="$K_SHOTS"            # the paper's protocol; test.py alone defaults to the released k=10, seed 10
OPTS=()
STORE_ROOT=""
IMAGE_SCORE=both             # the paper's table, plus per-image thresholds for predict.py
NPROC="$(nproc 2>/dev/null || echo 2)"
METRIC_WORKERS="${METRIC_WORKERS:-$(( NPROC > 5 ? 4 : NPROC - 1 ))}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --mvtec_data) need_value "$@"; MVTEC_DATA="$(abspath "$2")"; shift 2 ;;
        --visa_data) need_value "$@"; VISA_DATA="$(abspath "$2")"; shift 2 ;;
        --mvtec_checkpoint) need_value "$@"; MVTEC_CKPT="$(abspath "$2")"; shift 2 ;;
        --visa_checkpoint) need_value "$@"; VISA_CKPT="$(abspath "$2")"; shift 2 ;;
        --released) MVTEC_CKPT="$REPO_ROOT/exps/pretrained/visa_pretrained.pth"
                    VISA_CKPT="$REPO_ROOT/exps/pretrained/mvtec_pretrained.pth"; shift ;;
        --results) need_value "$@"; RESULTS="$(abspath "$2")"; shift 2 ;;
        --datasets) take_list "$@"; DATASETS="$LIST"; shift "$CONSUMED" ;;
        --k_shot|--k-shot) [[ "$MODE" == few_shot ]] || die "$1 is for test_few_shot.sh"
                  take_list "$@"; K_SHOT="$LIST"; shift "$CONSUMED" ;;
        --seeds|--seed) [[ "$MODE" == few_shot ]] || die "$1 is for test_few_shot.sh"
                  take_list "$@"; SEEDS="$LIST"; shift "$CONSUMED" ;;
        --image_score|--image-score) [[ "$MODE" == few_shot ]] || die "$1 is for test_few_shot.sh"
                  need_value "$@"; IMAGE_SCORE="$2"; shift 2 ;;
        --save_predictions|--visualize) OPTS+=("$1"); shift ;;
        --feature_store) need_value "$@"; STORE_ROOT="$(abspath "$2")"; shift 2 ;;
        --metric_workers) need_value "$@"; METRIC_WORKERS="$2"; shift 2 ;;
        *) parse_common "$@"; [[ $CONSUMED -gt 0 ]] || die "unknown option $1 (see --help)"
           shift "$CONSUMED" ;;
    esac
done
model_args
FEW=()
if [[ "$MODE" == few_shot ]]; then
    FEW=(--k_shot $K_SHOT --seed $SEEDS --few_shot_features ${FEW_SHOT_FEATURES:-$FEATURES}
         --image_score "$IMAGE_SCORE")
fi

for ds in $DATASETS; do
    case "$ds" in
        mvtec) data="$MVTEC_DATA"; ckpt="$MVTEC_CKPT"; trained="VisA (bash scripts/train_visa.sh)" ;;
        visa) data="$VISA_DATA"; ckpt="$VISA_CKPT"; trained="MVTec AD (bash scripts/train_mvtec.sh)" ;;
        *) die "unknown dataset $ds: use mvtec and/or visa" ;;
    esac
    if [[ "$DRY_RUN" != 1 ]]; then
        [[ -f "$data/meta.json" ]] || die "$data/meta.json not found: prepare $ds first (bash scripts/prepare_data.sh --archives DIR)"
        [[ -f "$ckpt" ]] || die "checkpoint $ckpt not found: train on $trained, pass --${ds}_checkpoint FILE, or use --released"
    fi
    STORE=()
    [[ -n "$STORE_ROOT" ]] && STORE=(--feature_store "$STORE_ROOT/$ds")
    run "$PYTHON" test.py --mode "$MODE" --dataset "$ds" --data_path "$data" \
        --save_path "$RESULTS/${ds}_${MODE}" --checkpoint_path "$ckpt" "${MODEL_ARGS[@]}" \
        --metric_workers "$METRIC_WORKERS" "${FEW[@]}" "${STORE[@]}" "${OPTS[@]}" "${EXTRA_ARGS[@]}"
    echo "results: $RESULTS/${ds}_${MODE}"
done
