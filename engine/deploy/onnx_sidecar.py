"""The sidecar of an exported APRIL-GAN graph: its format, written and read in this one place.

``engine.deploy.export`` writes a sidecar with ``sidecar``; ``engine.deploy.onnx_runtime`` reads it with
``read_sidecar``. Neither imports the other: both import the names and version from here.

Sidecar ``FILE.onnx.json`` (``format`` "aprilgan-onnx", ``format_version`` 1; ``sidecar``):
    export_id        matches the ONNX metadata ``aprilgan.export_id`` (a stale sidecar is refused)
    onnx_file, object_name, mode ("zero_shot" | "few_shot"), image_size S
    input            {"name": "images", "shape": ["batch", 3, S, S], "dtype": "float32"}
    outputs          {name: shape} of image_score, anomaly_map, text_score, map_max
    preprocessing    size [S, S], resize "squash", interpolation "bicubic", center_crop S,
                     color "RGB", scale "1/255", mean, std (OpenAI), layout "CHW"
    features_list, few_shot_features ([] zero-shot)
    map              formula, range [0, #features + 2 * #few_shot_features]
    score            name ("text" | "per_image"), formula, text_score formula, normal_level mu
    references       {dir, files, count, recursive} or null
    thresholds       {image, pixel, source} or null
    model            {name, pretrained, config_path, embed_dim, kind}; checkpoint {path, sha256}
    prompts, opset, exporter, verification {max_abs_diff per output, batch}, created, versions
"""
from __future__ import annotations

import os
import platform
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datasets.normalization import OPENAI_MEAN, OPENAI_STD
from errors import ModelLoadError
from models.formulas import MAP_FEW_SHOT, MAP_ZERO_SHOT, PER_IMAGE_SCORE, TEXT_SCORE
from utils.io import file_digest, read_json

SIDECAR_FORMAT = "aprilgan-onnx"
SIDECAR_VERSION = 1
INPUT = "images"
OUTPUTS = ("image_score", "anomaly_map", "text_score", "map_max")
# key -> type every sidecar must hold
REQUIRED = {"format": str, "format_version": int, "object_name": str, "mode": str,
            "image_size": int, "preprocessing": dict, "score": dict, "features_list": list}


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """``FILE.onnx`` -> ``FILE.onnx.json``."""
    return Path(str(onnx_path) + ".json")


# --------------------------------------------------------------------------- writing
def sidecar(job, export_id: str, verification: dict | None) -> dict:
    """The sidecar dict of an ``engine.deploy.export.ExportJob`` (the format: this module's docstring)."""

    cfg, s = job.cfg, int(job.cfg.image_size)
    few = job.mode == "few_shot"
    fs = list(job.model.few_shot_features) if few else []
    n_zero, n_few = len(cfg.features_list), len(fs)
    absolute = lambda p: str(Path(p).expanduser().resolve()) if p else None  # noqa: E731
    pretrained = cfg.pretrained if not Path(cfg.pretrained).expanduser().is_file() else \
        absolute(cfg.pretrained)
    return {
        "format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION, "export_id": export_id,
        "onnx_file": Path(cfg.output).name, "object_name": cfg.object_name, "mode": job.mode,
        "image_size": s,
        "input": {"name": INPUT, "shape": ["batch", 3, s, s], "dtype": "float32"},
        "outputs": {n: ["batch", s, s] if n == "anomaly_map" else ["batch"] for n in OUTPUTS},
        "preprocessing": {"size": [s, s], "resize": "squash", "interpolation": "bicubic",
                          "center_crop": s, "color": "RGB", "scale": "1/255",
                          "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "layout": "CHW",
                          "same_as": "datasets.transforms.image_transform"},
        "features_list": list(cfg.features_list), "few_shot_features": fs,
        "map": {"formula": MAP_ZERO_SHOT + (MAP_FEW_SHOT if few else ""),
            "range": [0.0, float(n_zero + 2 * n_few)]},
        "score": {"name": "per_image" if few else "text",
                  "formula": PER_IMAGE_SCORE if few else TEXT_SCORE,
                  "text_score": TEXT_SCORE, "normal_level": job.mu},
        "references": ({"dir": absolute(cfg.reference_dir), "files": list(job.refs),
                        "count": len(job.refs), "recursive": cfg.reference_recursive}
                       if few else None),
        "thresholds": job.thresholds if job.thresholds.get("source") else None,
        "model": {"name": Path(cfg.config_path).stem if cfg.config_path else cfg.model,
                  "pretrained": pretrained, "config_path": absolute(cfg.config_path),
                  "embed_dim": int(job.model.backbone.embed_dim),
                  "kind": job.model.backbone.kind},
        "checkpoint": {"path": absolute(cfg.checkpoint_path),
                       "sha256": file_digest(cfg.checkpoint_path)},
        "prompts": {"dir": absolute(cfg.prompt_dir), "object_name": cfg.object_name},
        "opset": int(cfg.opset), "exporter": cfg.exporter,
        "verification": {"max_abs_diff": verification, "batch": 2} if verification else None,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    """Versions of the packages that made (and run) the graph."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "open_clip_torch", "onnx", "onnxscript", "onnxruntime", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------- reading
def read_sidecar(onnx_path: str | Path) -> dict:
    """The sidecar of ``onnx_path``, checked; ModelLoadError when missing or broken."""
    path = sidecar_path(onnx_path)
    hint = "export.py writes it beside the ONNX file; keep the two together"
    meta = read_json(path, "ONNX sidecar", error=ModelLoadError, hint=hint)
    if meta.get("format") != SIDECAR_FORMAT:
        raise ModelLoadError(f"ONNX sidecar {path} is not an export.py sidecar (format "
                             f"{meta.get('format')!r}, expected {SIDECAR_FORMAT!r}); {hint}")
    for key, tp in REQUIRED.items():
        if not isinstance(meta.get(key), tp) or isinstance(meta.get(key), bool):
            raise ModelLoadError(f"ONNX sidecar {path} is broken: {key!r} missing or not a "
                                 f"{tp.__name__}; export again")
    if meta["format_version"] > SIDECAR_VERSION:
        raise ModelLoadError(f"ONNX sidecar {path} has format version {meta['format_version']}; "
                             f"this code reads up to {SIDECAR_VERSION}: update the code")
    if meta["mode"] not in ("zero_shot", "few_shot"):
        raise ModelLoadError(f"ONNX sidecar {path} is broken: mode {meta['mode']!r}")
    pre = meta["preprocessing"]
    if pre.get("resize") != "squash" or not _close(pre.get("mean"), OPENAI_MEAN) or \
            not _close(pre.get("std"), OPENAI_STD):
        raise ModelLoadError(f"ONNX sidecar {path} asks for a preprocessing this runtime does "
                             f"not implement (resize {pre.get('resize')!r}, mean "
                             f"{pre.get('mean')}, std {pre.get('std')})")
    return meta


def _close(values: Any, expected: Sequence[float]) -> bool:
    try:
        return len(values) == len(expected) and np.allclose(values, expected, rtol=0, atol=1e-7)
    except TypeError:
        return False
