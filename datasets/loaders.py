"""DataLoaders over indexed samples, and stopping their workers at once after an error."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch.utils.data import DataLoader

from .anomaly_dataset import AnomalyDataset, Sample, collate


def loader(root: Path, samples: Sequence[Sample], image_size: int, batch_size: int,
           workers: int) -> DataLoader:
    """Ordered, non-augmented loader over ``samples`` (batches as ``collate`` makes them)."""
    ds = AnomalyDataset(root, samples, image_size)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate, pin_memory=False)


def stop_workers(it) -> None:
    """Stop a DataLoader iterator's worker processes now.

    After an error the iterator sits in a reference cycle with the traceback; left to the
    garbage collector, its shutdown can stall for 5 s waiting on a worker.
    """
    stop = getattr(it, "_shutdown_workers", None)
    if stop is not None:
        stop()
