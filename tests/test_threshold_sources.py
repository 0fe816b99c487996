"""Where predict.py's thresholds come from (a thresholds.json entry, a flag over it, a flag
alone) and the one-line errors of a bad entry: hand-made files, no model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from errors import DatasetError

from engine.config import PredictConfig
from engine.core.thresholds import definition, resolve_thresholds


def _resolve(path: Path | None, **flags) -> tuple[dict, list[str]]:
    cfg = PredictConfig(image_dir="x", object_name="bottle", checkpoint_path="x.pth",
                        thresholds=str(path) if path else None, **flags)
    warned: list[str] = []
    run = definition("zero_shot", "per_image", "tiny-vit", 84, [2, 4], [2, 4], None)
    return resolve_thresholds(cfg, run, lambda where, why: warned.append(why)), warned


def _thresholds_file(tmp_path: Path, entry: str) -> Path:
    path = tmp_path / "thresholds.json"
    path.write_text('{"mode": "zero_shot", "per_category": {"bottle": %s}}' % entry)
    return path


@pytest.mark.parametrize("flag", ["image_threshold", "pixel_threshold"])
def test_a_flag_alone_names_the_command_line_as_the_source(flag):
    """The source is recorded in scores.json and the ONNX sidecar (which drops thresholds
    that have no source)."""
    thr, warned = _resolve(None, **{flag: 0.5})
    key = flag.split("_")[0]
    assert thr[key] == 0.5 and thr["source"] == "command line" and warned == []
    assert thr["image" if key == "pixel" else "pixel"] is None


@pytest.mark.parametrize("flag", ["image_threshold", "pixel_threshold"])
def test_a_flag_over_a_file_keeps_the_file_as_the_source(tmp_path, flag):
    path = _thresholds_file(tmp_path, '{"image": 0.7, "pixel": 1.5}')
    thr, _ = _resolve(path, **{flag: 0.25})
    assert thr["source"] == f"{path.resolve()} [bottle]"
    want = (0.25, 1.5) if flag == "image_threshold" else (0.7, 0.25)
    assert (thr["image"], thr["pixel"]) == want


@pytest.mark.parametrize("value", ['"high"', "[0.5]", "{}"])
def test_a_threshold_that_is_not_a_number_is_a_clear_error(tmp_path, value):
    """float("high") raises ValueError, float([0.5]) TypeError: both are a DatasetError that
    names the category and the value, not a traceback."""
    path = _thresholds_file(tmp_path, '{"image": %s, "pixel": 1.0}' % value)
    with pytest.raises(DatasetError, match=r"image threshold of 'bottle' is not a number"):
        _resolve(path)


@pytest.mark.parametrize("table, listed", [({"screw": {"image": 1}, "pcb1": {}}, "screw, pcb1"),
                                           ({}, "none")])
def test_a_missing_category_lists_the_ones_the_file_has(tmp_path, table, listed):
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"per_category": table}))
    with pytest.raises(DatasetError) as e:
        _resolve(path)
    assert (f"has no thresholds for 'bottle' (it has: {listed}); pass --threshold_category"
            in str(e.value))
