"""What several commands share: the released constants, ``ModelConfig`` (the backbone flags
of every entry point) and the flag groups (mixins) that more than one command declares:
``PromptFlags`` (``--prompt_dir``), ``FewShotStageFlags`` (``--few_shot_features``, filled from
``--features_list``), ``ReferenceDirFlags`` (``--reference_dir``, ``--reference_recursive``) and
``ThresholdFlags`` (``--thresholds``, ``--threshold_category``, ``--image_threshold``,
``--pixel_threshold``).

A command's class lists its groups before ``ModelConfig`` (``class X(PromptFlags,
ModelConfig)``): the backbone flags come first in ``--help`` and ``config.json``, then the
groups', then the command's own.
"""
from __future__ import annotations

from dataclasses import dataclass

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
class PromptFlags:
    """``--prompt_dir``: test.py, train.py, predict.py, export.py, prompt_study.py, serve.py."""

    prompt_dir: str | None = opt(None, "folder with edited prompt files",
                                 default_text="the repository's prompts/", path=True)


@dataclass
class FewShotStageFlags:
    """``--few_shot_features``: the memory-bank stages, ``--features_list`` when not given."""

    few_shot_features: list[int] | None = opt(
        None, "1-based stages of the few-shot memory banks",
        default_text="the --features_list stages", minimum=1, range_text=STAGES)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.few_shot_features is None:
            self.few_shot_features = list(self.features_list)


@dataclass
class ReferenceDirFlags:
    """``--reference_dir``: every image of a folder forms the few-shot memory banks."""

    reference_dir: str | None = opt(None, "folder of normal images of the same object: all of "
                                    "them form the few-shot memory bank (few-shot mode)",
                                    path=True)
    reference_recursive: bool = opt(False, "also take reference images from sub-folders of "
                                    "--reference_dir")


@dataclass
class ThresholdFlags:
    """The image and pixel thresholds: a test.py ``thresholds.json`` entry, or given values."""

    thresholds: str | None = opt(None, "thresholds.json written by test.py: "
                                 "{'per_category': {cat: {'pixel', 'image'}}}", path=True)
    threshold_category: str | None = opt(None, "entry of --thresholds to use",
                                         default_text="--object_name")
    image_threshold: float | None = opt(None, "image-score threshold (overrides --thresholds)")
    pixel_threshold: float | None = opt(None, "anomaly-map threshold for masks (overrides "
                                        "--thresholds)")
