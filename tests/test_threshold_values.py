"""Thresholds checks on values as they arrive: strings parsed from a command line or read from
JSON (equal to the code's literals, other objects), large reference counts, a hand-written file
that records its mode alone, a precision mistyped.

Each expected outcome is the documented one (engine/core/thresholds.py's docstring), worked by hand.
"""
from __future__ import annotations

import json

import pytest

from errors import ConfigError

from engine.config import PredictConfig
from engine.core.thresholds import definition, effective_precision, resolve_thresholds


def _parsed(text: str) -> str:
    """``text`` as a string object of its own, as a parser gives it (not the interned literal)."""
    return json.loads(json.dumps(text))


def _resolve(tmp_path, data: dict, run: dict) -> tuple[dict, list[str]]:
    path = tmp_path / "thr.json"
    path.write_text(json.dumps({**data, "per_category": {"bottle": {"image": 0.7,
                                                                    "pixel": 1.5}}}))
    cfg = PredictConfig(image_dir="x", object_name="bottle", checkpoint_path="x.pth",
                        thresholds=str(path))
    warned: list[str] = []
    return resolve_thresholds(cfg, run, lambda where, why: warned.append(why)), warned


def test_parsed_strings_give_what_literals_give():
    assert effective_precision(_parsed("auto"), _parsed("cuda")) == "fp16"
    assert effective_precision(_parsed("auto"), "cpu") == "fp32"
    few = definition(_parsed("few_shot"), "per_image", "m", 84, [2], [4], 3)
    assert (few["image_score"], few["few_shot_features"], few["k_shot"]) == ("per_image", [4], 3)


@pytest.mark.parametrize("typo", ["amp", "fp64", "AUTO"])
def test_a_mistyped_precision_is_refused(typo):
    with pytest.raises(ConfigError, match=f"unknown precision '{typo}'"):
        effective_precision(typo, "cpu")


def test_a_parsed_per_image_run_is_told_its_own_fix(tmp_path):
    run = definition("few_shot", _parsed("per_image"), "m", 84, [2], [2], 2)
    released = definition("few_shot", "released", "m", 84, [2], [2], 2)
    with pytest.raises(ConfigError, match=r"this run uses per_image: rerun test.py with "
                                          r"--image_score per_image \(or both\)"):
        _resolve(tmp_path, released, run)


def test_the_same_large_k_does_not_warn(tmp_path):
    """k = 1000 references on both sides (ints above the small ones Python shares)."""
    k = int("1000")
    thr, warned = _resolve(tmp_path, definition("few_shot", "per_image", "m", 84, [2], [2], k),
                           definition("few_shot", "per_image", "m", 84, [2], [2], int("1000")))
    assert (thr["image"], warned) == (0.7, [])


def test_a_file_that_records_only_its_mode_is_taken(tmp_path):
    """{"mode": "zero_shot"} and the table (a hand-written file): checked for the mode, taken,
    no warning (it says nothing else to check)."""
    thr, warned = _resolve(tmp_path, {"mode": "zero_shot"},
                           definition("zero_shot", "per_image", "m", 84, [2], [2], None))
    assert (thr["image"], thr["pixel"], warned) == (0.7, 1.5, [])
