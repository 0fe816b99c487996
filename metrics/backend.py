"""Two array back-ends for the counting half of the metrics: numpy (CPU) and torch (any device).

The metric algorithm (:mod:`metrics.counting`) is written once against the small set of
operations below; only integer counts and a few distinct score values come back to the
host, so both back-ends give the same numbers bit for bit (:mod:`metrics.curves` does the
float64 arithmetic in numpy). numpy is the CPU default: its SIMD sort is several times
faster than ``torch.sort`` there. torch is imported only when a torch back-end is asked
for or a tensor is passed, so the numpy path never needs it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from .classification import validate_binary

if TYPE_CHECKING:
    import torch

__all__ = ["NumpyOps", "TorchOps", "get_ops", "is_tensor"]

_SCORE_DTYPES = (np.float16, np.float32, np.float64)


def is_tensor(x: Any) -> bool:
    """True for a ``torch.Tensor`` (without importing torch when nobody else has)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _bad_labels(bad: list, name: str) -> ValueError:
    return ValueError(f"{name} must be binary (0/1); found values such as {bad}")


class NumpyOps:
    """Array operations on numpy arrays (CPU)."""

    name = "numpy"

    @staticmethod
    def host(x: Any) -> np.ndarray:
        """``x`` as a numpy array (a CPU tensor is viewed, a CUDA tensor copied)."""
        return x.detach().cpu().numpy() if is_tensor(x) else np.asarray(x)

    def labels(self, x: Any, name: str) -> np.ndarray:
        """Flat bool view/copy of binary labels; raises ``ValueError`` as ``validate_binary``."""
        x = self.host(x)
        if x.dtype == np.uint8 and x.size and x.max() <= 1:  # 0/1 bytes are valid bools
            return np.ascontiguousarray(x).reshape(-1).view(np.bool_)
        return validate_binary(x, name).reshape(-1)

    def scores(self, x: Any, name: str) -> np.ndarray:
        """Flat real scores: float16/32/64 kept as they are, integers as float64."""
        x = self.host(x)
        if np.issubdtype(x.dtype, np.integer):
            x = x.astype(np.float64)
        elif x.dtype.type not in _SCORE_DTYPES:
            raise ValueError(f"{name} must be real numbers (float16/32/64 or integer), got {x.dtype}")
        return x.reshape(-1)

    @staticmethod
    def dtype(s: np.ndarray) -> np.dtype:
        return s.dtype

    @staticmethod
    def count(y: np.ndarray) -> int:
        return int(np.count_nonzero(y))

    @staticmethod
    def count_rows(y: np.ndarray, n_rows: int) -> np.ndarray:
        return np.count_nonzero(y.reshape(n_rows, -1), axis=1).astype(np.int64)

    @staticmethod
    def all_finite(s: np.ndarray) -> bool:
        return bool(np.isfinite(s).all())

    @staticmethod
    def select(s: np.ndarray, y: np.ndarray) -> np.ndarray:
        return s[y]

    @staticmethod
    def sort(s: np.ndarray) -> np.ndarray:
        return np.sort(s)

    @staticmethod
    def sort_stable(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        perm = np.argsort(s, kind="stable")
        return s[perm], perm

    @staticmethod
    def run_starts(a: np.ndarray) -> np.ndarray:
        """Index of the first element of every run of equal values in a sorted array."""
        return np.flatnonzero(np.concatenate(([True], a[1:] != a[:-1]))) if a.size else np.zeros(0, np.intp)

    @staticmethod
    def take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return a[idx]

    @staticmethod
    def searchsorted(a: np.ndarray, v: np.ndarray, right: bool) -> np.ndarray:
        return np.searchsorted(a, v, side="right" if right else "left")

    @staticmethod
    def bincount(x: np.ndarray, minlength: int) -> np.ndarray:
        return np.bincount(x, minlength=minlength)

    @staticmethod
    def index_key(region: np.ndarray, stride: int, k: np.ndarray) -> np.ndarray:
        """``region * stride + k`` in int64."""
        key = region.astype(np.int64) * stride
        key += k
        return key

    @staticmethod
    def device_array(a: np.ndarray) -> np.ndarray:
        return a

    @staticmethod
    def to_numpy(a: np.ndarray) -> np.ndarray:
        return np.asarray(a)


class TorchOps:
    """The same operations on torch tensors on ``device`` (CUDA, or CPU for testing)."""

    name = "torch"

    def __init__(self, device: str | torch.device) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def _tensor(self, x: Any) -> torch.Tensor:
        torch = self.torch
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        return t.detach().to(self.device)

    def labels(self, x: Any, name: str) -> torch.Tensor:
        t = self._tensor(x).reshape(-1)
        if t.numel() == 0:
            raise ValueError(f"{name} is empty")
        if t.dtype == self.torch.bool:
            return t
        if t.is_complex():
            raise ValueError(f"{name} must be a bool or numeric 0/1 array, got dtype {t.dtype}")
        is_one = t == 1
        ok = is_one | (t == 0)
        if not bool(ok.all()):
            raise _bad_labels(self.torch.unique(t[~ok])[:5].tolist(), name)
        return is_one

    def scores(self, x: Any, name: str) -> torch.Tensor:
        torch = self.torch
        t = self._tensor(x).reshape(-1)
        if t.dtype in (torch.float16, torch.float32, torch.float64):
            return t
        if not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
            return t.to(torch.float64)  # integers, as on the numpy path
        raise ValueError(f"{name} must be real numbers (float16/32/64 or integer), got {t.dtype}")

    def dtype(self, s: torch.Tensor) -> np.dtype:
        return np.dtype(str(s.dtype).removeprefix("torch."))

    def count(self, y: torch.Tensor) -> int:
        return int(self.torch.count_nonzero(y))

    def count_rows(self, y: torch.Tensor, n_rows: int) -> np.ndarray:
        return self.to_numpy(y.reshape(n_rows, -1).sum(dim=1, dtype=self.torch.int64))

    def all_finite(self, s: torch.Tensor) -> bool:
        return bool(self.torch.isfinite(s).all())

    @staticmethod
    def select(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return s[y]

    def sort(self, s: torch.Tensor) -> torch.Tensor:
        return self.torch.sort(s).values

    def sort_stable(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, perm = self.torch.sort(s, stable=True)
        return values, perm

    def run_starts(self, a: torch.Tensor) -> torch.Tensor:
        first = self.torch.ones(a.numel(), dtype=self.torch.bool, device=a.device)
        first[1:] = a[1:] != a[:-1]
        return self.torch.nonzero(first).reshape(-1)

    @staticmethod
    def take(a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return a[idx]

    def searchsorted(self, a: torch.Tensor, v: torch.Tensor, right: bool) -> torch.Tensor:
        return self.torch.searchsorted(a, v, right=right)

    def bincount(self, x: torch.Tensor, minlength: int) -> torch.Tensor:
        return self.torch.bincount(x, minlength=minlength)

    def index_key(self, region: torch.Tensor, stride: int, k: torch.Tensor) -> torch.Tensor:
        return region.to(self.torch.int64) * stride + k

    def device_array(self, a: np.ndarray) -> torch.Tensor:
        return self._tensor(a)

    @staticmethod
    def to_numpy(a: torch.Tensor) -> np.ndarray:
        return a.detach().cpu().numpy()


def get_ops(
    device: str | torch.device | None = None, backend: str | None = None, like: Any = None
) -> NumpyOps | TorchOps:
    """The back-end for a metrics device.

    Args:
        device: ``None`` -- the data's own place: numpy for arrays and CPU tensors, torch on
            the tensor's device for a CUDA tensor ``like`` (never copied to the host);
            ``"cpu"`` -- numpy; ``"cuda"``, ``"cuda:N"`` or a ``torch.device`` -- torch there.
        backend: ``"numpy"`` or ``"torch"`` to force one (``backend="torch", device="cpu"``
            runs the torch code on CPU tensors, for tests); ``None`` chooses as above.
        like: the maps, to read the device of a tensor when ``device`` is ``None``.

    Raises:
        ValueError: for an unknown back-end, or numpy asked for a non-CPU device.
    """
    if device is None and is_tensor(like) and like.device.type != "cpu":
        device = like.device
    dev = "cpu" if device is None else str(device)
    if backend not in (None, "numpy", "torch"):
        raise ValueError(f"backend must be None, 'numpy' or 'torch', got {backend!r}")
    if backend == "torch" or (backend is None and dev != "cpu"):
        return TorchOps(dev)
    if dev != "cpu":
        raise ValueError(f"the numpy back-end runs on the CPU only, not on {dev!r}")
    return NumpyOps()
