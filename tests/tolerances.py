"""Comparisons of results that are the same computation up to float32 rounding (another batch
composition on some CPUs): the tolerances and their reason, in one place."""
from __future__ import annotations

import numpy as np


def assert_metrics_close(a, b, tol: float = 1e-4, pro_tol: float = 5e-4, key: str = "") -> None:
    """Nested metric dicts equal up to float32 rounding of the maps they come from.

    For two runs that compute the same maps with other batch compositions (a feature store,
    references encoded together or apart): a matrix multiply over a batch of another size can
    take other kernels on some CPUs and move a map value by a few 1e-6, which moves a metric by
    far less than ``tol``; the PRO metrics integrate region overlaps over thresholds and move
    more (``pro_tol``). Non-float values (and NaN) must be equal.
    """
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), key
        for k in a:
            assert_metrics_close(a[k], b[k], tol, pro_tol, f"{key}/{k}")
    elif isinstance(a, float) and isinstance(b, float):
        if np.isnan(a) or np.isnan(b):
            assert np.isnan(a) and np.isnan(b), key
        else:
            assert abs(a - b) <= (pro_tol if "pro" in key.rsplit("/", 1)[-1] else tol), \
                (key, a, b)
    else:
        assert a == b, key
