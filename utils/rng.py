"""Global random-number-generator state as tensors, so checkpoints load with weights_only=True."""
from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict[str, torch.Tensor]:
    """Global RNG states as tensors (weights_only-loadable)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    out = {"torch": torch.get_rng_state(),
           "numpy": torch.from_numpy(np.append(keys.astype(np.int64), [pos, has_gauss])),
           "numpy_gauss": torch.tensor(gauss, dtype=torch.float64),
           "python": torch.tensor(py[1], dtype=torch.int64),
           "python_gauss": torch.tensor(float("nan") if py[2] is None else py[2], dtype=torch.float64)}
    if torch.cuda.is_available():
        out["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return out


def set_rng_state(st: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"].numpy()
    np.random.set_state(("MT19937", n[:-2].astype(np.uint32), int(n[-2]), int(n[-1]),
                         float(st["numpy_gauss"])))
    g = float(st["python_gauss"])
    random.setstate((3, tuple(int(x) for x in st["python"].tolist()), None if g != g else g))
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(st["cuda"]))


def setup_seed(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA), as the released scripts do."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
