"""The counts-based metrics on every back-end (numpy, torch on CPU tensors, torch on CUDA)
against scikit-learn, the released PRO loop, the naive MVTec AU-PRO and each other.

Every input is seeded; the CUDA cases carry the ``cuda`` marker and are skipped, with the
reason, where ``torch.cuda.is_available()`` is false.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from test_metrics import OTHER, _golden, _hand_case, _mvtec_aupro_naive, _random_case

from metrics import category_metrics, category_metrics_and_curves, mvtec_aupro, pro, pro_reference
from metrics.reference import _thresholds

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
# (device, backend): the numpy path, the torch code on CPU tensors, the torch code on CUDA
BACKENDS = [
    pytest.param(("cpu", "numpy"), id="numpy"),
    pytest.param(("cpu", "torch"), id="torch-cpu"),
    pytest.param(("cuda", "torch"), id="torch-cuda", marks=[pytest.mark.cuda, CUDA]),
]
RANK_KEYS = ("auroc", "ap", "f1")


def _with_normal_image(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Appends an all-normal image and makes sure image 0 has a region (both classes per level)."""
    masks, maps = masks.copy(), maps.copy()
    masks[0, 1:4, 1:4] = 1
    return np.concatenate([masks, 0 * masks[:1]]), np.concatenate([maps, (maps[:1] / 2).astype(maps.dtype)])


def _grid_case() -> tuple[np.ndarray, np.ndarray]:
    """Maps whose values lie exactly on the released PRO threshold grid."""
    rng = np.random.default_rng(7)
    masks, maps = _random_case(rng, n=3, size=12, ties=False)
    th = _thresholds(maps, 200)
    grid = np.append(th, maps.max())
    maps = grid[rng.integers(0, grid.size, maps.shape)].astype(np.float32)
    maps.flat[0], maps.flat[1] = th[0], grid[-1]
    return masks, maps


def _cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    hand_masks, hand_maps = _hand_case()
    ties = _random_case(np.random.default_rng(0), n=3, size=16, ties=True)
    plain = _random_case(np.random.default_rng(1), n=3, size=16, ties=False)
    rng = np.random.default_rng(2)
    int_masks = (rng.random((3, 10, 10)) < 0.15).astype(np.uint8)
    int_maps = (rng.integers(0, 6, int_masks.shape) + 2 * int_masks).astype(np.int32)
    cases = {
        "hand": (hand_masks, hand_maps),
        "ties_f32": ties,
        "plain_f32": plain,
        "ties_f16": (ties[0], ties[1].astype(np.float16)),
        "plain_f16": (plain[0], plain[1].astype(np.float16)),  # float16 rounding makes ties
        "plain_f64": (plain[0], plain[1].astype(np.float64) + rng.normal(0, 1e-9, plain[1].shape)),
        "grid_ties": _grid_case(),
        "int_maps": (int_masks, int_maps),
    }
    return {k: _with_normal_image(*v) for k, v in cases.items()}


CASES = _cases()


def _image_level(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = masks.shape[0]
    return masks.reshape(n, -1).max(axis=1), np.round(maps.reshape(n, -1).astype(np.float64).max(axis=1), 1)


def _sklearn(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    y, s = labels.ravel(), scores.ravel()
    p, r, t = precision_recall_curve(y, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = 2 * p * r / (p + r)
    best = int(np.argmax(np.where(np.isfinite(f1), f1, -np.inf)))
    return {"auroc": roc_auc_score(y, s), "ap": average_precision_score(y, s), "f1": f1[best],
            "threshold": float(t[best])}


def _run(case: str, be: tuple[str, str], as_tensor: bool = False, **kw):
    masks, maps = CASES[case]
    gt_sp, pr_sp = _image_level(masks, maps)
    if as_tensor:
        masks, maps = torch.from_numpy(masks), torch.from_numpy(maps)
    return category_metrics_and_curves(masks, maps, gt_sp, pr_sp, device=be[0], backend=be[1], **kw)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_classification_equals_sklearn(case, be):
    values, _ = _run(case, be)
    masks, maps = CASES[case]
    for level, (y, s) in {"px": (masks, maps), "sp": _image_level(masks, maps)}.items():
        ref = _sklearn(y, s)
        for key in RANK_KEYS:
            assert values[f"{key}_{level}"] == pytest.approx(ref[key], rel=1e-9, abs=0), (key, level)
        assert values[f"threshold_{level}"] == ref["threshold"]  # the very score of the full curve
        assert isinstance(values[f"threshold_{level}"], float)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_pro_bit_equal_to_released_loop(case, be):
    masks, maps = CASES[case]
    expected = pro_reference(masks, maps)
    assert pro(masks, maps, device=be[0], backend=be[1]) == expected
    assert _run(case, be)[0]["pro"] == expected


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("case", ["hand", "ties_f32", "plain_f32", "plain_f16", "int_maps"])
def test_mvtec_aupro_equals_naive(case, limit, be):
    masks, maps = CASES[case]
    got = mvtec_aupro(masks, maps, limit, device=be[0], backend=be[1])
    assert got == pytest.approx(_mvtec_aupro_naive(masks, maps.astype(np.float64), limit), abs=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_numpy_and_torch_backends_equal(case):
    a, ca = _run(case, ("cpu", "numpy"))
    b, cb = _run(case, ("cpu", "torch"), as_tensor=True)
    c, _ = _run(case, ("cpu", None), as_tensor=True)  # CPU tensors, default device: numpy path
    assert _same(a, b) and _same(a, c)
    for level in ("pixel", "image"):
        for name in ("roc", "pr"):
            for x, y in zip(ca[level][name], cb[level][name], strict=True):
                np.testing.assert_array_equal(x, y)
        assert ca[level]["f1_point"] == cb[level]["f1_point"]


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_tensors_stay_on_the_gpu_and_equal_numpy(case):
    masks, maps = CASES[case]
    gt_sp, pr_sp = _image_level(masks, maps)
    got = category_metrics(torch.from_numpy(masks).cuda(), torch.from_numpy(maps).cuda(), gt_sp, pr_sp)
    assert _same(got, category_metrics(masks, maps, gt_sp, pr_sp))


@pytest.mark.parametrize("be", BACKENDS)
def test_golden_metrics_cases_on_every_backend(be):
    arrays = np.load(_golden("metrics_cases.npz"))
    cases = json.loads(_golden("metrics_cases.json").read_text())["cases"]
    for name, ref in cases.items():
        gt_px, pr_px, gt_sp, pr_sp = (arrays[f"{name}_{k}"] for k in ("gt_px", "pr_px", "gt_sp", "pr_sp"))
        got = category_metrics(gt_px, pr_px, gt_sp, pr_sp, device=be[0], backend=be[1])
        for key in ("auroc_px", "f1_px", "ap_px", "auroc_sp", "f1_sp", "ap_sp"):
            assert got[key] == pytest.approx(ref[key], abs=1e-6), (name, key)
        assert got["pro"] == pytest.approx(ref["aupro"], abs=1e-6), name
        assert got["mvtec_aupro"] == pytest.approx(ref[OTHER], abs=1e-6), name
        assert _same(got, category_metrics(gt_px, pr_px, gt_sp, pr_sp))


@pytest.mark.parametrize("be", BACKENDS)
def test_one_class_gives_nan_and_warnings(be):
    masks, maps = CASES["ties_f32"]
    gt_sp, pr_sp = _image_level(masks, maps)
    with pytest.warns(RuntimeWarning) as record:
        out = category_metrics(0 * masks, maps, 0 * gt_sp, pr_sp, device=be[0], backend=be[1])
    messages = " ".join(str(w.message) for w in record)
    assert "only one class" in messages and "no anomalous ground-truth region" in messages
    for key in (*(f"{k}_{lv}" for k in (*RANK_KEYS, "auroc", "threshold") for lv in ("px", "sp")),
                "pro", "mvtec_aupro"):
        assert math.isnan(out[key]), key
    with pytest.warns(RuntimeWarning, match="no normal pixel"):
        assert math.isnan(pro(np.ones_like(masks), maps, device=be[0], backend=be[1]))
    with pytest.warns(RuntimeWarning, match="no anomalous"):
        assert math.isnan(mvtec_aupro(0 * masks, maps, device=be[0], backend=be[1]))


@pytest.mark.parametrize("be", BACKENDS)
def test_constant_map(be):
    masks, _ = CASES["ties_f32"]
    maps = np.full(masks.shape, 0.25, np.float32)
    gt_sp = masks.reshape(len(masks), -1).max(axis=1)
    with pytest.warns(RuntimeWarning, match="constant maps"):
        out = category_metrics(masks, maps, gt_sp, gt_sp * 0.5, device=be[0], backend=be[1])
    assert math.isnan(out["pro"])
    prevalence = masks.mean()
    assert out["auroc_px"] == 0.5 and out["ap_px"] == pytest.approx(prevalence, rel=1e-12)
    assert out["f1_px"] == pytest.approx(2 * prevalence / (prevalence + 1), rel=1e-12)
    assert out["threshold_px"] == 0.25
    assert out["mvtec_aupro"] == pytest.approx(0.15, abs=1e-12)  # the diagonal up to FPR 0.3


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize(
    "masks, maps, match",
    [
        (np.zeros((1, 4, 4)), np.zeros((1, 4, 5)), "shape mismatch"),
        (np.full((1, 2, 2), 255), np.zeros((1, 2, 2)), "binary"),
        (np.zeros((0, 4, 4)), np.zeros((0, 4, 4)), "empty"),
        (np.zeros((4, 4)), np.zeros((4, 4)), r"\[N, H, W\]"),
        (np.eye(4)[None], np.full((1, 4, 4), np.nan), "NaN"),
        (np.eye(4)[None], np.where(np.eye(4), np.inf, 0)[None], "infinite"),
        (np.zeros((1, 4, 4)), np.full((1, 4, 4), np.nan), "NaN"),
        (np.eye(4)[None], np.zeros((1, 4, 4), np.complex64), "real numbers"),
    ],
)
def test_input_errors(masks, maps, match, be):
    with pytest.raises(ValueError, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pro(masks, maps, device=be[0], backend=be[1])


def test_category_input_errors():
    masks, maps = CASES["hand"]
    with pytest.raises(ValueError, match="image labels"):
        category_metrics(masks, maps, np.array([1]), np.array([0.9]))
    with pytest.raises(ValueError, match=r"must both be \[N\]"):
        category_metrics(masks, maps, np.array([1, 0]), np.array([0.9, 0.1, 0.2]))
    with pytest.raises(ValueError, match="numpy back-end runs on the CPU only"):
        category_metrics(masks, maps, np.array([1, 0]), np.array([0.9, 0.1]), device="cuda", backend="numpy")
    with pytest.raises(ValueError, match="backend must be"):
        category_metrics(masks, maps, np.array([1, 0]), np.array([0.9, 0.1]), backend="jax")
