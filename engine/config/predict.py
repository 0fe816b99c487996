"""The settings of predict.py (``PredictConfig``), which serve.py's extend."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from errors import ConfigError
from utils.cli import opt

from engine.config.flags import (
    CPU_LINEAR,
    CPU_LINEAR_HELP,
    HEATMAP_SCALES,
    ONNX_CARRIES,
    FewShotStageFlags,
    ModelConfig,
    PromptFlags,
    ReferenceDirFlags,
    ThresholdFlags,
)


@dataclass
class PredictConfig(ThresholdFlags, ReferenceDirFlags, FewShotStageFlags,
                    PromptFlags, ModelConfig):
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
    image_score: str = opt("per_image", "few-shot image score: per_image (0.5 * (text + the map "
                           "maximum's rise above the references' own level): depends on the "
                           "image alone) or released (map maximum min-max normalised over the "
                           "scored folder, as the paper's test.py)",
                           choices=("per_image", "released"))
    calibration_dir: str | None = opt(
        None, "folder of normal images of the object (not the references): the image and pixel "
        "thresholds are set so that at most --target_fpr of them (of their pixels) score at or "
        "above; written to thresholds.json and applied", path=True)
    target_fpr: float = opt(0.01, "false-alarm rate allowed on the --calibration_dir images "
                            "(a fraction, e.g. 0.01)", minimum=1e-9, maximum=0.999999,
                            range_text="a fraction above 0 and below 1 (0.01 for 1%)")
    min_region_area: int = opt(0, "regions.csv and masks: drop connected regions smaller than "
                               "this many pixels (0: keep all)", minimum=0)
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
