"""Image and pixel thresholds of predict.py: from a test.py ``thresholds.json`` and the flags."""
from __future__ import annotations

import math
from pathlib import Path

from errors import DatasetError
from utils.io import read_json

from .config import PredictConfig


def resolve_thresholds(cfg: PredictConfig, mode: str, warn) -> dict:
    """{"image": t | None, "pixel": t | None, "source": str} from the file and the flags."""
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
        for key in ("image", "pixel"):
            v = table[cat].get(key) if isinstance(table[cat], dict) else None
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
        if data.get("mode") and data["mode"] != mode:
            warn(str(path), f"thresholds come from a {data['mode']} run but this is {mode}: "
                            "scores are on a different scale, labels may be off")
    if cfg.image_threshold is not None:
        out["image"], out["source"] = cfg.image_threshold, out["source"] or "command line"
    if cfg.pixel_threshold is not None:
        out["pixel"], out["source"] = cfg.pixel_threshold, out["source"] or "command line"
    return out
