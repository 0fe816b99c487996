"""Zero-shot evaluation reproduces the released code on both ViT golden fixtures (METHOD §4, §7, §9).

test.py runs once per dataset (module-scoped fixture) with --save_predictions; the tests then
compare predictions.npz and metrics.json with the fixture, image by image (matched by img_path),
and check the other result files.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import DATASET_NAMES, VIT, aligned, compare_metrics, load_predictions, require, run_test_main

MAP_TOL = 1e-4
SCORE_TOL = 5e-6
METRIC_TOL = 1e-4
PRO_TOL = 5e-4
METRIC_KEYS = ("auroc_px", "f1_px", "ap_px", "pro", "auroc_sp", "f1_sp", "ap_sp")


@pytest.fixture(scope="module", params=DATASET_NAMES)
def zero_shot_run(request, tmp_path_factory):
    ds = request.param
    require(VIT.expected_npz(ds), VIT.expected_metrics(ds), VIT.data(ds) / "meta.json")
    save = tmp_path_factory.mktemp(f"zs_{ds}")
    code = run_test_main(VIT.args(ds, save, "zero_shot", "--save_predictions"))
    assert code == 0
    return ds, save


def test_predictions_match_golden(zero_shot_run):
    ds, save = zero_shot_run
    ours = load_predictions(save / "predictions.npz")
    exp = load_predictions(VIT.expected_npz(ds))
    assert ours["anomaly_maps"].dtype == np.float32
    assert ours["anomaly_maps"].shape == exp["anomaly_maps"].shape
    maps, emaps = aligned(ours, exp, "anomaly_maps")
    np.testing.assert_allclose(maps, emaps, rtol=0, atol=MAP_TOL)
    assert maps.min() >= 0 and maps.max() <= len(VIT.stages)  # sum of per-stage probabilities
    score, escore = aligned(ours, exp, "pr_sp")
    assert ours["pr_sp"].dtype == np.float64
    np.testing.assert_allclose(score, escore, rtol=0, atol=SCORE_TOL)
    gt, egt = aligned(ours, exp, "gt_sp")
    np.testing.assert_array_equal(gt, egt)
    cls, ecls = aligned(ours, exp, "cls_names")
    np.testing.assert_array_equal(cls, ecls)


def test_metrics_match_golden(zero_shot_run):
    ds, save = zero_shot_run
    compare_metrics(save / "metrics.json", VIT.expected_metrics(ds), METRIC_TOL, PRO_TOL)


def test_result_files(zero_shot_run):
    ds, save = zero_shot_run
    for name in ("metrics.json", "metrics.md", "metrics.csv", "thresholds.json", "config.json",
                 "predictions.npz"):
        assert (save / name).is_file(), name
    assert not (save / "references.json").exists()  # zero-shot uses no reference images
    assert not list(save.glob(".*.tmp"))
    metrics = json.loads((save / "metrics.json").read_text())
    cats = list(dict.fromkeys(load_predictions(VIT.expected_npz(ds))["cls_names"].tolist()))
    assert list(metrics["per_category"]) == cats
    for table in (*metrics["per_category"].values(), metrics["mean"]):
        for k in METRIC_KEYS:
            assert 0.0 <= table[k] <= 1.0, (k, table[k])
    for k in METRIC_KEYS:  # the mean row is the plain mean over categories
        assert metrics["mean"][k] == pytest.approx(
            np.mean([metrics["per_category"][c][k] for c in cats]), abs=1e-12)
    md = (save / "metrics.md").read_text()
    header = next(l for l in md.splitlines() if l.startswith("|"))
    assert [h.strip() for h in header.strip("|").split("|")][1:] == list(METRIC_KEYS)
    assert any(l.startswith("| mean") for l in md.splitlines())
    rows = list(csv.reader((save / "metrics.csv").open()))
    assert rows[0] == ["objects", *METRIC_KEYS]
    assert [r[0] for r in rows[1:]] == [*cats, "mean"]
    # percent with one decimal
    assert rows[-1][1] == f"{100 * metrics['mean']['auroc_px']:.1f}"
    thresholds = json.loads((save / "thresholds.json").read_text())
    assert set(thresholds["per_category"]) == set(cats)
    config = json.loads((save / "config.json").read_text())
    assert config["mode"] == "zero_shot" and config["dataset"] == ds
    assert config["features_list"] == VIT.stages
    assert config["image_size"] == VIT.image_size(ds)
