"""Metric values and curves from integer score counts, in float64 numpy (METHOD §7).

The counting half (:mod:`metrics.counting`) reduces a binary ranking problem with
``n_pos`` positive and ``n_neg`` negative samples to its K distinct positive scores
``v_1 < ... < v_K`` and, for each, the int64 counts ``pos_lt`` (#pos < v), ``pos_eq``
(#pos = v), ``neg_lt`` (#neg < v) and ``neg_eq`` (#neg = v) (:class:`RankCounts`). The
true-positive count changes only at those scores, so with ``TP(v) = #pos >= v`` and
``FP(v) = #neg >= v``:

* AUROC (rank sum, ties count one half) = sum_i pos_eq_i (2 neg_lt_i + neg_eq_i) / (2 n_pos n_neg),
  summed exactly in int64;
* AP = sum_i (R_i - R_{i+1}) P_i with P_i = TP/(TP+FP), R_i = TP/n_pos at v_i (R_{K+1} = 0),
  scikit-learn's step integral (negative-only thresholds add zero-width steps);
* F1-max = max_i 2 P_i R_i / (P_i + R_i): between positive scores TP is constant and FP
  larger, so the maximum is at some v_i; its threshold is v_i, the lowest on ties, as
  ``precision_recall_curve`` gives it.

These equal scikit-learn's functions to rounding (summation order only); F1-max and its
threshold are the very floats of the full curve. :func:`pro_from_grid` and
:func:`mvtec_aupro_from_counts` finish the two PRO integrals the same way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = [
    "RankCounts",
    "auc",
    "auc_kept",
    "mvtec_aupro_from_counts",
    "pro_from_grid",
    "rank_curves",
    "rank_metrics",
    "threshold_grid",
    "trapezoid_to",
    "undefined",
]


def undefined(reason: str, stacklevel: int = 3) -> float:
    """NaN, with a ``RuntimeWarning`` saying why PRO is undefined."""
    warnings.warn(f"PRO is undefined: {reason}; returning NaN", RuntimeWarning, stacklevel=stacklevel)
    return float("nan")


@dataclass(frozen=True)
class RankCounts:
    """Counts at the K distinct positive scores (ascending); arrays (K,), counts int64.

    Attributes:
        values: the distinct positive scores, in the scores' dtype.
        pos_lt, pos_eq: positives below / equal to each value.
        neg_lt, neg_eq: negatives below / equal to each value.
        n_pos, n_neg: totals (both > 0).
    """

    values: np.ndarray
    pos_lt: np.ndarray
    pos_eq: np.ndarray
    neg_lt: np.ndarray
    neg_eq: np.ndarray
    n_pos: int
    n_neg: int

    def at_or_above(self) -> tuple[np.ndarray, np.ndarray]:
        """``(TP(>= v), FP(>= v))`` per value, int64 (K,)."""
        return self.n_pos - self.pos_lt, self.n_neg - self.neg_lt

    def above(self) -> tuple[np.ndarray, np.ndarray]:
        """``(TP(> v), FP(> v))`` per value, int64 (K,)."""
        return self.n_pos - self.pos_lt - self.pos_eq, self.n_neg - self.neg_lt - self.neg_eq


def _precision_recall(tp: np.ndarray, fp: np.ndarray, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """``P = TP / (TP + FP)`` (0 where no sample is predicted) and ``R = TP / n_pos``, float64."""
    tp, ps = tp.astype(np.float64), (tp + fp).astype(np.float64)
    precision = np.divide(tp, ps, out=np.zeros_like(tp), where=ps > 0)
    return precision, tp / np.float64(n_pos)


def rank_metrics(c: RankCounts) -> tuple[dict[str, float], int]:
    """AUROC, AP, F1-max and its threshold (formulas in the module docstring).

    Returns:
        ``({"auroc", "ap", "f1", "threshold"}, best)``, ``best`` the index of the F1-max value.
    """
    twice_wins = int(np.sum(c.pos_eq * (2 * c.neg_lt + c.neg_eq)))  # int64, exact
    auroc = twice_wins / (2 * c.n_pos * c.n_neg)  # Python ints: exact, correctly rounded
    precision, recall = _precision_recall(*c.at_or_above(), c.n_pos)  # (K,) each
    ap = float(max(0.0, np.sum((recall - np.append(recall[1:], 0.0)) * precision)))
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = (2 * precision * recall) / (precision + recall)  # (K,), as the full curve does
    f1 = np.where(np.isfinite(f1), f1, -np.inf)
    best = int(np.argmax(f1))  # first index: the lowest threshold on ties
    return {"auroc": auroc, "ap": ap, "f1": float(f1[best]), "threshold": float(c.values[best])}, best


def _interleave(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[a_0, b_0, a_1, b_1, ...]`` for (K,) arrays."""
    return np.stack([a, b], axis=1).reshape(-1)


def _downsample(x: np.ndarray, y: np.ndarray, keep: int, max_points: int) -> np.ndarray:
    """At most ``max_points`` indices of a polyline, evenly spaced along its L1 length.

    The first and last points and the point ``keep`` are always in.
    """
    n = x.size
    if n <= max_points:
        return np.arange(n)
    length = np.concatenate(([0.0], np.cumsum(np.abs(np.diff(x)) + np.abs(np.diff(y)))))  # (n,)
    idx = np.searchsorted(length, np.linspace(0.0, length[-1], max(max_points - 3, 2)))
    return np.unique(np.concatenate((np.minimum(idx, n - 1), [0, keep, n - 1])))


def rank_curves(c: RankCounts, best: int, max_points: int = 500) -> dict:
    """ROC and precision-recall curves of the counts, downsampled for plotting.

    The ROC polyline through ``(0, 0)``, then per distinct positive score v (descending)
    ``(FPR(> v), TPR(> v))`` and ``(FPR(>= v), TPR(>= v))``, then ``(1, 1)``, is the exact ROC
    curve (the omitted negative-only points are collinear with these). The PR points are the
    same thresholds in ascending order (recall decreasing) and the final ``(P, R) = (1, 0)``,
    as ``precision_recall_curve`` orders them.

    Args:
        c: the counts.
        best: the F1-max index of :func:`rank_metrics`.
        max_points: at most this many points per curve (endpoints and F1 point kept).

    Returns:
        ``{"roc": (fpr, tpr), "pr": (precision, recall), "f1_point": (recall, precision,
        threshold)}``; arrays float64.
    """
    (tp_ge, fp_ge), (tp_gt, fp_gt) = c.at_or_above(), c.above()
    tpr = np.concatenate(([0], _interleave(tp_gt[::-1], tp_ge[::-1]), [c.n_pos])) / c.n_pos
    fpr = np.concatenate(([0], _interleave(fp_gt[::-1], fp_ge[::-1]), [c.n_neg])) / c.n_neg
    roc_best = 2 * (c.values.size - 1 - best) + 2  # (FPR(>= v*), TPR(>= v*))
    roc = _downsample(fpr, tpr, roc_best, max_points)
    tp, fp = _interleave(tp_ge, tp_gt), _interleave(fp_ge, fp_gt)  # (2K,) ascending thresholds
    real = tp + fp > 0  # drops (> v_K) when nothing lies above the top score
    precision, recall = _precision_recall(tp[real], fp[real], c.n_pos)
    precision, recall = np.append(precision, 1.0), np.append(recall, 0.0)
    pr = _downsample(recall, precision, 2 * best, max_points)
    return {
        "roc": (fpr[roc], tpr[roc]),
        "pr": (precision[pr], recall[pr]),
        "f1_point": (float(recall[2 * best]), float(precision[2 * best]), float(c.values[best])),
    }


def threshold_grid(vmin: np.generic, vmax: np.generic, max_step: int) -> np.ndarray:
    """The released grid ``np.arange(min, max, (max - min) / max_step)`` in the maps' dtype.

    ``vmin``/``vmax`` are numpy scalars of the maps' dtype, so the step is rounded there.
    """
    delta = (vmax - vmin) / max_step
    return np.arange(vmin, vmax, delta)


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """``sklearn.metrics.auc``: trapezoid area under y(x) for monotonic x (either direction).

    The same arithmetic as scikit-learn (sign of the direction times the trapezoid sum,
    ``sum(dx * (y[1:] + y[:-1]) / 2)``), without importing it (1 s at start-up).
    """
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"auc needs two equally long curves of >= 2 points, got {x.size}, {y.size}")
    dx = np.diff(x)
    direction = 1
    if np.any(dx < 0):
        if not np.all(dx <= 0):
            raise ValueError("x is neither increasing nor decreasing")
        direction = -1
    return float(direction * (dx * (y[1:] + y[:-1]) / 2.0).sum())


def auc_kept(pros: np.ndarray, fprs: np.ndarray, expect_fpr: float) -> float:
    """The released tail: keep fpr < expect_fpr, min-max rescale those FPRs, sklearn ``auc``."""
    keep = fprs < expect_fpr
    if np.count_nonzero(keep) < 2:
        return undefined(f"{np.count_nonzero(keep)} threshold(s) with FPR < {expect_fpr} (need 2)")
    kept = fprs[keep]
    span = kept.max() - kept.min()
    if span == 0:
        return undefined(f"all kept thresholds have the same FPR {kept[0]:.6g}")
    return float(auc((kept - kept.min()) / span, pros[keep]))


def pro_from_grid(fp: np.ndarray, region_hist: np.ndarray, n_neg: int, expect_fpr: float) -> float:
    """The released ``pro`` from grid counts (bit-equal to the released loop).

    ``PRO(th_j) = mean_r TP_r(th_j) / |r|`` with ``TP_r(th_j) = #{p in r : map_p > th_j}
    = sum_{k > j} region_hist[r, k]``, regions in the released order, the mean over a
    contiguous row as ``np.mean`` of the loop's list; ``FPR(th_j) = fp_j / n_neg``.

    Args:
        fp: (T,) int64 negatives above each threshold.
        region_hist: (R, T+1) int64 pixels of region r with exactly k thresholds below them.
        n_neg: number of normal pixels.
        expect_fpr: FPR limit (strict).
    """
    area = region_hist.sum(axis=1).astype(np.float64)  # (R,)
    tp = np.cumsum(region_hist[:, ::-1], axis=1)[:, ::-1][:, 1:]  # (R, T) suffix sums past bin j
    fracs = np.ascontiguousarray((tp / area[:, None]).T)  # (T, R): rows reduce like the 1-D mean
    return auc_kept(fracs.mean(axis=1), fp / n_neg, expect_fpr)


def trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under y(x) for x <= x_max, linear interpolation at x_max (MVTec ``trapezoid``)."""
    correction = 0.0
    if not np.any(x == x_max):
        ins = int(np.searchsorted(x, x_max, side="right"))  # bisect.bisect
        assert 0 < ins < x.size
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def mvtec_aupro_from_counts(
    c: RankCounts, value_of_pixel: np.ndarray, region_of_pixel: np.ndarray, area: np.ndarray,
    fpr_limit: float,
) -> float:
    """The MVTec AU-PRO from the counts of the pixels (labels = anomalous).

    ``PRO(>= v) = min(1, sum_{p anomalous, map_p >= v} 1/|r(p)| / R)``: the weights are summed
    per distinct anomalous score (``np.bincount``, pixels in C order, so every back-end gives
    the same floats), then accumulated from the top score down. PRO is constant between
    anomalous scores, so the points ``(FPR(> v), PRO(> v))``, ``(FPR(>= v), PRO(>= v))`` per v,
    between ``(0, 0)``, ``(1, PRO(>= v_1))`` and ``(1, 1)``, trace the exact curve of every
    distinct score. Integrated by :func:`trapezoid_to` up to ``fpr_limit``, / ``fpr_limit``.

    Args:
        c: counts of the pixels.
        value_of_pixel: (n_pos,) index in ``c.values`` of every anomalous pixel's score.
        region_of_pixel: (n_pos,) region index of every anomalous pixel (same order).
        area: (R,) region sizes.
        fpr_limit: upper FPR limit in (0, 1].
    """
    weight = np.bincount(value_of_pixel, (1.0 / area)[region_of_pixel], minlength=c.values.size)  # (K,)
    pro_ge = np.cumsum(weight[::-1])[::-1]  # (K,) sum over scores >= v_i
    pro_gt = np.append(pro_ge[1:], 0.0)  # (K,) sum over scores > v_i
    pro_ge, pro_gt = (np.minimum(p / area.size, 1.0) for p in (pro_ge, pro_gt))
    (_, fp_ge), (_, fp_gt) = c.at_or_above(), c.above()
    x = np.concatenate(([0.0], _interleave(fp_gt[::-1], fp_ge[::-1]) / c.n_neg, [1.0, 1.0]))
    y = np.concatenate(([0.0], _interleave(pro_gt[::-1], pro_ge[::-1]), [pro_ge[0], 1.0]))
    return trapezoid_to(x, y, fpr_limit) / fpr_limit
