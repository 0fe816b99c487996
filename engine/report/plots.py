"""The report's plots (matplotlib on an Agg canvas of its own, no pyplot and no global backend):
per category one PNG with the ROC and the precision-recall curves (image and pixel level, the
F1-max point and its threshold marked) and the histogram of image scores.

The curves are the ones :func:`metrics.category_metrics_and_curves` already computed (no second
pass over the maps): ``{"roc": (fpr, tpr), "pr": (precision, recall), "f1_point": (recall,
precision, threshold)}`` per level, or ``None`` where only one class is present. Drawing costs
about 0.1 s per axes on one core, so both levels share the ROC and the PR axes (3 axes in all).
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

DPI = 96
NORMAL, ANOMALOUS, MARK, CHANCE = "#3b75af", "#d0453a", "#111111", "#bbbbbb"
LEVELS = (("image", "image", "#2d5f91"), ("pixel", "pixel", "#e08a1e"))  # key, label, colour
UNIT_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)  # fixed ticks draw faster than auto-located ones


def _figure(width_in: float, height_in: float):
    """A matplotlib Figure on its own Agg canvas (imported here: the package loads lightly)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> tuple[int, int]:
    """Write ``fig`` as a PNG at ``path``; returns the PNG's ``(width, height)`` in pixels."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    w, h = (round(float(x) * DPI) for x in fig.get_size_inches())
    return w, h


def f1_point_fpr(curve: dict[str, Any]) -> float:
    """The false-positive rate at the F1-max threshold v*, read off the ROC curve.

    The ROC polyline holds ``(FPR(>= v*), TPR(>= v*))`` (kept by the downsampling) and TPR(>= v*)
    is the F1 point's recall; it is the lowest-FPR point with that TPR, since TPR(> v*) is
    smaller (v* is a positive's score) and points further along have FPR at least as large.
    NaN when no ROC point has that TPR.
    """
    fpr, tpr = (np.asarray(x, dtype=np.float64) for x in curve["roc"])
    recall = float(curve["f1_point"][0])
    hit = np.flatnonzero(np.isclose(tpr, recall, rtol=1e-9, atol=1e-12))
    return float(fpr[hit].min()) if hit.size else float("nan")


def f1_of(curve: dict[str, Any]) -> float:
    """The F1-max value ``2 p r / (p + r)`` at the curve's F1 point."""
    r, p, _ = curve["f1_point"]
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _unit_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xticks=UNIT_TICKS, yticks=UNIT_TICKS)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


def _curve_axes(ax, curves: dict[str, dict | None], kind: str) -> None:
    """Draw both levels' ROC (``kind="roc"``) or PR curves on ``ax``, F1-max points marked."""
    for key, label, colour in LEVELS:
        c = curves.get(key)
        if c is None:
            ax.plot([], [], " ", label=f"{label}: undefined")
            continue
        r, p, thr = c["f1_point"]
        if kind == "roc":
            fpr, tpr = (np.asarray(x) for x in c["roc"])
            ax.plot(fpr, tpr, color=colour, lw=1.4, label=label)
            x, y = f1_point_fpr(c), r
        else:
            precision, recall = (np.asarray(x) for x in c["pr"])
            ax.plot(recall, precision, color=colour, lw=1.4, label=label)
            x, y = r, p
        if math.isfinite(x):
            ax.plot([x], [y], "o", color=colour, mec=MARK, ms=6,
                    label=f"{label} F1-max {f1_of(c):.3f}, t = {thr:.4g}")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color=CHANCE, lw=0.8, ls=":")
        _unit_axes(ax, "ROC", "false-positive rate", "true-positive rate")
        ax.legend(loc="lower right", fontsize=6.5, frameon=False)
    else:
        _unit_axes(ax, "Precision-recall", "recall", "precision")
        ax.legend(loc="lower left", fontsize=6.5, frameon=False)


def tick_digits(ticks: np.ndarray, least: int = 3, most: int = 10) -> int:
    """The fewest significant digits (≥ ``least``) that print every tick differently.

    Scores packed near one value (e.g. 0.99981 .. 0.99995) would all print as "1" at 3 digits.
    """
    for digits in range(least, most + 1):
        if len({f"{t:.{digits}g}" for t in ticks}) == len(ticks):
            return digits
    return most


def _histogram_axes(ax, scores: np.ndarray, labels: np.ndarray, threshold: float | None,
                    bins: int) -> None:
    """Normal vs anomalous image-score histograms on shared bins, the threshold dashed."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    ax.set_title("Image scores", fontsize=10)
    finite = np.isfinite(s)
    if not finite.any():
        ax.text(0.5, 0.5, "no finite scores", ha="center", va="center", transform=ax.transAxes)
        return
    lo, hi = float(s[finite].min()), float(s[finite].max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    for mask, colour, name in ((~y, NORMAL, "normal"), (y, ANOMALOUS, "anomalous")):
        part = s[mask & finite]
        if part.size:
            ax.hist(part, bins=edges, color=colour, alpha=0.55, label=f"{name} ({part.size})")
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(threshold, color=MARK, ls="--", lw=1.2, label=f"threshold {threshold:.4g}")
    ticks = np.linspace(lo, hi, 5)
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter("{x:.%dg}" % tick_digits(ticks))
    ax.legend(fontsize=6.5, frameon=False)
    ax.set_xlabel("image score", fontsize=8)
    ax.set_ylabel("images", fontsize=8)
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: whole images only
    ax.tick_params(labelsize=7)


def plot_category(curves: dict[str, dict | None] | None, scores: np.ndarray, labels: np.ndarray,
                  threshold: float | None, path: Path, bins: int = 30) -> tuple[int, int]:
    """Write one PNG at ``path``: ROC | precision-recall (image and pixel level, each with its
    F1-max point and threshold in the legend; a level whose curves are ``None`` is listed as
    undefined) | histogram of the image scores of normal (label 0) and anomalous (label 1)
    images with the image ``threshold`` as a dashed line. Returns the PNG's ``(width, height)``.
    """
    curves = curves or {}
    fig = _figure(11.4, 3.5)
    roc, pr, hist = fig.subplots(1, 3)
    _curve_axes(roc, curves, "roc")
    _curve_axes(pr, curves, "pr")
    _histogram_axes(hist, scores, labels, threshold, bins)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.14, top=0.92, wspace=0.22)
    return _save(fig, path)
