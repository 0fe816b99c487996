"""Thresholds in predict.py: which file and flags win, mode warnings, and the >= rule.

An image whose score equals the image threshold is anomalous (``score >= threshold``) in
scores.csv, scores.json and the report, where it sits above the threshold's divider row.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import PredictConfig
from engine.thresholds import resolve_thresholds
from test_predict import BOTTLE, read_csv, run


def _file(tmp_path: Path, mode: str | None) -> Path:
    path = tmp_path / f"thr_{mode}.json"
    data = {"per_category": {"bottle": {"image": 0.7, "pixel": 1.5}}}
    if mode:
        data["mode"] = mode
    path.write_text(json.dumps(data))
    return path


def _resolve(path: Path | None, mode: str = "zero_shot", **flags) -> tuple[dict, list[str]]:
    cfg = PredictConfig(image_dir="x", object_name="bottle", checkpoint_path="x.pth",
                        thresholds=str(path) if path else None, **flags)
    warned: list[str] = []
    return resolve_thresholds(cfg, mode, lambda where, why: warned.append(why)), warned


def test_a_file_of_another_mode_is_warned_about(tmp_path):
    thr, warned = _resolve(_file(tmp_path, "few_shot"), "zero_shot")
    assert thr["image"] == 0.7 and thr["pixel"] == 1.5
    assert len(warned) == 1 and "few_shot" in warned[0] and "zero_shot" in warned[0]
    for same, mode in ((_file(tmp_path, "zero_shot"), "zero_shot"),
                       (_file(tmp_path, "few_shot"), "few_shot")):
        assert _resolve(same, mode)[1] == []


def test_flags_override_the_file(tmp_path):
    path = _file(tmp_path, "zero_shot")
    thr, _ = _resolve(path, image_threshold=0.25)
    assert (thr["image"], thr["pixel"]) == (0.25, 1.5)
    thr, _ = _resolve(path, pixel_threshold=3.0)
    assert (thr["image"], thr["pixel"]) == (0.7, 3.0)
    thr, _ = _resolve(None, image_threshold=0.5, pixel_threshold=2.5)
    assert (thr["image"], thr["pixel"], thr["source"]) == (0.5, 2.5, "command line")


def test_a_score_equal_to_the_threshold_is_anomalous(capsys, tmp_path):
    first = tmp_path / "first"
    code, _, err = run(capsys, BOTTLE / "test", first, "--recursive", "--no_heatmaps",
                       "--no_report")
    assert code == 0, err
    images = json.loads((first / "scores.json").read_text())["images"]
    scores = sorted(r["score"] for r in images)
    tie = scores[len(scores) // 2]
    tied = [r["path"] for r in images if r["score"] == tie]
    save = tmp_path / "second"
    code, _, err = run(capsys, BOTTLE / "test", save, "--recursive", "--no_heatmaps",
                       "--image_threshold", repr(tie))
    assert code == 0, err
    rows = read_csv(save / "scores.csv")
    result = json.loads((save / "scores.json").read_text())["images"]
    for row, rec in zip(rows, result):
        assert row["path"] == rec["path"]
        assert rec["anomalous"] == (rec["score"] >= tie)
        assert int(row["anomalous"]) == int(rec["anomalous"])
    assert all(r["anomalous"] for r in result if r["path"] in tied)
    assert sum(r["anomalous"] for r in result) == sum(s >= tie for s in scores)
    html = (save / "report.html").read_text()
    divider = html.index('<tr class="divider"')
    for r in result:
        at = html.index(f"<code>{r['path']}</code>")
        assert (at < divider) == r["anomalous"], r["path"]


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_a_non_finite_file_threshold_is_not_used(tmp_path, bad):
    path = tmp_path / "thr.json"
    path.write_text('{"per_category": {"bottle": {"image": %s, "pixel": 1.0}}}' % (
        "NaN" if bad == "nan" else "Infinity"))
    thr, warned = _resolve(path)
    assert thr["image"] is None and thr["pixel"] == 1.0
    assert any("image" in w for w in warned)


def test_a_file_of_the_other_mode_is_warned_about_either_way(tmp_path):
    _, warned = _resolve(_file(tmp_path, "zero_shot"), "few_shot")
    assert len(warned) == 1 and "zero_shot" in warned[0] and "few_shot" in warned[0]


@pytest.mark.parametrize("flag", ["image_threshold", "pixel_threshold"])
def test_a_flag_alone_says_it_came_from_the_command_line(flag):
    thr, _ = _resolve(None, **{flag: 0.5})
    assert thr[flag.split("_")[0]] == 0.5 and thr["source"] == "command line"


def test_a_missing_category_names_the_ones_there(tmp_path, capsys):
    from errors import DatasetError

    with pytest.raises(DatasetError, match=r"has no thresholds for 'bottle' \(it has: screw, "
                                           r"pcb1\); pass --threshold_category"):
        path = tmp_path / "thr.json"
        path.write_text(json.dumps({"per_category": {"screw": {"image": 1}, "pcb1": {}}}))
        _resolve(path)


@pytest.mark.parametrize("value", ['"high"', '[0.5]'])
def test_a_threshold_that_is_not_a_number_is_a_clear_error(tmp_path, value):
    from errors import DatasetError

    path = tmp_path / "thr.json"
    path.write_text('{"per_category": {"bottle": {"image": %s, "pixel": 1.0}}}' % value)
    with pytest.raises(DatasetError, match="image threshold of 'bottle' is not a number"):
        _resolve(path)
