"""Hand-worked cases on every back-end, connected regions reused across runs, the curves for the
report, the back-end choice and peak memory."""

from __future__ import annotations

import math
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from skimage import measure
from sklearn.metrics import precision_recall_curve, roc_curve
from test_metrics import _hand_case, _random_case
from test_metrics_backends import BACKENDS, CASES, _image_level, _run, _same

from metrics import category_metrics, category_metrics_and_curves, mask_regions, mvtec_aupro, pro
from metrics.backend import NumpyOps, TorchOps, get_ops
from metrics.category import pixel_metrics
from metrics.curves import (
    RankCounts,
    _downsample,
    _precision_recall,
    auc,
    auc_kept,
    mvtec_aupro_from_counts,
    rank_curves,
    rank_metrics,
    trapezoid_to,
)


def _ranking(labels, scores, be) -> dict[str, float]:
    masks, maps = np.asarray(labels)[None, None], np.asarray(scores, np.float32)[None, None]
    return pixel_metrics(masks, maps, pro_steps=None, aupro_limit=None, device=be[0], backend=be[1])[0]


@pytest.mark.parametrize("be", BACKENDS)
def test_hand_worked_on_every_backend(be):
    m = _ranking([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], be)
    assert m["auroc"] == 0.75  # pairs won: 3 of 4
    assert m["ap"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, rel=1e-15)  # sum dR * P
    assert m["f1"] == pytest.approx(0.8, rel=1e-15)  # P = 2/3, R = 1 at score >= 0.35
    assert m["threshold"] == float(np.float32(0.35))
    assert _ranking([0, 1, 1, 0], [0.5, 0.5, 0.9, 0.1], be)["auroc"] == 0.875  # a tie counts 1/2
    mask, amap = _hand_case()  # PRO worked out in test_metrics.test_pro_hand_worked
    assert pro(mask, amap, device=be[0], backend=be[1]) == pytest.approx(7 / 12, abs=1e-12)
    corner = np.zeros((1, 4, 4), np.uint8)
    corner[0, 0, :2] = corner[0, 1, 0] = corner[0, 2, 1] = 1  # one 8-connected region of 4 pixels
    amap = np.zeros((1, 4, 4), np.float32)
    amap[0, 2, 1], amap[0, 3, 3] = 1.0, 0.5
    assert pro(corner, amap, device=be[0], backend=be[1]) == pytest.approx(0.25, abs=1e-12)


def test_mask_regions_equal_whole_image_labels():
    rng = np.random.default_rng(3)
    masks, _ = _random_case(rng, n=6, size=20, ties=False)
    masks[2] = 0  # an image without regions
    regions = mask_regions(masks)
    ids, areas, offset = [], [], 0
    for m in masks:
        lab = measure.label(m, connectivity=2)  # (H, W), whole image
        ids.append(lab[m == 1] - 1 + offset)
        areas.append(np.bincount(lab.ravel())[1:])
        offset += lab.max()
    np.testing.assert_array_equal(regions.region_of_pixel, np.concatenate(ids))
    np.testing.assert_array_equal(regions.area, np.concatenate(areas))
    assert regions.n_regions == offset and regions.shape == masks.shape
    np.testing.assert_array_equal(mask_regions(torch.from_numpy(masks)).area, regions.area)


@pytest.mark.parametrize("be", BACKENDS)
def test_regions_computed_once_and_reused(be):
    masks, maps = CASES["ties_f32"]
    gt_sp, pr_sp = _image_level(masks, maps)
    regions = mask_regions(masks)
    rng = np.random.default_rng(4)
    for run in range(3):  # runs sharing the masks, as the few-shot runs of a category
        run_maps = (maps + rng.normal(0, 0.1, maps.shape)).astype(np.float32)
        got = category_metrics(masks, run_maps, gt_sp, pr_sp, device=be[0], backend=be[1], regions=regions)
        assert _same(got, category_metrics(masks, run_maps, gt_sp, pr_sp)), run
    assert mvtec_aupro(masks, maps, regions=regions, device=be[0], backend=be[1]) == mvtec_aupro(masks, maps)
    other = masks.copy()
    other[1, 0, 0] = 1 - other[1, 0, 0]
    with pytest.raises(ValueError, match="regions were computed from other masks"):
        pro(other, maps, regions=regions, device=be[0], backend=be[1])


def _points(*xy) -> set[tuple[float, float]]:
    return set(zip(*(np.asarray(a).tolist() for a in xy), strict=True))


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("case", ["ties_f32", "plain_f32", "int_maps"])
def test_full_curves_lie_on_sklearn_curves(case, be):
    values, curves = _run(case, be, max_points=10**9)
    masks, maps = CASES[case]
    for level, (y, s) in {"pixel": (masks, maps), "image": _image_level(masks, maps)}.items():
        key = "px" if level == "pixel" else "sp"
        fpr, tpr = curves[level]["roc"]
        assert np.trapezoid(tpr, fpr) == pytest.approx(values[f"auroc_{key}"], abs=1e-12)
        sk_fpr, sk_tpr, _ = roc_curve(y.ravel(), s.ravel(), drop_intermediate=False)
        assert _points(fpr, tpr) <= _points(sk_fpr, sk_tpr) | {(1.0, 1.0)}
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
        precision, recall = curves[level]["pr"]
        sk_p, sk_r, _ = precision_recall_curve(y.ravel(), s.ravel())
        assert _points(precision, recall) <= _points(sk_p, sk_r)
        assert (precision[-1], recall[-1]) == (1.0, 0.0) and recall[0] == 1.0
        r, p, thr = curves[level]["f1_point"]
        assert 2 * p * r / (p + r) == pytest.approx(values[f"f1_{key}"], rel=1e-15)
        assert thr == values[f"threshold_{key}"]


@pytest.mark.parametrize("be", BACKENDS)
def test_downsampled_curves_keep_ends_and_f1_point(be):
    rng = np.random.default_rng(5)
    masks = (rng.random((4, 32, 32)) < 0.3).astype(np.uint8)
    maps = (rng.normal(size=masks.shape) + masks).astype(np.float32)
    gt_sp, pr_sp = np.array([1, 1, 0, 0]), np.array([0.9, 0.3, 0.4, 0.1])
    full = _curves(masks, maps, gt_sp, pr_sp, be, 10**9)
    small = _curves(masks, maps, gt_sp, pr_sp, be, 50)
    assert full["roc"][0].size > 500
    for name in ("roc", "pr"):
        x, y = small[name]
        assert x.size <= 50
        fx, fy = full[name]
        assert (x[0], y[0], x[-1], y[-1]) == (fx[0], fy[0], fx[-1], fy[-1])
        assert _points(x, y) <= _points(fx, fy)
    r, p, _ = small["f1_point"]
    assert (p, r) in _points(*small["pr"])


def _curves(masks, maps, gt_sp, pr_sp, be, max_points):
    return category_metrics_and_curves(
        masks, maps, gt_sp, pr_sp, device=be[0], backend=be[1], max_points=max_points
    )[1]["pixel"]


def test_backend_choice():
    cpu_tensor = torch.zeros(1)
    assert isinstance(get_ops(), NumpyOps) and isinstance(get_ops("cpu"), NumpyOps)
    assert isinstance(get_ops(torch.device("cpu")), NumpyOps)
    assert isinstance(get_ops(None, like=cpu_tensor), NumpyOps)  # numpy's sort is faster on CPU
    ops = get_ops("cpu", backend="torch")
    assert isinstance(ops, TorchOps) and ops.device.type == "cpu"
    assert isinstance(get_ops("cuda:1"), TorchOps) and get_ops("cuda:1").device == torch.device("cuda:1")


def test_thresholds_are_python_floats_of_the_maps_values():
    masks, maps = CASES["plain_f16"]
    gt_sp, pr_sp = _image_level(masks, maps)
    out = category_metrics(masks, maps, gt_sp, pr_sp)
    assert type(out["threshold_px"]) is float and out["threshold_px"] in maps.astype(np.float64)
    assert type(out["threshold_sp"]) is float and out["threshold_sp"] in pr_sp


def test_peak_memory_at_most_three_times_the_maps():
    rng = np.random.default_rng(6)
    masks = np.zeros((16, 256, 256), np.uint8)
    masks[::2, 100:140, 60:90] = 1
    maps = (np.round(rng.normal(size=masks.shape) * 64) / 64 + masks).astype(np.float32)
    gt_sp, pr_sp = masks.reshape(16, -1).max(1), maps.reshape(16, -1).max(1)
    tracemalloc.start()
    category_metrics(masks, maps, gt_sp, pr_sp)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= 3 * maps.nbytes, peak / maps.nbytes


def test_auc_is_bit_equal_to_scikit_learn():
    """metrics.curves.auc replaces sklearn.metrics.auc in the released PRO: same bits."""
    from sklearn.metrics import auc as sk_auc

    from metrics.curves import auc

    rng = np.random.default_rng(21)
    for n in (2, 3, 17, 201):
        for direction in (1, -1):
            x = np.sort(rng.random(n))[::direction].copy()
            if n > 3:
                x[1] = x[2]  # a repeated point
            y = rng.random(n)
            assert auc(x, y) == sk_auc(x, y)


@pytest.mark.parametrize("unit", [1.0, 0.25])
@pytest.mark.parametrize("y_step", [0.0, 2.0, -2.0])
def test_downsample_picks_evenly_spaced_points_along_the_l1_length(y_step, unit):
    """13 points, each segment of L1 length u (1 + |y_step|): the length at point i is
    i u (1 + |y_step|), so 4 targets evenly spaced from 0 to the full length (max_points 7
    leaves 7 - 3 = 4) land exactly on points 0, 4, 8 and 12; point 5 is kept as asked.
    (Quarter units are exact in binary and make segments shorter than 1.)"""
    x = unit * np.arange(13, dtype=np.float64)
    y = unit * y_step * np.arange(13, dtype=np.float64)
    got = _downsample(x, y, keep=5, max_points=7)
    assert got.tolist() == [0, 4, 5, 8, 12]


def test_downsample_with_a_long_first_segment():
    """Lengths (in 64ths) 0, 32, 33, ..., 43: the targets 0, 43/3, 86/3 and 43 fall at points
    0, 1 (the first point at or past both 43/3 and 86/3) and 12; point 5 is kept."""
    x = np.array([0.0, *range(32, 44)]) / 64
    got = _downsample(x, np.zeros_like(x), keep=5, max_points=7)
    assert got.tolist() == [0, 1, 5, 12]


def test_downsample_short_polyline_is_kept_whole():
    x = np.arange(7, dtype=np.float64)
    assert _downsample(x, x, keep=3, max_points=7).tolist() == list(range(7))


def test_downsample_never_exceeds_max_points_and_keeps_both_ends():
    rng = np.random.default_rng(0)
    x = np.sort(rng.random(400))
    y = np.sort(rng.random(400))[::-1]
    for max_points in (5, 10, 50):
        got = _downsample(x, y, keep=123, max_points=max_points)
        assert got.size <= max_points
        assert got[0] == 0 and got[-1] == 399 and 123 in got.tolist()
        assert np.all(np.diff(got) > 0)


def _three_by_three() -> RankCounts:
    """Positives at scores 1, 2, 3 (one each); the three negatives all at 1.5.

    By hand: TP(>= v) = 3, 2, 1; FP(>= v) = 3, 0, 0; P = 1/2, 1, 1; R = 1, 2/3, 1/3;
    F1 = 2/3, 4/5, 1/2, so F1-max is at v = 2 (index 1) with (R, P) = (2/3, 1), and its ROC
    point is (FPR, TPR) = (0, 2/3).
    """
    return RankCounts(values=np.array([1.0, 2.0, 3.0]), pos_lt=np.array([0, 1, 2]),
                      pos_eq=np.array([1, 1, 1]), neg_lt=np.array([0, 3, 3]),
                      neg_eq=np.array([0, 0, 0]), n_pos=3, n_neg=3)


def test_rank_metrics_on_the_hand_case():
    m, best = rank_metrics(_three_by_three())
    assert best == 1
    assert m["f1"] == pytest.approx(0.8, abs=1e-12) and m["threshold"] == 2.0
    assert m["auroc"] == pytest.approx(6 / 9, abs=1e-12)  # 6 of 9 (pos, neg) pairs ranked right
    # AP = sum (R_i - R_{i+1}) P_i = (1 - 2/3) 1/2 + (2/3 - 1/3) 1 + (1/3 - 0) 1
    assert m["ap"] == pytest.approx(1 / 6 + 1 / 3 + 1 / 3, abs=1e-12)


def test_downsampled_roc_and_pr_keep_the_f1_point():
    """max_points 5 leaves two length targets, 0 and the full length, so each curve is its
    first point, the F1-max point, the first point that reaches the full L1 length and the
    last point. The ROC (8 points, see the next test) reaches its full length at (1, 1), point
    6, before the closing (1, 1); the PR curve (6 points: (P, R) = (1/2, 1), (1, 2/3),
    (1, 2/3), (1, 1/3), (1, 1/3), (1, 0)) only at its last point."""
    c = _three_by_three()
    _, best = rank_metrics(c)
    out = rank_curves(c, best, max_points=5)
    fpr, tpr = out["roc"]
    np.testing.assert_allclose(fpr, [0.0, 0.0, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(tpr, [0.0, 2 / 3, 1.0, 1.0], atol=1e-12)
    precision, recall = out["pr"]
    # PR points, thresholds ascending: (>= 1), (> 1), (>= 2), ... then the final (P, R) = (1, 0)
    np.testing.assert_allclose(precision, [0.5, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(recall, [1.0, 2 / 3, 0.0], atol=1e-12)
    r, p, t = out["f1_point"]
    assert (r, p, t) == (pytest.approx(2 / 3, abs=1e-12), pytest.approx(1.0), 2.0)


def test_full_roc_curve_of_the_hand_case():
    """Without downsampling: (0, 0), then (FPR(> v), TPR(> v)), (FPR(>= v), TPR(>= v)) per v
    from the top score down, then (1, 1)."""
    c = _three_by_three()
    _, best = rank_metrics(c)
    fpr, tpr = rank_curves(c, best, max_points=500)["roc"]
    np.testing.assert_allclose(fpr * 3, [0, 0, 0, 0, 0, 3, 3, 3], atol=1e-12)
    np.testing.assert_allclose(tpr * 3, [0, 0, 1, 1, 2, 2, 3, 3], atol=1e-12)


def test_pr_curve_keeps_the_zero_point_when_a_negative_tops_every_positive():
    """Positives at 1 and 2, the one negative at 3: above v = 2 only the negative lies, so the
    point (> 2) is predicted but has TP 0: (P, R) = (0, 0), which the curve keeps (as
    ``precision_recall_curve`` has it at threshold 3) before the final (1, 0).
    By hand: TP(>= v) = 2, 1; TP(> v) = 1, 0; FP = 1 throughout."""
    c = RankCounts(values=np.array([1.0, 2.0]), pos_lt=np.array([0, 1]), pos_eq=np.array([1, 1]),
                   neg_lt=np.array([0, 0]), neg_eq=np.array([0, 0]), n_pos=2, n_neg=1)
    _, best = rank_metrics(c)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision, recall = rank_curves(c, best)["pr"]
    np.testing.assert_allclose(precision, [2 / 3, 0.5, 0.5, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(recall, [1.0, 0.5, 0.5, 0.0, 0.0], atol=1e-12)


def test_precision_is_zero_where_nothing_is_predicted():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0 / 0
        p, r = _precision_recall(np.array([0, 1, 3]), np.array([0, 1, 1]), 4)
    np.testing.assert_array_equal(p, [0.0, 0.5, 0.75])
    np.testing.assert_array_equal(r, [0.0, 0.25, 0.75])


@pytest.mark.parametrize("x_max, area", [
    (0.25, 0.0625),  # inside the first segment: y(0.25) = 0.5, area 0.5 (0 + 0.5) 0.25
    (0.5, 0.25),     # on a point: the first trapezoid, 0.5 (0 + 1) 0.5
    (0.75, 0.5),     # 0.25 + the interpolated piece 0.5 (1 + 1) 0.25
    (1.0, 0.75),     # the whole curve
])
def test_trapezoid_to_hand_values(x_max, area):
    x = np.array([0.0, 0.5, 1.0])
    y = np.array([0.0, 1.0, 1.0])
    assert trapezoid_to(x, y, x_max) == pytest.approx(area, abs=1e-12)


@pytest.mark.parametrize("fpr_limit, aupro", [(0.3, 0.0), (1.0, 0.5)])
def test_mvtec_aupro_when_a_normal_pixel_tops_every_anomalous_one(fpr_limit, aupro):
    """One anomalous pixel (a one-pixel region) at 1.0; normal pixels at 2.0 and 0.0. The PRO
    curve is 0 up to FPR 1/2 (the normal pixel at 2.0 alone), then 1: the area up to 0.3 is 0,
    up to 1 it is 1/2."""
    c = RankCounts(values=np.array([1.0]), pos_lt=np.array([0]), pos_eq=np.array([1]),
                   neg_lt=np.array([1]), neg_eq=np.array([0]), n_pos=1, n_neg=2)
    got = mvtec_aupro_from_counts(c, np.array([0]), np.array([0]), np.array([1.0]), fpr_limit)
    assert got == pytest.approx(aupro, abs=1e-12)


@pytest.mark.parametrize("x, y", [([0.0, 1.0], [0.0, 1.0, 2.0]), ([0.0, 1.0, 2.0], [0.0, 1.0]),
                                  ([0.0], [1.0])])
def test_auc_refuses_curves_of_different_or_too_few_points(x, y):
    with pytest.raises(ValueError, match="two equally long curves"):
        auc(np.array(x), np.array(y))


def test_auc_hand_values_in_both_directions():
    # trapezoids: (0.5 + 1) / 2 * 1 + (1 + 0) / 2 * 2 = 0.75 + 1 = 1.75
    assert auc(np.array([0.0, 1.0, 3.0]), np.array([0.5, 1.0, 0.0])) == pytest.approx(1.75)
    assert auc(np.array([3.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.5])) == pytest.approx(1.75)


def test_auc_kept_with_exactly_two_thresholds_below_the_limit():
    """FPRs 0.1 and 0.0 kept (0.5 is not below 0.3): rescaled to 1 and 0, the area under the
    line from (0, 0.6) to (1, 0.2) is 0.4."""
    pros = np.array([0.9, 0.2, 0.6])
    fprs = np.array([0.5, 0.1, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # defined: no "PRO is undefined" warning
        assert auc_kept(pros, fprs, 0.3) == pytest.approx(0.4, abs=1e-12)


def test_auc_kept_limit_is_strict():
    """A threshold exactly at the FPR limit is left out: the same area 0.4 as above, where
    keeping it too would rescale FPRs 0.3, 0.1, 0.0 to 1, 1/3, 0 and give
    (0.6 + 0.2) / 2 / 3 + (0.2 + 0.9) / 2 * 2 / 3 = 0.5."""
    pros = np.array([0.9, 0.2, 0.6])
    fprs = np.array([0.3, 0.1, 0.0])
    assert auc_kept(pros, fprs, 0.3) == pytest.approx(0.4, abs=1e-12)


def test_auc_kept_with_one_fpr_below_the_limit_is_undefined():
    """Two thresholds kept but both at FPR 0.1: no FPR range to rescale, NaN with the reason."""
    with pytest.warns(RuntimeWarning, match="same FPR 0.1"):
        assert math.isnan(auc_kept(np.array([0.9, 0.2, 0.6]), np.array([0.5, 0.1, 0.1]), 0.3))


def test_auc_kept_with_one_threshold_below_the_limit_is_undefined():
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert math.isnan(auc_kept(np.array([0.9, 0.2]), np.array([0.5, 0.1]), 0.3))
