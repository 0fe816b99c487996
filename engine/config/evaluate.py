"""The settings of test.py (``EvalConfig``) and of prompt_study.py (``StudyConfig``, test.py's
flags plus the study's own)."""
from __future__ import annotations

from dataclasses import dataclass

from datasets.sets import DATASETS
from errors import ConfigError
from metrics import METRIC_KEYS
from utils.cli import opt

from engine.config.flags import (
    CPU_LINEAR,
    CPU_LINEAR_HELP,
    HEATMAP_SCALES,
    IMAGE_SCORES,
    SEED_MAX,
    FewShotStageFlags,
    ModelConfig,
    PromptFlags,
    check_device_name,
)


@dataclass
class EvalConfig(FewShotStageFlags, PromptFlags, ModelConfig):
    """Settings of one test.py run (saved as config.json)."""

    mode: str = opt("zero_shot", "evaluation mode", choices=("zero_shot", "few_shot"))
    dataset: str = opt("mvtec", "dataset layout", choices=DATASETS)
    data_path: str = opt("data/mvtec", "dataset root holding meta.json", path=True)
    save_path: str = opt("results/test", "output folder", path=True)
    checkpoint_path: str | None = opt(None, "projection weights (released format, e.g. "
                                      "mvtec_pretrained.pth)", required=True, path=True)
    k_shot: list[int] = opt([10], "reference images per category; several values run in one "
                            "pass", minimum=1)
    seed: list[int] = opt([10], "seed(s) of the reference draw; several values run in one pass",
                          minimum=0, maximum=SEED_MAX)
    reference_list: str | None = opt(None, "JSON {category: [image paths relative to the data "
                                     "root]} used as the memory-bank images instead of a "
                                     "seeded draw (the format of references.json)", path=True)
    categories: list[str] | None = opt(None, "evaluate only these categories",
                                       default_text="all in meta.json")
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
        check_device_name("--metrics_device", self.metrics_device, auto=True)


@dataclass
class StudyConfig(EvalConfig):
    """Settings of one prompt_study.py run (saved as config.json)."""

    save_path: str = opt("results/prompt_study", "output folder", path=True)
    variants: list[str] = opt([], "prompt folders to compare with the baseline (the prompts/ "
                              "format; each named by its folder)", path=True)
    ablate: list[str] = opt([], "automatic variants of the baseline: leave one state out "
                            "(states) or one template out (templates)",
                            choices=("states", "templates"))
    rank_by: str = opt("auroc_px+auroc_sp", "metric(s) of the mean row that rank the variants "
                       "(several joined by '+': their mean)")
    write_best: str | None = opt(None, "write the best-ranked variant here as a ready "
                                 "--prompt_dir folder", path=True)
    # test.py flags a study has no use for
    save_predictions: bool = opt(False, "", cli=False)
    visualize: bool = opt(False, "", cli=False)
    metric_workers: int = opt(0, "", cli=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [k for k in self.rank_by.split("+") if k not in METRIC_KEYS]
        if bad or not self.rank_by:
            raise ConfigError(f"--rank_by {self.rank_by!r}: use metrics of "
                              f"{', '.join(METRIC_KEYS)}, joined by '+'")
        if self.mode == "few_shot" and (len(self.k_shot) > 1 or len(self.seed) > 1):
            raise ConfigError("prompt_study.py runs one few-shot setting: pass one --k_shot and "
                              "one --seed")
