"""Per-category metric dicts, their mean, the VAND summary and the paper tables (METHOD §7).

Each category gets a flat ``{metric: fraction}`` dict (:func:`category_metrics`, defined in
:mod:`metrics.category`); the mean over categories is unweighted (:func:`mean_metrics`);
tables show percentages with one decimal, one row per category plus ``mean``
(:func:`format_table`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from tabulate import tabulate

from .category import category_metrics  # re-exported: the per-category dict lives there
from .keys import METRIC_KEYS, THRESHOLD_KEYS

__all__ = [
    "METRIC_KEYS",
    "category_metrics",
    "mean_metrics",
    "vand_summary",
    "table_rows",
    "format_table",
]



def mean_metrics(per_category: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Unweighted mean over categories of every metric key (thresholds excluded).

    ``mean[k] = sum_c v_c[k] / n_k`` over the categories whose value for ``k`` is finite
    (``n_k`` of them). A skipped NaN is reported with a ``RuntimeWarning`` naming the
    categories -- unlike ``np.nanmean`` this is never silent, and unlike the released
    plain ``np.mean`` one undefined category does not turn the mean into NaN. A key
    with no finite value at all gives NaN. Keys keep their first-seen order.

    Args:
        per_category: ``{category: {metric: value}}``.

    Returns:
        ``{metric: mean}``.
    """
    keys: dict[str, None] = {}
    for values in per_category.values():
        keys.update(dict.fromkeys(k for k in values if k not in THRESHOLD_KEYS))
    mean: dict[str, float] = {}
    for key in keys:
        vals = {c: float(v[key]) for c, v in per_category.items() if key in v}
        finite = [x for x in vals.values() if math.isfinite(x)]
        skipped = [c for c, x in vals.items() if not math.isfinite(x)]
        if skipped:
            warnings.warn(
                f"mean of {key!r} skips non-finite values of {skipped}", RuntimeWarning, stacklevel=2
            )
        mean[key] = float(np.mean(finite)) if finite else float("nan")
    return mean


def _harmonic(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)):
        return float("nan")
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def vand_summary(per_category: Mapping[str, Mapping[str, float]]) -> dict:
    """VAND challenge score: per category ``H = 2 f1_sp f1_px / (f1_sp + f1_px)``.

    ``H`` is 0 when both F1 are 0 and NaN when either is NaN.

    Returns:
        ``{"per_category": {category: H}, "mean": mean of the finite H}``.
    """
    per = {c: _harmonic(float(v["f1_sp"]), float(v["f1_px"])) for c, v in per_category.items()}
    finite = [h for h in per.values() if math.isfinite(h)]
    return {"per_category": per, "mean": float(np.mean(finite)) if finite else float("nan")}


def table_rows(
    per_category: Mapping[str, Mapping[str, float]],
    mean: Mapping[str, float] | None = None,
    keys: Sequence[str] = METRIC_KEYS,
    percent: bool = True,
    header: bool = True,
) -> list[list]:
    """Rows of the paper table: optional header, one row per category, then ``mean``.

    Args:
        per_category: ``{category: {metric: fraction}}``.
        mean: the ``mean`` row; computed with :func:`mean_metrics` when ``None``.
        keys: metric columns, in order.
        percent: multiply values by 100 (unrounded floats either way; NaN stays NaN).
        header: start with ``["objects", *keys]``.

    Returns:
        ``[[name, v_1, ..., v_K], ...]``, ready for ``csv.writer.writerows``.
    """
    if mean is None:
        mean = mean_metrics(per_category)
    scale = 100.0 if percent else 1.0
    rows: list[list] = [["objects", *keys]] if header else []
    for name, values in [*per_category.items(), ("mean", mean)]:
        rows.append([name, *(float(values.get(k, float("nan"))) * scale for k in keys)])
    return rows


def format_table(
    per_category: Mapping[str, Mapping[str, float]],
    mean: Mapping[str, float] | None = None,
    keys: Sequence[str] = METRIC_KEYS,
    tablefmt: str = "pipe",
) -> str:
    """The printed table: ``objects`` column, percentages with one decimal, an undefined value
    (NaN) as ``–``.

    Args:
        per_category: ``{category: {metric: fraction}}``.
        mean: the ``mean`` row; computed with :func:`mean_metrics` when ``None``.
        keys: metric columns, in order.
        tablefmt: any ``tabulate`` format (``"pipe"`` is Markdown).

    Returns:
        The table text.
    """
    header, *rows = table_rows(per_category, mean, keys)
    rows = [[v if not isinstance(v, float) or math.isfinite(v) else None for v in r]
            for r in rows]
    return tabulate(rows, headers=header, tablefmt=tablefmt, floatfmt=".1f", missingval="–")
