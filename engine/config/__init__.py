"""The settings of every entry point, each default stated once.

``ModelConfig`` holds the backbone flags every entry point shares, and the flag groups several
commands declare are written once as mixins (``flags``); ``EvalConfig`` and ``StudyConfig``
(``evaluate``), ``TrainConfig`` (``training``), ``PredictConfig`` (``predict``), ``ExportConfig``
(``deploy``) and ``ServeConfig`` (``serve``) extend it. The command lines are generated from these
fields (``utils.cli``), the bash scripts read the same defaults through
``python -m engine.config --shell``, and the resolved config is written to ``config.json``
(and into every checkpoint). Defaults are the released settings (METHOD §9).

    python -m engine.config --shell     # MODEL=ViT-L-14-336 ... as bash assignments
"""
from __future__ import annotations

import shlex

from engine.config.deploy import DEFAULT_OPSET, EXPORTERS, ExportConfig
from engine.config.evaluate import EvalConfig, StudyConfig
from engine.config.flags import (
    CPU_LINEAR,
    CPU_LINEAR_HELP,
    HEATMAP_SCALES,
    IMAGE_SCORES,
    MOSAIC_DATASETS,
    NORMAL_ONLY_EPOCHS,
    ONNX_CARRIES,
    PAPER_EPOCHS,
    PAPER_K_SHOTS,
    PAPER_SEEDS,
    PROBABILITY,
    SEED_MAX,
    STAGES,
    FewShotStageFlags,
    ModelConfig,
    PromptFlags,
    ReferenceDirFlags,
    ThresholdFlags,
    check_device_name,
)
from engine.config.predict import PredictConfig, check_apart
from engine.config.serve import API_KEY_ENV, ServeConfig
from engine.config.training import TrainConfig

__all__ = ["API_KEY_ENV", "CPU_LINEAR", "CPU_LINEAR_HELP", "DEFAULT_OPSET", "EXPORTERS",
           "HEATMAP_SCALES", "IMAGE_SCORES", "MOSAIC_DATASETS", "NORMAL_ONLY_EPOCHS",
           "ONNX_CARRIES", "PAPER_EPOCHS", "PAPER_K_SHOTS", "PAPER_SEEDS", "PROBABILITY",
           "SEED_MAX", "STAGES", "EvalConfig", "ExportConfig", "FewShotStageFlags",
           "ModelConfig", "PredictConfig", "PromptFlags", "ReferenceDirFlags", "ServeConfig",
           "StudyConfig", "ThresholdFlags", "TrainConfig", "check_apart", "check_device_name",
           "shell_defaults"]


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
