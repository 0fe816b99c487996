"""The settings of every entry point, each default stated once (STYLE 1).

``ModelConfig`` holds the flags train.py, test.py and predict.py share; ``EvalConfig``,
``TrainConfig`` and ``PredictConfig`` extend it. The command lines are generated from these
fields (``utils.cli``), the bash scripts read the same defaults through
``python -m engine.config --shell``, and the resolved config is written to ``config.json``
(and into every checkpoint). Defaults are the released settings (METHOD §9).

    python -m engine.config --shell     # MODEL=ViT-L-14-336 ... as bash assignments
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from datasets.categories import DATASETS
from errors import ConfigError
from utils.cli import Config, opt

# The paper's training epochs per dataset: 3 on MVTec AD (for VisA), 15 on VisA (for MVTec AD).
PAPER_EPOCHS = {"mvtec": 3, "folder": 3, "visa": 15}
# Training from normal images with synthesized anomalies (--train_split train, --train_image_dir):
# chosen on synthetic data of generator seeds 0-2 (scripts/benchmark_normal_only.py).
NORMAL_ONLY_EPOCHS = 10
# The released mosaic augmentation exists only for MVTec-layout data.
MOSAIC_DATASETS = ("mvtec", "folder")
# The paper's few-shot protocol (test_few_shot.sh): k in {1, 2, 4}, 5 seeds.
PAPER_K_SHOTS = (1, 2, 4)
PAPER_SEEDS = (1, 2, 3, 4, 5)
SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit
PROBABILITY = "a probability from 0 to 1 (0.2 for 20%)"
STAGES = "stage numbers from 1 to the backbone's depth (1-based: 24 is ViT-L-14-336's last)"
# what an ONNX graph of export.py carries: predict.py --onnx refuses these flags
ONNX_CARRIES = ("model", "pretrained", "config_path", "image_size", "features_list",
                "few_shot_features", "checkpoint_path", "prompt_dir")

M = "model"
N = "training on normal images only (synthesized anomalies)"
IMAGE_SCORES = ("released", "per_image", "both")
HEATMAP_SCALES = ("auto", "image")
CPU_LINEAR = ("blas", "onednn")  # --cpu_linear of test.py, prompt_study.py and predict.py
CPU_LINEAR_HELP = ("the CPU's fp32 linear layers of a ViT backbone: blas (torch's default, as "
                   "released) or onednn (weights packed once for oneDNN: the same numbers up to "
                   "float rounding, faster on some CPUs; scripts/benchmark_cpu_linear.py "
                   "measures yours)")


def check_device_name(flag: str, name: str | None, auto: bool = False) -> None:
    """ConfigError unless ``name`` looks like cpu, cuda, cuda:N (or auto); availability is
    checked when the device is used."""
    import re

    if name is None or (auto and name == "auto"):
        return
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps|xpu(:\d+)?", name):
        raise ConfigError(f"{flag} {name!r} is not a device name (use "
                          f"{'auto, ' if auto else ''}cpu, cuda or cuda:N)")


@dataclass
class ModelConfig(Config):
    """The backbone flags of the released scripts (METHOD §9), shared by all entry points."""

    model: str = opt("ViT-L-14-336", "open_clip model name, or the stem of --config_path", group=M)
    pretrained: str = opt("openai", "pretrained tag (from the cache or the hub), a local weights "
                          "file, or 'none' for random weights", group=M, metavar="TAG|FILE", path=True)
    config_path: str | None = opt(None, "open_clip model-config JSON; its file stem is the "
                                  "model name", group=M, path=True)
    image_size: int = opt(518, "input size S (a multiple of the ViT patch size)", minimum=1,
                          group=M)
    features_list: list[int] = opt([6, 12, 18, 24], "1-based stages whose tokens are projected",
                                   minimum=1, range_text=STAGES, group=M)
    device: str | None = opt(None, "cpu, cuda or cuda:N", default_text="cuda if available, "
                             "else cpu", group=M, metavar="DEV")
    batch_size: int = opt(8, "images per backbone pass", minimum=1, group=M)
    num_workers: int | None = opt(None, "data-loading worker processes", minimum=0,
                                  default_text="4 on a GPU, 0 on the CPU", group=M)
    debug: bool = opt(False, "show the full traceback of an error (for developers)")

    def loader_workers(self, device) -> int:
        """``--num_workers``, or its default: 4 on a GPU, 0 on the CPU."""
        return self.num_workers if self.num_workers is not None else (
            4 if device.type == "cuda" else 0)


@dataclass
class EvalConfig(ModelConfig):
    """Settings of one test.py run (saved as config.json)."""

    mode: str = opt("zero_shot", "evaluation mode", choices=("zero_shot", "few_shot"))
    dataset: str = opt("mvtec", "dataset layout", choices=DATASETS)
    data_path: str = opt("data/mvtec", "dataset root holding meta.json", path=True)
    save_path: str = opt("results/test", "output folder", path=True)
    checkpoint_path: str | None = opt(None, "projection weights (released format, e.g. "
                                      "mvtec_pretrained.pth)", required=True, path=True)
    few_shot_features: list[int] | None = opt(
        None, "1-based stages of the few-shot memory banks",
        default_text="the --features_list stages", minimum=1, range_text=STAGES)
    k_shot: list[int] = opt([10], "reference images per category; several values run in one "
                            "pass", minimum=1)
    seed: list[int] = opt([10], "seed(s) of the reference draw; several values run in one pass",
                          minimum=0, maximum=SEED_MAX)
    reference_list: str | None = opt(None, "JSON {category: [image paths relative to the data "
                                     "root]} used as the memory-bank images instead of a "
                                     "seeded draw (the format of references.json)", path=True)
    categories: list[str] | None = opt(None, "evaluate only these categories",
                                       default_text="all in meta.json")
    prompt_dir: str | None = opt(None, "folder with edited prompt files",
                                 default_text="the repository's prompts/", path=True)
    save_predictions: bool = opt(False, "write predictions.npz (paths, labels, scores, maps "
                                 "[N,S,S] float32)")
    visualize: bool = opt(False, "write heatmap overlays (slower)")
    no_mvtec_aupro: bool = opt(False, "skip the MVTec AD benchmark's AU-PRO (an extra column)")
    metric_workers: int = opt(0, "CPU processes computing metrics while the backbone runs on "
                              "(0: inline; not used when the metrics run on a GPU); each needs "
                              "about 2 GB for a 200-image category at 518 px", minimum=0)
    metrics_device: str = opt("auto", "where the exact metrics run: auto (the model's device), "
                              "cpu, cuda or cuda:N", metavar="DEV")
    image_score: str = opt("released", "few-shot image score: released (0.5 * (text + map "
                           "maximum min-max normalised over the category's test images), as in "
                           "the paper), per_image (0.5 * (text + the map maximum's rise above "
                           "the references' own level); depends on nothing but the image), or "
                           "both (metrics of both, side by side)", choices=IMAGE_SCORES)
    heatmap_scale: str = opt("auto", "colour scale of the overlays (--visualize, report.html): "
                             "auto (one per category and run: its pixel threshold at "
                             "mid-scale) or image (each map scaled to its own min-max, as "
                             "before)", choices=HEATMAP_SCALES)
    heatmap_max_side: int = opt(1024, "largest side of an overlay in pixels (drawn at the "
                                "image's resolution up to this)", minimum=64)
    no_report: bool = opt(False, "do not write report.html (tables, curves, galleries)")
    precision: str = opt("auto", "backbone precision: auto (fp16 autocast on CUDA, fp32 on the "
                         "CPU, as released), fp32, or bf16 (bf16 autocast on any device; "
                         "the head stays fp32)", choices=("auto", "fp32", "bf16"))
    cpu_linear: str = opt("blas", CPU_LINEAR_HELP, choices=CPU_LINEAR)
    feature_store: str | None = opt(None, "folder of stored backbone outputs of this dataset "
                                    "(shared with train.py --cache_features on the same data): "
                                    "stored test images skip the backbone, new ones are added",
                                    path=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.few_shot_features is None:
            self.few_shot_features = list(self.features_list)
        check_device_name("--metrics_device", self.metrics_device, auto=True)


@dataclass
class TrainConfig(ModelConfig):
    """Settings of one train.py run (saved as config.json and in every checkpoint)."""

    dataset: str = opt("mvtec", "dataset layout", choices=DATASETS)
    train_data_path: str = opt("data/mvtec", "dataset root holding meta.json; its test split "
                               "(all categories) is trained on, as released (or the "
                               "--train_split)", path=True)
    save_path: str = opt("exps/train", "output folder (checkpoints, log, config)", path=True)
    aug_rate: float = opt(0.2, "probability of the 2x2 mosaic per sample (MVTec layout only; "
                          "ignored for visa, as released)", minimum=0.0, maximum=1.0,
                          range_text=PROBABILITY)
    epoch: int | None = opt(None, "total epochs", minimum=1,
                            default_text="3 for mvtec/folder, 15 for visa, as in the paper; "
                            f"{NORMAL_ONLY_EPOCHS} with --train_split train or --train_image_dir")
    learning_rate: float = opt(1e-3, "Adam learning rate", minimum=0.0)
    print_freq: int = opt(1, "log the mean loss every N epochs", minimum=1)
    save_freq: int = opt(1, "write epoch_N.pth every N epochs (and after the last)", minimum=1)
    seed: int = opt(111, "seed of the model init, shuffling and mosaics", minimum=0,
                    maximum=SEED_MAX)
    init_checkpoint: str | None = opt(None, "start from these projection weights (released "
                                      "format) with a fresh optimizer", path=True)
    resume: str | None = opt(None, "continue a run from its epoch_N.pth (weights, optimizer, "
                             "epoch) to --epoch in total", path=True)
    cache_features: str | None = opt(None, "folder caching the frozen backbone's outputs of "
                                     "non-augmented samples across epochs and runs (mosaics and "
                                     "synthesized samples always go through the backbone)",
                                     path=True)
    categories: list[str] | None = opt(None, "train on these categories only",
                                       default_text="all in meta.json")
    prompt_dir: str | None = opt(None, "folder with edited prompt files",
                                 default_text="the repository's prompts/", path=True)
    synthesize_anomalies: float = opt(
        0.0, "probability P per sample and epoch of a synthesized defect (DRAEM/CutPaste-style, "
        "exact mask) on its image, for training without defect masks; 0 is off (as released). "
        "Synthesized samples go through the backbone every time (not cached)", minimum=0.0,
        maximum=1.0, range_text=PROBABILITY, group=N)
    train_split: str = opt("test", "split of meta.json trained on: test (labelled defects, as "
                           "released) or train (normal images, e.g. MVTec train/good, VisA's "
                           "train rows; needs --synthesize_anomalies)", choices=("test", "train"),
                           group=N)
    train_image_dir: str | None = opt(None, "train on every readable image of this folder "
                                      "(normal images; no meta.json or --dataset needed) instead "
                                      "of --train_data_path; needs --object_name and "
                                      "--synthesize_anomalies", group=N, path=True)
    object_name: str | None = opt(None, "object word of --train_image_dir used in the prompts, "
                                  "e.g. screw (prompts/overrides.json applies)", group=N)
    recursive: bool = opt(False, "also take images from sub-folders of --train_image_dir",
                          group=N)
    texture_dir: str | None = opt(None, "folder of any images used as textures of the "
                                  "synthesized defects", default_text="textures from the image "
                                  "itself and procedural ones", group=N, path=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_checkpoint and self.resume:
            raise ConfigError("--init_checkpoint and --resume exclude each other (--resume "
                              "restores the weights)")
        self._check_normal_only()
        if self.epoch is None:
            normal_only = self.train_split == "train" or self.train_image_dir
            self.epoch = NORMAL_ONLY_EPOCHS if normal_only else PAPER_EPOCHS[self.dataset]

    def _check_normal_only(self) -> None:
        """ConfigError for flag combinations of normal-only training that cannot work."""
        synth = self.synthesize_anomalies > 0
        if self.train_image_dir:
            if not self.object_name:
                raise ConfigError("--train_image_dir needs --object_name (the object word of "
                                  "the prompts, e.g. --object_name screw)")
            if self.train_split != "test":
                raise ConfigError("--train_split and --train_image_dir exclude each other "
                                  "(--train_image_dir trains on the folder's images)")
            if self.categories:
                raise ConfigError("--categories selects meta.json categories; with "
                                  "--train_image_dir the one category is --object_name")
            if not synth:
                raise ConfigError("--train_image_dir holds normal images only: pass "
                                  "--synthesize_anomalies P (e.g. 0.5), otherwise every mask is "
                                  "empty and the projections only learn to predict 'normal'")
        elif self.object_name or self.recursive:
            raise ConfigError(f"--{'object_name' if self.object_name else 'recursive'} is for "
                              "--train_image_dir only (meta.json names the categories)")
        if self.texture_dir and not synth:
            raise ConfigError("--texture_dir is used by --synthesize_anomalies only; pass "
                              "--synthesize_anomalies P (> 0) or drop --texture_dir")


@dataclass
class PredictConfig(ModelConfig):
    """Settings of one predict.py run (saved as config.json)."""

    image_dir: str | None = opt(None, "folder of images to score (every file in it is tried)",
                                required=True, path=True)
    object_name: str | None = opt(None, "object word used in the prompts, e.g. screw, pcb1 "
                                  "(prompts/overrides.json applies); with --onnx: the file's "
                                  "object when not given", default_text="required")
    save_path: str = opt("results/predict", "output folder", path=True)
    checkpoint_path: str | None = opt(None, "projection weights (released format, e.g. "
                                      "visa_pretrained.pth)", default_text="required unless "
                                      "--onnx", path=True)
    onnx: str | None = opt(None, "score with this exported model (export.py) and onnxruntime "
                           "instead of torch; needs no checkpoint or model flags (its sidecar "
                           "JSON carries them)", path=True)
    runtime: str = opt("onnxruntime", "with --onnx: onnxruntime (CUDA when present, else CPU) or "
                       "openvino (CPU; often faster there)", choices=("onnxruntime", "openvino"))
    precision: str = opt("auto", "auto (torch: fp16 autocast on CUDA, fp32 on the CPU, as "
                         "released; --onnx: fp32), fp32, or bf16 (torch: the backbone under "
                         "bf16 autocast; --onnx: --runtime openvino where the CPU supports it)",
                         choices=("auto", "fp32", "bf16"))
    cpu_linear: str = opt("blas", CPU_LINEAR_HELP, choices=CPU_LINEAR)
    few_shot_features: list[int] | None = opt(
        None, "1-based stages of the few-shot memory banks",
        default_text="the --features_list stages", minimum=1, range_text=STAGES)
    reference_dir: str | None = opt(None, "folder of normal images of the same object: all of "
                                    "them form the few-shot memory bank (few-shot mode)",
                                    path=True)
    reference_recursive: bool = opt(False, "also take reference images from sub-folders of "
                                    "--reference_dir")
    image_score: str = opt("per_image", "few-shot image score: per_image (0.5 * (text + the map "
                           "maximum's rise above the references' own level): depends on the "
                           "image alone) or released (map maximum min-max normalised over the "
                           "scored folder, as the paper's test.py)",
                           choices=("per_image", "released"))
    thresholds: str | None = opt(None, "thresholds.json written by test.py: "
                                 "{'per_category': {cat: {'pixel', 'image'}}}", path=True)
    threshold_category: str | None = opt(None, "entry of --thresholds to use",
                                         default_text="--object_name")
    image_threshold: float | None = opt(None, "image-score threshold (overrides --thresholds)")
    pixel_threshold: float | None = opt(None, "anomaly-map threshold for masks (overrides "
                                        "--thresholds)")
    calibration_dir: str | None = opt(
        None, "folder of normal images of the object (not the references): the image and pixel "
        "thresholds are set so that at most --target_fpr of them (of their pixels) score at or "
        "above; written to thresholds.json and applied", path=True)
    target_fpr: float = opt(0.01, "false-alarm rate allowed on the --calibration_dir images "
                            "(a fraction, e.g. 0.01)", minimum=1e-9, maximum=0.999999,
                            range_text="a fraction above 0 and below 1 (0.01 for 1%)")
    min_region_area: int = opt(0, "regions.csv and masks: drop connected regions smaller than "
                               "this many pixels (0: keep all)", minimum=0)
    prompt_dir: str | None = opt(None, "folder with edited prompt files",
                                 default_text="the repository's prompts/", path=True)
    recursive: bool = opt(False, "also score images in sub-folders of --image_dir")
    no_heatmaps: bool = opt(False, "skip the heatmap overlays (faster)")
    heatmap_scale: str = opt("auto", "colour scale of the heatmaps: auto (one fixed scale for "
                             "the run: the pixel threshold at mid-scale, else the references' "
                             "map peak at mid-scale, else the map's range) or image (each map "
                             "scaled to its own min-max, as before)", choices=HEATMAP_SCALES)
    heatmap_max_side: int = opt(1024, "largest side of a heatmap in pixels (drawn at the "
                                "image's resolution up to this)", minimum=64)
    save_maps: bool = opt(False, "also write maps.npz (paths, anomaly_maps [N,S,S])")
    maps_dtype: str = opt("float16", "dtype of the maps in maps.npz", choices=("float16", "float32"))
    no_report: bool = opt(False, "do not write report.html (saves about 6 kB per image)")
    report_max_images: int = opt(2000, "images shown in report.html (the highest-scored; all "
                                 "are in scores.csv)", minimum=1)
    resume: bool = opt(False, "continue an interrupted run into the same --save_path: the "
                       "images it scored are skipped")
    restart: bool = opt(False, "discard an interrupted run's scored images in --save_path and "
                        "start again (without --resume or --restart such a run is refused)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.few_shot_features is None:
            self.few_shot_features = list(self.features_list)
        if not self.onnx and not self.checkpoint_path:
            raise ConfigError("--checkpoint_path is required (the projection weights), unless "
                              "you score with --onnx FILE")
        if not self.onnx and not self.object_name:
            raise ConfigError("--object_name is required (the word put into the prompts)")
        if self.resume and self.restart:
            raise ConfigError("--resume and --restart exclude each other (--resume continues "
                              "the interrupted run, --restart discards it)")
        check_apart(self.image_dir, self.save_path)
        if self.runtime != "onnxruntime" and not self.onnx:
            raise ConfigError("--runtime applies to --onnx FILE (an exported graph)")
        if self.onnx and self.cpu_linear != "blas":
            raise ConfigError("--cpu_linear applies to the torch path, not to --onnx FILE")
        if self.onnx and self.precision == "bf16" and self.runtime != "openvino":
            raise ConfigError("--precision bf16 with --onnx needs --runtime openvino "
                              "(onnxruntime runs the fp32 graph)")
        if self.onnx and self.reference_dir:
            raise ConfigError("--reference_dir and --onnx exclude each other: the memory bank is "
                              "baked into the ONNX file (export.py --reference_dir)")
        if self.calibration_dir:
            given = [f for f in ("thresholds", "image_threshold", "pixel_threshold")
                     if getattr(self, f) is not None]
            if given:
                raise ConfigError(f"--calibration_dir sets the thresholds; drop --{given[0]} (or "
                                  "drop --calibration_dir to use it)")

    def check_given(self, given: set[str]) -> None:
        """With ``--onnx`` the graph carries its model: model and checkpoint flags are refused
        (they would be ignored)."""
        typed = [f"--{n}" for n in ONNX_CARRIES if n in given]
        if self.onnx and typed:
            raise ConfigError(f"--onnx {self.onnx} carries its model (backbone, size, stages, "
                              f"projections, prompts): drop {', '.join(typed)}, or export a graph "
                              "with those settings (export.py)")


def check_apart(image_dir: str | None, save_path: str | None) -> None:
    """ConfigError when predict.py's --save_path is --image_dir or holds it: the results would
    lie among the images (a --save_path inside --image_dir is fine: its files are never
    scored)."""
    if not image_dir or not save_path:
        return
    images, save = Path(image_dir).expanduser().resolve(), Path(save_path).expanduser().resolve()
    if images == save:
        raise ConfigError(f"--save_path {save_path} is --image_dir: the results would be written "
                          "among your images; pass another folder, e.g. --save_path "
                          f"{images.parent / (images.name + '_scored')}")
    if save in images.parents:
        raise ConfigError(f"--image_dir {image_dir} is inside --save_path {save_path}: the "
                          "results folder is never scored; pass a --save_path outside it")


def shell_defaults() -> str:
    """The defaults the bash scripts use, as ``NAME=value`` lines (one source: these classes)."""
    m, t = ModelConfig(), TrainConfig
    values = {
        "MODEL": m.model, "PRETRAINED": m.pretrained, "IMAGE_SIZE": m.image_size,
        "FEATURES": " ".join(map(str, m.features_list)), "BATCH_SIZE": m.batch_size,
        "MVTEC_EPOCHS": PAPER_EPOCHS["mvtec"], "VISA_EPOCHS": PAPER_EPOCHS["visa"],
        "AUG_RATE": _field_default(t, "aug_rate"), "LEARNING_RATE": _field_default(t, "learning_rate"),
        "K_SHOTS": " ".join(map(str, PAPER_K_SHOTS)), "SEEDS": " ".join(map(str, PAPER_SEEDS)),
    }
    return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in values.items())


def _field_default(cls: type, name: str):
    return cls.__dataclass_fields__[name].default


if __name__ == "__main__":
    if sys.argv[1:] != ["--shell"]:
        sys.exit("usage: python -m engine.config --shell")
    sys.stdout.write(shell_defaults())
