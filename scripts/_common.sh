# Shared by the scripts/*.sh entry points (sourced, never run on its own).
#
# Sets REPO_ROOT, makes relative paths the user passes absolute (so they stay relative to the
# folder the script was started from, even after we cd to the repository root), and parses the
# model flags every script shares. The defaults come from one place, the config dataclasses of
# engine/config/ (`python -m engine.config --shell`): the released ViT-L-14-336, openai,
# 518 px, stages 6 12 18 24, and the paper's epochs and few-shot protocol.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "scripts/$(basename "$0") is sourced by the scripts/*.sh entry points, not run on its own." 
    echo "Run e.g. bash scripts/train_mvtec.sh --help, scripts/test_few_shot.sh --help or" 
    echo "scripts/reproduce_all.sh --help." 
    [[ "${1:-}" == -h || "${1:-}" == --help ]] && exit 0
    exit 2
fi

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"

die() { echo "error: $*" >&2; exit 2; }

DEFAULTS="$(cd "$REPO_ROOT" && "$PYTHON" -m engine.config --shell)" ||
    die "cannot read the defaults with '$PYTHON -m engine.config --shell' (is the environment installed? set PYTHON=...)"
eval "$DEFAULTS"            # MODEL PRETRAINED IMAGE_SIZE FEATURES BATCH_SIZE MVTEC_EPOCHS ...
CONFIG_PATH=""
FEW_SHOT_FEATURES=""        # empty: same as FEATURES
DEVICE=""
EXTRA_ARGS=()               # everything after a lone "--" goes to the python scripts
DRY_RUN=0

MODEL_FLAGS_HELP="model flags (released defaults):
  --model NAME             open_clip model name or the stem of --config_path [$MODEL]
  --pretrained TAG|FILE    pretrained tag, local weights file, or 'none' [$PRETRAINED]
  --config_path JSON       open_clip model-config JSON (its file stem is the model name)
  --image_size S           input size [$IMAGE_SIZE]
  --features_list N...     1-based stages, quoted or space separated [$FEATURES]
  --few_shot_features N... memory-bank stages [same as --features_list]
  --device DEV             cpu, cuda or cuda:N [cuda when available, else cpu]
  --batch_size B           images per backbone pass [$BATCH_SIZE]
  --dry_run                print the commands without running them
  -- ARGS...               pass ARGS unchanged to every python command"

# abspath PATH: PATH made absolute against the folder the script was started from.
abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$START_DIR/$1" ;;
    esac
}
START_DIR="$PWD"

# A --pretrained value is a path when it names a file or looks like one; a hub tag otherwise.
pretrained_arg() {
    case "$1" in
        */*|*.pt|*.pth|*.bin|*.safetensors) abspath "$1" ;;
        *) printf '%s\n' "$1" ;;
    esac
}

# parse_common "$@": consumes one shared flag (and its values) and sets CONSUMED to the count of
# words used; CONSUMED=0 when "$1" is not a shared flag.
parse_common() {
    CONSUMED=0
    local flag="$1"
    case "$flag" in
        --model|--pretrained|--config_path|--config-path|--image_size|--image-size|--device|\
        --batch_size|--batch-size)
            [[ $# -ge 2 ]] || die "$flag needs a value"
            case "$flag" in
                --model) MODEL="$2" ;;
                --pretrained) PRETRAINED="$(pretrained_arg "$2")" ;;
                --config_path|--config-path) CONFIG_PATH="$(abspath "$2")" ;;
                --image_size|--image-size) IMAGE_SIZE="$2" ;;
                --device) DEVICE="$2" ;;
                --batch_size|--batch-size) BATCH_SIZE="$2" ;;
            esac
            CONSUMED=2 ;;
        --features_list|--features-list|--few_shot_features|--few-shot-features)
            shift
            local vals=""
            while [[ $# -gt 0 && "$1" != -* ]]; do vals="$vals $1"; shift; CONSUMED=$((CONSUMED + 1)); done
            [[ -n "$vals" ]] || die "$flag needs at least one stage number"
            vals="$(echo $vals)"  # squeeze spaces (also splits a quoted "6 12 18 24")
            case "$flag" in
                --features_list|--features-list) FEATURES="$vals" ;;
                *) FEW_SHOT_FEATURES="$vals" ;;
            esac
            CONSUMED=$((CONSUMED + 1)) ;;
        --dry_run|--dry-run)
            DRY_RUN=1
            CONSUMED=1 ;;
        --)
            shift
            EXTRA_ARGS=("$@")
            CONSUMED=$(($# + 1)) ;;
    esac
}

# take_list "$@": the values after a list flag (until the next flag); sets LIST and CONSUMED.
take_list() {
    local flag="$1"
    shift
    LIST=""
    CONSUMED=1
    while [[ $# -gt 0 && "$1" != -* ]]; do LIST="$LIST $1"; shift; CONSUMED=$((CONSUMED + 1)); done
    LIST="$(echo $LIST)"
    [[ -n "$LIST" ]] || die "$flag needs at least one value"
}

need_value() { [[ $# -ge 2 ]] || die "$1 needs a value"; }

# model_args: the shared flags as words for train.py / test.py / predict.py (array MODEL_ARGS).
model_args() {
    MODEL_ARGS=(--model "$MODEL" --pretrained "$PRETRAINED" --image_size "$IMAGE_SIZE"
                --features_list $FEATURES --batch_size "$BATCH_SIZE")
    [[ -n "$CONFIG_PATH" ]] && MODEL_ARGS+=(--config_path "$CONFIG_PATH")
    [[ -n "$DEVICE" ]] && MODEL_ARGS+=(--device "$DEVICE")
    return 0
}

# run CMD...: echo the command, then run it from the repository root.
run() {
    echo "+ $*" >&2
    [[ "$DRY_RUN" == 1 ]] && return 0
    (cd "$REPO_ROOT" && "$@")
}

cd "$REPO_ROOT"
