"""Several processes with ``torchrun``: ranks, devices, sharding, gathering (torch.distributed).

A plain ``python test.py`` has no ``WORLD_SIZE`` and stays one process with no distributed
set-up. Under ``torchrun --nproc_per_node N`` (and ``--nnodes/--node_rank`` as torchrun defines
them) each rank takes ``cuda:LOCAL_RANK`` with NCCL when GPUs are present, the CPU with gloo
otherwise. Sharding is by batch: the list every rank builds identically is cut into the batches one
process would run (``batch_size`` items each, in order, the last one shorter), and rank r takes
batches r, r + N, r + 2N, ... of them. So every image goes through the model in exactly the batch
it has in a one-process run, and the two runs do the same float operations on every CPU: a batch
of another size can take other matrix-multiply kernels, which differ in the last bits. Results
are gathered
on rank 0 (objects over the CPU), which alone writes the outputs. If a rank fails, torchrun
stops the others (its exit status is non-zero); collective calls also time out after
``APRILGAN_DIST_TIMEOUT`` seconds (default 1800) so nothing hangs forever.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def batch_shard(self, n: int, batch_size: int, first_batch: int = 0) -> list[int]:
        """The positions (in ``range(n)``) of this rank's items: whole batches.

        Items ``[j * batch_size, (j + 1) * batch_size)`` form batch j, and batch j goes to rank
        ``(first_batch + j) % world`` (``first_batch``: the number of batches before this list,
        so consecutive lists, such as the categories of a run, keep taking turns). Every batch
        but the list's last is full, so batching a rank's items again by ``batch_size`` gives
        back exactly these batches.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        return [i for i in range(n) if (first_batch + i // batch_size) % self.world == self.rank]

    def split(self, batch: Sequence[T]) -> list[T]:
        """This rank's contiguous part of one global batch (sizes differ by at most one; a
        short last batch may leave a rank nothing)."""
        n, w = len(batch), self.world
        lo = self.rank * (n // w) + min(self.rank, n % w)
        return list(batch[lo:lo + n // w + (self.rank < n % w)])

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over the ranks (``t`` itself for one process)."""
        if not self.enabled:
            return t
        t = t.clone()
        torch.distributed.all_reduce(t)
        return t

    def device(self, asked: str | None) -> str | None:
        """``cuda:LOCAL_RANK`` under torchrun with GPUs (``--device`` for one process)."""
        if self.enabled and torch.cuda.is_available() and (asked is None or asked.startswith("cuda")):
            return f"cuda:{self.local_rank}"
        return asked

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order), None elsewhere."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world if self.main else None
        torch.distributed.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_ok(self, ok: bool) -> bool:
        """True on every rank when every rank is ok (a failure anywhere fails everywhere)."""
        if not self.enabled:
            return ok
        flags = [None] * self.world
        torch.distributed.all_gather_object(flags, bool(ok))
        return all(flags)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


_CURRENT = Dist()


def setup() -> Dist:
    """Join the torchrun process group when launched by torchrun; a no-op otherwise."""
    global _CURRENT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _CURRENT = Dist()
        return _CURRENT
    import torch.distributed as td

    if not td.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        timeout = dt.timedelta(seconds=float(os.environ.get("APRILGAN_DIST_TIMEOUT", "1800")))
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        td.init_process_group(backend, timeout=timeout)
    _CURRENT = Dist(td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return _CURRENT


def current() -> Dist:
    return _CURRENT


def teardown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def gather_category(dist: Dist, res: dict, n_banks: int) -> dict | None:
    """Rank 0: every rank's share of a category's ``run_category`` results, merged back into
    the category's order (by ``positions``), counts summed; None on the other ranks."""
    if not dist.enabled:
        return res
    parts = dist.gather(res)
    if not dist.main:
        return None
    parts = [p for p in parts if p["positions"]]
    pos = [q for p in parts for q in p["positions"]]
    order = torch.as_tensor(sorted(range(len(pos)), key=pos.__getitem__), dtype=torch.long)

    def cat(items: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(items)[order]

    out = {"logits": [cat([p["logits"][s] for p in parts]) for s in range(len(parts[0]["logits"]))],
           "distances": [[cat([p["distances"][b][s] for p in parts])
                          for s in range(len(parts[0]["distances"][b]))] for b in range(n_banks)],
           "text_score": cat([torch.from_numpy(p["text_score"]) for p in parts]).numpy(),
           "gt_px": cat([torch.from_numpy(p["gt_px"]) for p in parts]).numpy(),
           "gt_sp": cat([torch.from_numpy(p["gt_sp"]) for p in parts]).numpy(),
           "paths": [q for _, q in sorted(zip(pos, [x for p in parts for x in p["paths"]]))],
           "positions": sorted(pos),
           "backbone_images": sum(p["backbone_images"] for p in parts),
           "backbone_seconds": max(p["backbone_seconds"] for p in parts)}
    return out
