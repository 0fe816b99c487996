# Body of train_mvtec.sh and train_visa.sh (sourced after _common.sh). The caller sets
# DS (mvtec|visa), NAME, OTHER (the dataset the weights are for), EPOCHS, AUG and FOR_FLAG.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "scripts/$(basename "$0") is the shared body of train_mvtec.sh and train_visa.sh; run one of those" 
    echo "(e.g. bash scripts/train_mvtec.sh --help)." 
    [[ "${1:-}" == -h || "${1:-}" == --help ]] && exit 0
    exit 2
fi

usage() {
    cat <<EOF2
usage: bash scripts/train_${DS}.sh [--data DIR] [--save DIR] [--epochs N] [model flags] [-- ARGS]

Train the projections on $NAME (test split, all categories) for evaluating on $OTHER.
Writes DIR/epoch_1.pth ... epoch_N.pth, config.json and log.txt.

  --data DIR      $NAME root holding meta.json [data/$DS]
                  (prepare it with: bash scripts/prepare_data.sh --archives DOWNLOADS)
  --save DIR      checkpoint folder [exps/train_on_$DS]
  --epochs N      epochs [$EPOCHS, as released]
  --feature_store DIR  keep the frozen backbone's outputs in DIR/$DS (train.py --cache_features),
                  shared with test_*.sh --feature_store DIR [off]
$MODEL_FLAGS_HELP

Relative paths are taken from the folder you run the script in; defaults are in the repository.
Expected time: see the README's protocol table (estimates, not measured on a GPU).
EOF2
}

STORE=()
DATA="$REPO_ROOT/data/$DS"
SAVE="$REPO_ROOT/exps/train_on_$DS"
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --data) need_value "$@"; DATA="$(abspath "$2")"; shift 2 ;;
        --save) need_value "$@"; SAVE="$(abspath "$2")"; shift 2 ;;
        --epochs) need_value "$@"; EPOCHS="$2"; shift 2 ;;
        --feature_store) need_value "$@"; STORE=(--cache_features "$(abspath "$2")/$DS"); shift 2 ;;
        *) parse_common "$@"; [[ $CONSUMED -gt 0 ]] || die "unknown option $1 (see --help)"
           shift "$CONSUMED" ;;
    esac
done
[[ "$DRY_RUN" == 1 || -f "$DATA/meta.json" ]] || die "$DATA/meta.json not found: prepare $NAME first (bash scripts/prepare_data.sh --archives DIR)"
model_args
run "$PYTHON" train.py --dataset "$DS" --train_data_path "$DATA" --save_path "$SAVE" \
    "${MODEL_ARGS[@]}" --aug_rate "$AUG" --epoch "$EPOCHS" "${STORE[@]}" "${EXTRA_ARGS[@]}"
echo "trained on $NAME: $SAVE/epoch_$EPOCHS.pth (use it with $FOR_FLAG)"
