"""Tests for the metrics package: hand-worked cases, slow references, golden values."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from skimage import measure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from metrics import (
    METRIC_KEYS,
    auroc,
    average_precision,
    category_metrics,
    f1_max,
    f1_max_threshold,
    format_table,
    mean_metrics,
    mvtec_aupro,
    pro,
    pro_reference,
    table_rows,
    vand_summary,
)
from metrics.pro import _count_below, _thresholds

ROOT = Path(__file__).resolve().parents[1]

GOLDEN = (
    Path(os.environ["APRILGAN_GOLDEN"]) / "expected"
    if os.environ.get("APRILGAN_GOLDEN")
    else Path(__file__).parent / "fixtures" / "golden" / "expected"
)
OTHER = "OTHER_DEFINITION_mvtec_standard_aupro_fpr0.3_exact"


def _golden(name: str) -> Path:
    path = GOLDEN / name
    if not path.exists():
        pytest.skip(f"golden file {path} missing")
    return path


# ---------------------------------------------------------------- classification
def test_hand_worked_four_samples():
    y, s = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    assert auroc(y, s) == pytest.approx(0.75)  # pairs won: 3 of 4
    assert average_precision(y, s) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # sum dR * P
    f1, thr = f1_max_threshold(y, s)
    assert f1 == pytest.approx(0.8)  # P = 2/3, R = 1 at score >= 0.35
    assert thr == pytest.approx(0.35)
    assert f1_max(y, s) == f1
    # Tie between a positive and a negative counts 1/2.
    assert auroc([0, 1, 1, 0], [0.5, 0.5, 0.9, 0.1]) == pytest.approx(0.875)


def test_classification_equals_sklearn_on_random_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 2, (3, 17, 19)).astype(np.uint8)
        s = np.round(rng.normal(size=y.shape) + y, 1).astype(np.float32)
        assert auroc(y, s) == roc_auc_score(y.ravel(), s.ravel())
        assert average_precision(y, s) == average_precision_score(y.ravel(), s.ravel())
        p, r, t = precision_recall_curve(y.ravel(), s.ravel())
        f1 = 2 * p * r / (p + r)
        f, thr = f1_max_threshold(y, s)
        assert f == np.max(f1[np.isfinite(f1)])
        pred = s.ravel() >= thr  # the threshold reproduces the best F1
        tp = np.sum(pred & (y.ravel() == 1))
        assert 2 * tp / (pred.sum() + y.sum()) == pytest.approx(f)


def test_single_class_gives_nan_and_warning():
    for fn in (auroc, average_precision, f1_max):
        with pytest.warns(RuntimeWarning, match="only one class"):
            assert math.isnan(fn([0, 0, 0], [0.1, 0.2, 0.3]))


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        ([0, 1], [0.1, 0.2, 0.3], "shape mismatch"),
        ([0, 2], [0.1, 0.2], "binary"),
        ([], [], "empty"),
        ([0, 1], [0.1, np.nan], "NaN"),
    ],
)
def test_classification_input_errors(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        auroc(np.array(labels), np.array(scores))


# ------------------------------------------------------------------------ pro
def _hand_case() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((1, 4, 4), np.uint8)
    mask[0, :2, :2] = 1  # one 4-pixel region, 12 normal pixels
    amap = np.zeros((1, 4, 4), np.float32)
    amap[0, 0, :2], amap[0, 1, 0], amap[0, 1, 1] = 1.0, 0.4, 0.1  # region
    amap[0, 3, 2:], amap[0, 2, 3] = 0.6, 0.2  # normal
    return mask, amap


def test_pro_hand_worked():
    # th < .1: (fpr 3/12, pro 1); .1-.2: (3/12, .75); .2-.4: (2/12, .75); .4-.6: (2/12, .5);
    # >= .6: (0, .5). FPR rescaled by 1/4 -> 1, 1, 2/3, 2/3, 0: area .75/3 + .5*2/3 = 7/12.
    mask, amap = _hand_case()
    assert pro(mask, amap) == pytest.approx(7 / 12, abs=1e-12)
    assert pro_reference(mask, amap) == pytest.approx(7 / 12, abs=1e-12)


def test_pro_eight_connectivity():
    mask = np.zeros((1, 4, 4), np.uint8)
    mask[0, 0, 0] = mask[0, 0, 1] = mask[0, 1, 0] = 1  # L-shape of 3 pixels
    mask[0, 2, 1] = 1  # touches (1, 0) only at a corner
    assert measure.label(mask[0], connectivity=1).max() == 2
    amap = np.zeros((1, 4, 4), np.float32)
    amap[0, 2, 1], amap[0, 3, 3] = 1.0, 0.5  # the corner pixel is found; one noisy normal pixel
    # One 4-pixel region with 1 pixel found -> PRO 1/4 at every threshold (4-conn would give 1/2).
    assert pro(mask, amap) == pytest.approx(0.25, abs=1e-12)
    assert pro_reference(mask, amap) == pytest.approx(0.25, abs=1e-12)


def _random_case(rng: np.random.Generator, n: int, size: int, ties: bool):
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        for _ in range(rng.integers(0, 4)):
            y, x, h, w = rng.integers(0, size - 2), rng.integers(0, size - 2), *rng.integers(1, 6, 2)
            masks[i, y : y + h, x : x + w] = 1
        if rng.random() < 0.5:  # two squares touching at a corner
            masks[i, 1:3, 1:3] = 1
            masks[i, 3:5, 3:5] = 1
    maps = (rng.normal(size=masks.shape) + 1.5 * masks * rng.random()).astype(np.float32)
    if ties:
        maps = np.round(maps * 4) / 4
    return masks, maps.astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_fast_pro_equals_reference(seed):
    rng = np.random.default_rng(seed)
    masks, maps = _random_case(rng, n=3, size=12, ties=seed % 2 == 0)
    if not masks.any():
        masks[0, 0, 0] = 1
    ref = pro_reference(masks, maps)
    assert pro(masks, maps) == pytest.approx(ref, abs=1e-12)
    assert pro(masks, maps) == ref  # bit for bit


def test_fast_pro_with_values_on_the_threshold_grid():
    rng = np.random.default_rng(7)
    masks, maps = _random_case(rng, n=3, size=12, ties=False)
    th = _thresholds(maps, 200)
    grid = np.append(th, maps.max())
    maps = grid[rng.integers(0, grid.size, maps.shape)].astype(np.float32)  # exact ties with th
    maps.flat[0], maps.flat[1] = th[0], grid[-1]  # same min and max, so the same grid
    assert np.array_equal(_thresholds(maps, 200), th)
    assert pro(masks, maps) == pytest.approx(pro_reference(masks, maps), abs=1e-12)
    k = _count_below(th, maps.ravel())
    assert np.array_equal(k, np.searchsorted(th, maps.ravel(), side="left"))


def test_count_below_fallback_for_coarse_float_grid():
    values = (1000 + np.random.default_rng(1).random(500) * 1e-3).astype(np.float32)
    th = _thresholds(values[None, None], 200)  # grid step below float32 resolution: duplicates
    assert np.array_equal(_count_below(th, values), np.searchsorted(th, values, side="left"))
    # A non-uniform grid with duplicates: most guesses are wrong and get redone exactly.
    rng = np.random.default_rng(2)
    th = np.sort(np.round(rng.random(50) ** 3, 2)).astype(np.float32)
    values = np.concatenate([th, rng.random(1000).astype(np.float32), [-1, 2]]).astype(np.float32)
    assert np.array_equal(_count_below(th, values), np.searchsorted(th, values, side="left"))


def test_pro_edge_cases():
    mask, amap = _hand_case()
    with pytest.warns(RuntimeWarning, match="no anomalous"):
        assert math.isnan(pro(np.zeros_like(mask), amap))
    with pytest.warns(RuntimeWarning, match="constant"):
        assert math.isnan(pro(mask, np.ones_like(amap)))
    high = np.where(mask == 1, 0.0, 1.0).astype(np.float32)  # every normal pixel at the max
    for fn in (pro, pro_reference):
        with pytest.warns(RuntimeWarning, match="FPR < 0.3"):
            assert math.isnan(fn(mask, high))


@pytest.mark.parametrize(
    "masks, maps, match",
    [
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 5)), "shape mismatch"),
        (np.full((1, 2, 2), 255), np.zeros((1, 2, 2)), "binary"),
        (np.zeros((0, 4, 4)), np.zeros((0, 4, 4)), "empty"),
        (np.zeros((4, 4)), np.zeros((4, 4)), r"\[N, H, W\]"),
    ],
)
def test_pro_input_errors(masks, maps, match):
    with pytest.raises(ValueError, match=match):
        pro(masks, maps)


# ---------------------------------------------------------------- mvtec_aupro
def _mvtec_aupro_naive(masks, maps, limit):
    """The MVTec AD evaluation code (compute_pro + trapezoid), full sort, float64."""
    fp_w, pro_w, n_ok, n_reg = np.zeros(masks.shape), np.zeros(masks.shape), 0, 0
    for i, m in enumerate(masks):
        lab = measure.label(m, connectivity=2)
        n_reg += lab.max()
        n_ok += np.sum(lab == 0)
        fp_w[i][lab == 0] = 1
        for r in range(1, lab.max() + 1):
            pro_w[i][lab == r] = 1.0 / np.sum(lab == r)
    order = np.argsort(maps.ravel())[::-1]
    s = maps.ravel()[order]
    fprs = np.cumsum(fp_w.ravel()[order]) / n_ok
    pros = np.cumsum(pro_w.ravel()[order]) / n_reg
    keep = np.append(np.diff(s) != 0, True)
    x = np.concatenate(([0.0], np.minimum(fprs[keep], 1), [1.0]))
    y = np.concatenate(([0.0], np.minimum(pros[keep], 1), [1.0]))
    corr = 0.0
    if limit not in x:
        i = np.searchsorted(x, limit, side="right")
        yi = y[i - 1] + (y[i] - y[i - 1]) * (limit - x[i - 1]) / (x[i] - x[i - 1])
        corr = 0.5 * (yi + y[i - 1]) * (limit - x[i - 1])
    m = x <= limit
    return (np.sum(0.5 * (y[m][1:] + y[m][:-1]) * np.diff(x[m])) + corr) / limit


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_mvtec_aupro_equals_naive(seed, limit):
    masks, maps = _random_case(np.random.default_rng(seed), n=4, size=16, ties=seed % 2 == 0)
    masks[0, 5:8, 5:8] = 1
    assert mvtec_aupro(masks, maps, limit) == pytest.approx(
        _mvtec_aupro_naive(masks, maps, limit), abs=1e-12
    )


# ------------------------------------------------------------------ golden
def test_golden_metrics_cases():
    arrays = np.load(_golden("metrics_cases.npz"))
    cases = json.loads(_golden("metrics_cases.json").read_text())["cases"]
    assert cases
    for name, ref in cases.items():
        gt_px, pr_px, gt_sp, pr_sp = (arrays[f"{name}_{k}"] for k in ("gt_px", "pr_px", "gt_sp", "pr_sp"))
        got = category_metrics(gt_px, pr_px, gt_sp, pr_sp)
        for key in ("auroc_px", "f1_px", "ap_px", "auroc_sp", "f1_sp", "ap_sp"):
            assert got[key] == pytest.approx(ref[key], abs=1e-6), (name, key)
        assert got["pro"] == pytest.approx(ref["aupro"], abs=1e-6), name
        assert got["mvtec_aupro"] == pytest.approx(ref[OTHER], abs=1e-6), name
        assert pro_reference(gt_px, pr_px) == pytest.approx(ref["aupro"], abs=1e-6), name
        labels = [measure.label(m, connectivity=c).max() for c in (2, 1) for m in gt_px]
        assert sum(labels[: len(gt_px)]) == ref["n_regions_8conn"]
        assert sum(labels[len(gt_px) :]) == ref["n_regions_4conn"]


@pytest.mark.parametrize(
    "run", ["mvtec_zero_shot", "visa_zero_shot", "mvtec_few_shot_k2", "visa_few_shot_k2"]
)
def test_golden_category_tables(run):
    data = np.load(_golden(f"{run}.npz"))
    ref = json.loads(_golden(f"{run}_metrics.json").read_text())["metrics"]
    pr_sp = data["pr_sp_fewshot_combined"] if "few_shot" in run else data["pr_sp"]
    per = {}
    for cat in dict.fromkeys(data["cls_names"].tolist()):
        idx = data["cls_names"] == cat
        per[cat] = category_metrics(data["gt_masks"][idx], data["anomaly_maps"][idx],
                                    data["gt_sp"][idx], pr_sp[idx], with_mvtec_aupro=False)
    for cat, values in [*per.items(), ("mean", mean_metrics(per))]:
        for key, expected in ref[cat].items():
            assert values["pro" if key == "aupro" else key] == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------ reports
PER = {
    "bottle": dict(zip(METRIC_KEYS, [0.98765, 0.5, 0.25, 0.9, 1.0, 0.8, 0.75]), threshold_px=0.3),
    "grid": dict(zip(METRIC_KEYS, [0.5, 0.25, 0.125, float("nan"), 0.0, 0.4, 0.5])),
}


def test_mean_metrics_skips_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="'pro'.*grid"):
        mean = mean_metrics(PER)
    assert mean["auroc_px"] == pytest.approx((0.98765 + 0.5) / 2)
    assert mean["pro"] == pytest.approx(0.9)
    assert "threshold_px" not in mean


def test_vand_summary():
    out = vand_summary(PER)
    assert out["per_category"]["bottle"] == pytest.approx(2 * 0.8 * 0.5 / 1.3)
    assert out["per_category"]["grid"] == pytest.approx(2 * 0.4 * 0.25 / 0.65)
    assert out["mean"] == pytest.approx(np.mean(list(out["per_category"].values())))


def test_format_table_and_rows():
    mean = {k: 0.5 for k in METRIC_KEYS} | {"pro": float("nan")}
    lines = format_table(PER, mean).splitlines()
    assert lines[0].split("|")[1].strip() == "objects"
    assert [c.strip() for c in lines[0].split("|")[2:-1]] == list(METRIC_KEYS)
    assert len(lines) == 2 + len(PER) + 1
    bottle = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert bottle == ["bottle", "98.8", "50.0", "25.0", "90.0", "100.0", "80.0", "75.0"]
    assert [c.strip() for c in lines[3].split("|")[1:-1]][4] == "–"  # undefined
    assert lines[-1].split("|")[1].strip() == "mean"
    assert [c.strip() for c in lines[-1].split("|")[2:-1]][3] == "–"
    rows = table_rows(PER, mean)
    assert rows[0] == ["objects", *METRIC_KEYS]
    assert rows[1][1] == pytest.approx(98.765) and rows[-1][0] == "mean"


def test_category_metrics_keys_and_errors():
    mask, amap = _hand_case()
    masks, maps = np.concatenate([mask, 0 * mask]), np.concatenate([amap, amap / 2])
    out = category_metrics(masks, maps, np.array([1, 0]), np.array([0.9, 0.2]))
    assert list(out)[: len(METRIC_KEYS)] == list(METRIC_KEYS)
    assert {"mvtec_aupro", "threshold_px", "threshold_sp"} <= set(out)
    assert out["threshold_sp"] == 0.9 and out["f1_sp"] == 1.0
    with pytest.raises(ValueError, match="image labels"):
        category_metrics(masks, maps, np.array([1]), np.array([0.9]))


def test_single_sort_curves_equal_sklearn():
    """AUROC, AP and F1-max come from one sort; they must equal scikit-learn's own functions,
    with many ties (quantised scores) and without."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    from metrics.classification import classification_metrics

    rng = np.random.default_rng(7)
    checked = 0
    for t in range(200):
        n = int(rng.integers(2, 300))
        y = rng.random(n) < rng.random()
        if y.all() or not y.any():
            continue
        s = (rng.integers(0, int(rng.integers(1, 12)), n) if t % 2 else rng.random(n)).astype(np.float32)
        m = classification_metrics(y, s)
        p, r, th = precision_recall_curve(y, s)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = 2 * p * r / (p + r)
        best = int(np.argmax(np.where(np.isfinite(f), f, -np.inf)))
        assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert m["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert m["f1"] == pytest.approx(f[best], abs=1e-12)
        assert m["threshold"] == th[best]
        checked += 1
    assert checked > 100
