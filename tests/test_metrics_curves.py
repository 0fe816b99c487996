"""Hand-worked cases on every back-end, connected regions reused across runs, the curves for the
report, the back-end choice and peak memory."""

from __future__ import annotations

import tracemalloc

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
