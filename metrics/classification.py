"""Threshold-free ranking metrics for image- and pixel-level anomaly detection.

APRIL-GAN (Chen et al., "APRIL-GAN: A Zero-/Few-Shot Anomaly Classification and
Segmentation Method for CVPR 2023 VAND Workshop Challenge", arXiv:2305.17382)
reports AUROC, average precision and F1-max, all with scikit-learn's definitions.
The functions here build the full ROC and precision-recall curves from one ``argsort``
(``_curve``), following scikit-learn's ``roc_curve`` (with ``drop_intermediate``),
``precision_recall_curve`` and ``auc`` step by step, so their values are scikit-learn's
bit for bit; they suit small inputs such as image scores. A category's pixels go through
:func:`metrics.category_metrics` instead: one value sort and integer counts at the
positive scores only (:mod:`metrics.counting`, :mod:`metrics.curves`; numpy or torch),
equal to these to rounding and many times faster.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = [
    "auroc",
    "average_precision",
    "classification_metrics",
    "f1_max",
    "f1_max_threshold",
    "validate_binary",
    "warn_one_class",
]


def validate_binary(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Returns ``labels`` as a bool array after checking it holds only 0/1 values.

    Raises:
        ValueError: if the array is empty or holds a value other than 0, 1 (or False, True).
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError(f"{name} is empty")
    if labels.dtype == bool:
        return labels
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"{name} must be a bool or numeric 0/1 array, got dtype {labels.dtype}")
    is_one = labels == 1
    if not np.all(is_one | (labels == 0)):
        bad = np.unique(labels[~(is_one | (labels == 0))])[:5]
        raise ValueError(f"{name} must be binary (0/1); found values such as {bad.tolist()}")
    return is_one


def _validate(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Checks shapes/values, flattens both arrays; ``None`` (plus a warning) for one class."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.shape != scores.shape:
        raise ValueError(f"shape mismatch: labels {labels.shape} vs scores {scores.shape}")
    y = validate_binary(labels).ravel()  # (P,) bool
    s = scores.ravel()  # (P,) view when contiguous; keeps float32
    if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
        raise ValueError(f"scores must be real numbers, got dtype {s.dtype}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0 or n_pos == y.size:
        warn_one_class(n_pos, y.size)
        return None
    return y, s


def warn_one_class(n_pos: int, size: int, stacklevel: int = 4) -> None:
    """The ``RuntimeWarning`` for labels of a single class (the metric is NaN)."""
    warnings.warn(
        f"labels contain only one class ({'all positive' if n_pos else 'all negative'}, "
        f"{size} samples): the metric is undefined, returning NaN",
        RuntimeWarning,
        stacklevel=stacklevel,
    )


def _curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive counts at each distinct score, highest score first.

    Scikit-learn's ``confusion_matrix_at_thresholds``: sort by descending score, and at the
    last position of each run of equal scores take tps = cumulative positives and
    fps = position + 1 - tps. The order inside a run of ties does not matter.

    Returns:
        (fps, tps, thresholds), each (K,) for the K distinct scores; counts in float64.
    """
    order = np.argsort(s)[::-1]  # (P,) descending
    s_sorted = s[order]
    idx = np.append(np.flatnonzero(np.diff(s_sorted)), s.size - 1)  # (K,) end of each run
    tps = np.cumsum(y[order], dtype=np.float64)[idx]
    fps = 1.0 + idx - tps
    return fps, tps, s_sorted[idx]


def _roc_auc(fps: np.ndarray, tps: np.ndarray) -> float:
    """``roc_auc_score`` from the curve: drop collinear points, prepend (0, 0), trapezoid."""
    if fps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps = fps[keep], tps[keep]
    fpr = np.r_[0.0, fps] / fps[-1]
    tpr = np.r_[0.0, tps] / tps[-1]
    return float(np.trapezoid(tpr, fpr))


def _pr_curve(fps: np.ndarray, tps: np.ndarray,
              thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``precision_recall_curve``: (P (K+1,), R (K+1,), T (K,)), recall decreasing."""
    ps = tps + fps  # >= 1 everywhere
    precision = tps / ps
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, ``sklearn.metrics.roc_auc_score``.

    AUROC = P(s_pos > s_neg) + 0.5 P(s_pos = s_neg) over all positive/negative pairs,
    i.e. the trapezoidal area under TPR vs FPR.

    Args:
        labels: binary ground truth, any shape (0/1 or bool).
        scores: real scores, same shape; higher means more anomalous.

    Returns:
        The AUROC in [0, 1], or NaN (with a ``RuntimeWarning``) if only one class is present.

    Raises:
        ValueError: on empty input, shape mismatch, non-binary labels or non-finite scores.
    """
    checked = _validate(labels, scores)
    if checked is None:
        return float("nan")
    return _roc_auc(*_curve(*checked)[:2])


def _pr_metrics(fps: np.ndarray, tps: np.ndarray,
                thresholds: np.ndarray) -> tuple[float, float, float]:
    """(AP, F1-max, F1-max threshold) from the curve of ``_curve``."""
    precision, recall, thresholds = _pr_curve(fps, tps, thresholds)  # (K+1,), (K+1,), (K,)
    # Exactly sklearn's average_precision_score for binary input: step-function integral.
    ap = float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = (2 * precision * recall) / (precision + recall)  # (K+1,), NaN where P = R = 0
    f1 = np.where(np.isfinite(f1), f1, -np.inf)
    best = int(np.argmax(f1))  # first index reaching the max
    # The last P/R point (P=1, R=0) has no threshold: no score reaches it, so +inf.
    thr = float(thresholds[best]) if best < thresholds.size else float("inf")
    return ap, float(f1[best]), thr


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision, ``sklearn.metrics.average_precision_score``.

    AP = sum_k (R_k - R_{k-1}) P_k over the precision-recall curve's thresholds
    (step function, no interpolation).

    Args:
        labels: binary ground truth, any shape.
        scores: real scores, same shape.

    Returns:
        AP in [0, 1], or NaN (with a ``RuntimeWarning``) if only one class is present.

    Raises:
        ValueError: on empty input, shape mismatch, non-binary labels or non-finite scores.
    """
    checked = _validate(labels, scores)
    return float("nan") if checked is None else _pr_metrics(*_curve(*checked))[0]


def f1_max_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over the precision-recall curve and the score threshold reaching it.

    As released: ``P, R, T = precision_recall_curve(labels, scores)``,
    F1 = 2PR / (P + R), max over the finite values (P = R = 0 gives NaN and is skipped).
    ``P`` and ``R`` have one more point than ``T``: the final (P=1, R=0) point, whose
    F1 is 0. The threshold returned is ``T[argmax]`` (first index on ties), meaning
    "predict anomalous when score >= threshold"; should the final point ever win, the
    threshold is +inf (it cannot when positives exist, since then some F1 > 0).

    Args:
        labels: binary ground truth, any shape.
        scores: real scores, same shape.

    Returns:
        ``(f1, threshold)``; ``(nan, nan)`` with a ``RuntimeWarning`` for a single class.

    Raises:
        ValueError: on empty input, shape mismatch, non-binary labels or non-finite scores.
    """
    checked = _validate(labels, scores)
    if checked is None:
        return float("nan"), float("nan")
    _, f1, thr = _pr_metrics(*_curve(*checked))
    return f1, thr


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over the precision-recall curve; see :func:`f1_max_threshold`."""
    return f1_max_threshold(labels, scores)[0]


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC, AP, F1-max and its threshold with one validation and one PR curve.

    Returns:
        ``{"auroc", "ap", "f1", "threshold"}``; all NaN (one warning) for a single class.
    """
    checked = _validate(labels, scores)
    if checked is None:
        return dict.fromkeys(("auroc", "ap", "f1", "threshold"), float("nan"))
    curve = _curve(*checked)  # one sort serves all four numbers
    ap, f1, thr = _pr_metrics(*curve)
    return {"auroc": _roc_auc(*curve[:2]), "ap": ap, "f1": f1, "threshold": thr}
