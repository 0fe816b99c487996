"""The device half of the metrics: one sort, then integer counts (numpy or torch back-end).

For labels ``y`` and scores ``s`` (flat, on the back-end's device):

1. sort all scores by value (one value sort -- no argsort, no gather of the big array);
   their minimum and maximum are its ends;
2. sort the few positive scores apart and find the runs of equal values: the K distinct
   positive scores ``v`` and ``#pos < v``, ``#pos = v``;
3. ``#all < v`` and ``#all <= v`` by ``searchsorted`` in the sorted scores; the negatives'
   counts are the differences (int64, exact);
4. for PRO, on the released threshold grid ``th``: ``#neg > th_j`` the same way, and per
   region the histogram of ``k_p = #{j : th_j < s_p}`` over the anomalous pixels only
   (``bincount`` of ``region * (T+1) + k``); for ``mvtec_aupro``, the index of every
   anomalous pixel's score among the K values (``searchsorted``).

Only these integer arrays (and K score values) go back to the host, where
:mod:`metrics.curves` does the float64 arithmetic once. So the order a sort gives to ties
never changes a value, and both back-ends give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import NumpyOps, TorchOps
from .classification import warn_one_class
from .curves import RankCounts, threshold_grid
from .regions import MaskRegions, mask_regions

__all__ = ["Counts", "count_scores", "pixel_input", "scores_input"]

Ops = NumpyOps | TorchOps


@dataclass(frozen=True)
class Counts:
    """Everything the metrics need from one sort.

    Attributes:
        rank: counts at the distinct positive scores.
        vmin, vmax: smallest and largest score (numpy scalars of the scores' dtype).
        grid: (T,) float64, the released PRO thresholds, or ``None`` (not asked, or
            constant scores).
        fp_grid: (T,) int64 negatives with score > th_j.
        region_hist: (R, T+1) int64 anomalous pixels of region r with k thresholds below.
        value_of_pixel: (n_pos,) int64, for every positive sample in C order the index of
            its score in ``rank.values``, or ``None``.
    """

    rank: RankCounts
    vmin: np.generic
    vmax: np.generic
    grid: np.ndarray | None = None
    fp_grid: np.ndarray | None = None
    region_hist: np.ndarray | None = None
    value_of_pixel: np.ndarray | None = None


def scores_input(ops: Ops, labels: Any, scores: Any, names: tuple[str, str]) -> tuple[Any, Any]:
    """Flat (labels bool, scores float) on the back-end's device, after the usual checks."""
    if tuple(labels.shape) != tuple(scores.shape):
        raise ValueError(f"shape mismatch: {names[0]} {tuple(labels.shape)} vs {names[1]} {tuple(scores.shape)}")
    return ops.labels(labels, names[0]), ops.scores(scores, names[1])


def pixel_input(ops: Ops, masks: Any, maps: Any) -> tuple[Any, Any]:
    """(masks, maps) of shape (N, H, W) checked and flattened; see :func:`scores_input`."""
    if not is_array_like(masks):
        masks = np.asarray(masks)
    if not is_array_like(maps):
        maps = np.asarray(maps)
    if tuple(masks.shape) != tuple(maps.shape):
        raise ValueError(f"shape mismatch: masks {tuple(masks.shape)} vs maps {tuple(maps.shape)}")
    if len(masks.shape) != 3:
        raise ValueError(f"masks and maps must be [N, H, W], got shape {tuple(masks.shape)}")
    return scores_input(ops, masks, maps, ("masks", "maps"))


def is_array_like(x: Any) -> bool:
    """A numpy array or a tensor (anything with ``shape`` and ``dtype``)."""
    return hasattr(x, "shape") and hasattr(x, "dtype")


def one_class(ops: Ops, y: Any, s: Any, warn: bool = True) -> int | None:
    """``n_pos`` if both classes are present; else ``None`` (warning unless ``warn=False``).

    Raises:
        ValueError: if the scores of one-class input hold NaN or infinite values (two-class
            input is checked after the sort, where it is free).
    """
    size, n_pos = int(y.shape[0]), ops.count(y)
    if 0 < n_pos < size:
        return n_pos
    if not ops.all_finite(s):
        raise ValueError("scores contain NaN or infinite values")
    if warn:
        warn_one_class(n_pos, size, stacklevel=4)
    return None


def resolve_regions(ops: Ops, y: Any, shape: tuple[int, ...], regions: MaskRegions | None) -> MaskRegions:
    """``regions`` checked against the masks ``y`` (flat), or computed from them."""
    if regions is None:
        return mask_regions(ops.to_numpy(y).reshape(shape))
    regions.check(shape, ops.count_rows(y, shape[0]))
    return regions


def count_scores(
    ops: Ops,
    y: Any,
    s: Any,
    n_pos: int,
    regions: MaskRegions | None = None,
    max_step: int | None = None,
    value_index: bool = False,
) -> Counts:
    """The counts of two-class input (steps in the module docstring).

    Args:
        ops: the back-end.
        y: (P,) bool labels; ``0 < n_pos < P``.
        s: (P,) scores.
        n_pos: number of positive labels.
        regions: the masks' regions; needed for ``max_step``.
        max_step: compute the PRO grid counts with this many steps (released: 200).
        value_index: also return, per positive sample, the index of its value in
            ``rank.values`` (C order).

    Raises:
        ValueError: if the scores hold NaN or infinite values.
    """
    size = int(y.shape[0])
    ordered = ops.sort(s)  # (P,) ascending; NaN sort last in numpy and torch
    ends = ops.to_numpy(ordered[[0, -1]])  # (2,) min, max
    if not np.isfinite(ends).all():
        raise ValueError("scores contain NaN or infinite values")
    vmin, vmax = ends[0], ends[1]
    pos_c = ops.select(s, y)  # (n_pos,) positive scores in C order
    pos = ops.sort(pos_c)  # (n_pos,) ascending
    starts = ops.run_starts(pos)  # (K,) first index of each run of equal positive scores
    values = ops.take(pos, starts)  # (K,) distinct positive scores
    all_lt = ops.to_numpy(ops.searchsorted(ordered, values, right=False)).astype(np.int64)
    all_le = ops.to_numpy(ops.searchsorted(ordered, values, right=True)).astype(np.int64)
    pos_lt = ops.to_numpy(starts).astype(np.int64)
    pos_eq = np.diff(np.append(pos_lt, n_pos))
    rank = RankCounts(
        values=ops.to_numpy(values),
        pos_lt=pos_lt,
        pos_eq=pos_eq,
        neg_lt=all_lt - pos_lt,
        neg_eq=all_le - all_lt - pos_eq,
        n_pos=n_pos,
        n_neg=size - n_pos,
    )
    extra: dict[str, np.ndarray] = {}
    grid_asked = regions is not None and max_step is not None and vmin < vmax
    if value_index or grid_asked:
        value_of = ops.searchsorted(values, pos_c, right=False)  # (n_pos,) index into values
        if value_index:
            extra["value_of_pixel"] = ops.to_numpy(value_of).astype(np.int64)
    if grid_asked:
        grid = threshold_grid(vmin, vmax, max_step)  # (T,) float64, as released
        th = ops.device_array(round_down(grid, ops.dtype(s)))
        above_all = size - ops.to_numpy(ops.searchsorted(ordered, th, right=True)).astype(np.int64)
        above_pos = n_pos - ops.to_numpy(ops.searchsorted(pos, th, right=True)).astype(np.int64)
        k = ops.take(ops.searchsorted(th, values, right=False), value_of)  # (n_pos,) #th_j < s_p
        n_bins = grid.size + 1
        region = ops.device_array(regions.region_of_pixel)  # (n_pos,) C order
        hist = ops.bincount(ops.index_key(region, n_bins, k), regions.n_regions * n_bins)
        extra.update(
            grid=grid,
            fp_grid=above_all - above_pos,
            region_hist=ops.to_numpy(hist).astype(np.int64).reshape(regions.n_regions, n_bins),
        )
    return Counts(rank=rank, vmin=vmin, vmax=vmax, **extra)


def round_down(grid: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Each float64 threshold rounded down into the scores' dtype.

    For a score ``v`` of that dtype and the largest representable ``f <= th``,
    ``v > th  <=>  v > f`` and ``th < v  <=>  f < v``; so comparisons in the scores' own
    dtype (as ``searchsorted`` and torch need) count exactly what the released float64
    comparison ``map > th`` counts.
    """
    f = grid.astype(dtype)
    over = f.astype(np.float64) > grid
    f[over] = np.nextafter(f[over], dtype.type(-np.inf))
    return f
