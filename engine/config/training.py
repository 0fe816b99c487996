"""The settings of train.py (``TrainConfig``)."""
from __future__ import annotations

from dataclasses import dataclass

from datasets.sets import DATASETS
from errors import ConfigError
from utils.cli import opt

from engine.config.flags import NORMAL_ONLY_EPOCHS, PAPER_EPOCHS, PROBABILITY, SEED_MAX, ModelConfig, N, PromptFlags


@dataclass
class TrainConfig(PromptFlags, ModelConfig):
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
