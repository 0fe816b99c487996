"""Image and pixel thresholds: read from a ``thresholds.json`` and the flags, checked against
the run that uses them.

A threshold only means something for the score it was fitted on. Every ``thresholds.json``
(test.py, ``predict.py --calibration_dir``) records its *definition*: ``mode`` (zero_shot or
few_shot), ``image_score`` (what its ``image`` threshold thresholds: ``released`` or
``per_image`` in few-shot; the text score in zero-shot), ``model``, ``image_size``,
``features_list``, ``few_shot_features``, few-shot ``k_shot`` (references per category) and
``precision`` (what the backbone computed at: fp32, fp16 or bf16; see ``effective_precision``).
A file fitted for another mode, model, image size, stages or few-shot score is refused with one
line naming both sides and the fix; another k or another precision only gets a warning (the
map's normal level moves a little with the number of references; bf16 moves the scores by about
5e-4 and the maps by about 0.05: fit thresholds at the precision you score with). Files written
before these fields existed are used with a warning that they cannot be checked (a file without
``precision`` is not checked for it).
"""
from __future__ import annotations

import math
from pathlib import Path

from errors import ConfigError, DatasetError
from utils.io import read_json

DEFINITION_KEYS = ("mode", "image_score", "model", "image_size", "features_list",
                   "few_shot_features", "k_shot", "precision")
PRECISIONS = ("fp32", "fp16", "bf16")


def effective_precision(precision: str, device_type: str, onnx: bool = False) -> str:
    """What ``--precision`` computes at: ``auto`` is fp16 (autocast) for torch on CUDA and fp32
    everywhere else (the CPU, and an exported graph: ``--onnx``); fp32 and bf16 are themselves."""
    if precision == "auto":
        return "fp16" if device_type == "cuda" and not onnx else "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r} (use one of auto, "
                          f"{', '.join(PRECISIONS)})")
    return precision


def model_name(model: str, config_path: str | None) -> str:
    """The model's name as recorded: the config file's stem when one is given."""
    return Path(config_path).stem if config_path else model


def definition(mode: str, image_score: str, model: str, image_size: int,
               features_list, few_shot_features, k_shot: int | None,
               precision: str = "fp32") -> dict:
    """What a threshold is a threshold *of* (the keys of ``DEFINITION_KEYS``).

    ``image_score``: ``released`` or ``per_image`` in few-shot; ``text`` in zero-shot (the image
    score is then the text score whatever ``--image_score`` says). ``precision``: an
    ``effective_precision`` (fp32, fp16 or bf16).
    """
    few = mode == "few_shot"
    return {"mode": mode, "image_score": image_score if few else "text", "model": model,
            "image_size": int(image_size), "features_list": [int(s) for s in features_list],
            "few_shot_features": [int(s) for s in few_shot_features] if few else [],
            "k_shot": int(k_shot) if few and k_shot is not None else None,
            "precision": precision}


def check_precision(fitted: str | None, run: str | None, path: str, warn) -> None:
    """Warn when thresholds fitted at one precision score a run at another (either unknown:
    nothing to check)."""
    if fitted and run and fitted != run:
        warn(path, f"fitted at {fitted}; this run computes at {run}: its scores and maps differ "
                   f"a little from those the thresholds were fitted on (bf16 against fp32: "
                   f"about 5e-4 on the image score); fit thresholds at {run} to remove this")


def _stages(d: dict) -> str:
    """``2 4`` or, with memory-bank stages (few-shot), ``2 4, memory-bank stages 4``."""
    few = d.get("few_shot_features")
    return " ".join(map(str, d.get("features_list") or [])) + (
        f", memory-bank stages {' '.join(map(str, few))}" if few else "")


def image_key(data: dict, run: dict, path: str, warn, has_per_image: bool = False) -> str:
    """The ``per_category`` key holding the image threshold of ``run``'s score, after checking
    the file's definition; ConfigError (one line, both sides, the fix) when it does not fit.
    ``has_per_image``: the entry also holds ``image_per_image`` (test.py --image_score both)."""
    fitted = data.get("mode")
    if fitted is None:
        warn(path, "records no mode, model or score definition (an older file): it cannot be "
                   "checked against this run")
    elif fitted != run["mode"]:
        raise ConfigError(
            f"{path} was fitted on a {fitted} run; this run is {run['mode']}: fit thresholds "
            f"for {run['mode']} (test.py --mode {run['mode']}, or predict.py --calibration_dir) "
            f"or score {'with' if fitted == 'few_shot' else 'without'} --reference_dir")
    if "model" in data or "image_size" in data:
        keys = ("model", "image_size", "features_list", "few_shot_features")
        if any(data.get(k) is not None and data[k] != run.get(k) for k in keys):
            raise ConfigError(
                f"{path} was fitted for {data.get('model')} at {data.get('image_size')} px, "
                f"stages {_stages(data)}; this run uses {run['model']} at {run['image_size']} px, "
                f"stages {_stages(run)}: maps and scores of other models, sizes or stages are on "
                "other scales; fit thresholds with this model, size and stages")
    if fitted is not None:
        check_precision(data.get("precision"), run.get("precision"), path, warn)
    if run["mode"] != "few_shot" or fitted is None:
        return "image"
    k = data.get("k_shot")
    if k is not None and run.get("k_shot") is not None and int(k) != int(run["k_shot"]):
        warn(path, f"fitted with {k} reference images per category; this run has "
                   f"{run['k_shot']}: the map's normal level differs a little")
    score, used = data.get("image_score") or "released", run["image_score"]
    if score == used:
        return "image"
    if used == "per_image" and has_per_image:
        return "image_per_image"
    fix = ("rerun test.py with --image_score per_image (or both)" if used == "per_image"
           else "rerun test.py with --image_score released (or both)")
    other = "" if run.get("score_fixed") else f" or pass --image_score {score}"
    raise ConfigError(f"{path} was fitted on the {score} few-shot score; this run uses {used}: "
                      f"{fix}{other}")


def resolve_thresholds(cfg, run: dict, warn) -> dict:
    """{"image": t | None, "pixel": t | None, "source": str} from ``cfg.thresholds`` (checked
    against ``run``, a ``definition``) and ``--image_threshold`` / ``--pixel_threshold``."""
    out: dict = {"image": None, "pixel": None, "source": None}
    if cfg.thresholds:
        path = Path(cfg.thresholds)
        data = read_json(path, "thresholds file", hint="write it with test.py")
        table = data.get("per_category")
        if not isinstance(table, dict):
            raise DatasetError(f"{path} has no 'per_category' table (write it with test.py)")
        cat = cfg.threshold_category or cfg.object_name
        if cat not in table:
            raise DatasetError(f"{path} has no thresholds for {cat!r} (it has: "
                               f"{', '.join(table) or 'none'}); pass --threshold_category")
        entry = table[cat] if isinstance(table[cat], dict) else {}
        keys = {"image": image_key(data, run, str(path), warn, "image_per_image" in entry),
                "pixel": "pixel"}
        for key, name in keys.items():
            v = entry.get(name)
            try:
                ok = v is not None and math.isfinite(float(v))
            except (TypeError, ValueError) as e:
                raise DatasetError(f"{path}: the {key} threshold of {cat!r} is not a number: "
                                   f"{v!r}") from e
            if ok:
                out[key] = float(v)
            else:
                warn(str(path), f"no finite {key} threshold for {cat!r}; not used")
        out["source"] = f"{path.resolve()} [{cat}]"
        if data.get("precision") in PRECISIONS:  # kept with them (an export's sidecar too)
            out["precision"] = data["precision"]
        if data.get("source") == "calibration" and isinstance(data.get("calibration"), dict):
            out["calibration"] = data["calibration"]
    if cfg.image_threshold is not None:
        out["image"], out["source"] = cfg.image_threshold, out["source"] or "command line"
    if cfg.pixel_threshold is not None:
        out["pixel"], out["source"] = cfg.pixel_threshold, out["source"] or "command line"
    return out
