"""The pure parts of ``engine.distributed`` without torchrun: which items a rank takes
(``Dist.shard``, ``Dist.split``) and how rank 0 merges a category's shares back into order
(``gather_category``, with a stand-in ``Dist`` whose ``gather`` returns given parts).

Expected values are worked out by hand below; the torchrun tests (test_distributed.py) check
the same things end to end, in minutes instead of milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from engine.distributed import Dist, gather_category


def test_one_process_is_rank_0_of_1_and_not_distributed():
    d = Dist()
    assert (d.rank, d.world, d.local_rank) == (0, 1, 0)
    assert d.main and not d.enabled
    assert Dist(0, 2).enabled and Dist(0, 2).main
    assert Dist(1, 2).enabled and not Dist(1, 2).main
    # a frozen dataclass with properties, not methods
    assert isinstance(type(d).__dict__["main"], property)
    assert isinstance(type(d).__dict__["enabled"], property)


def test_shard_is_strided_by_rank():
    items = list("abcdefg")  # 7 items over 3 ranks: a d g | b e | c f
    assert Dist(0, 3).shard(items) == ["a", "d", "g"]
    assert Dist(1, 3).shard(items) == ["b", "e"]
    assert Dist(2, 3).shard(items) == ["c", "f"]
    assert Dist().shard(items) == items


@pytest.mark.parametrize("n, world, parts", [
    (7, 3, [[0, 1, 2], [3, 4], [5, 6]]),  # 7 = 3 + 2 + 2: the first n % w ranks take one more
    (6, 3, [[0, 1], [2, 3], [4, 5]]),
    (8, 3, [[0, 1, 2], [3, 4, 5], [6, 7]]),
    (2, 3, [[0], [1], []]),  # a short last batch leaves rank 2 nothing
    (0, 2, [[], []]),
    (5, 1, [[0, 1, 2, 3, 4]]),
    (9, 4, [[0, 1, 2], [3, 4], [5, 6], [7, 8]]),
])
def test_split_is_contiguous_and_sizes_differ_by_at_most_one(n, world, parts):
    batch = list(range(n))
    assert [Dist(r, world).split(batch) for r in range(world)] == parts


@dataclass(frozen=True)
class _Gathered(Dist):
    """A ``Dist`` whose ``gather`` hands back the given parts on rank 0 (None elsewhere)."""

    parts: tuple = ()

    def gather(self, obj):
        return list(self.parts) if self.main else None


def _part(positions, n_stages=2, n_banks=1, images=None, seconds=0.0):
    """A rank's share: every array value encodes its image's position p (value 10 * p + k)."""
    p = torch.tensor(positions, dtype=torch.float32)
    n = len(positions)
    return {
        "logits": [(10 * p + s).reshape(n, 1, 1, 1).expand(n, 2, 2, 2).clone()
                   for s in range(n_stages)],
        "distances": [[(10 * p + 5 + b + s).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
                       for s in range(n_stages)] for b in range(n_banks)],
        "text_score": (np.array(positions, dtype=np.float64) / 10),
        "gt_px": np.array(positions, dtype=np.int64).reshape(n, 1, 1).repeat(3, 1).repeat(3, 2),
        "gt_sp": np.array([q % 2 for q in positions], dtype=np.int64),
        "paths": [f"img{q}.png" for q in positions],
        "positions": list(positions),
        "backbone_images": len(positions) if images is None else images,
        "backbone_seconds": seconds,
    }


def test_gather_category_merges_the_shares_back_into_the_category_order():
    # rank 0 took images 0, 2, 4; rank 1 took 1, 3; rank 2 had nothing (a short category)
    empty = _part([], n_stages=0, n_banks=0)  # an empty share carries no stage lists
    parts = (empty, _part([0, 2, 4], images=3, seconds=2.0), _part([1, 3], images=2, seconds=5.0))
    out = gather_category(_Gathered(0, 3, parts=parts), {"unused": True}, n_banks=1)
    order = [0, 1, 2, 3, 4]
    assert out["positions"] == order
    assert out["paths"] == [f"img{q}.png" for q in order]
    assert len(out["logits"]) == 2 and len(out["distances"]) == 1 and len(out["distances"][0]) == 2
    for s in range(2):
        assert out["logits"][s][:, 0, 0, 0].tolist() == [10.0 * q + s for q in order]
        assert out["distances"][0][s][:, 0, 0, 0].tolist() == [10.0 * q + 5 + s for q in order]
    np.testing.assert_array_equal(out["text_score"], [0.0, 0.1, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(out["gt_px"][:, 1, 2], order)
    np.testing.assert_array_equal(out["gt_sp"], [0, 1, 0, 1, 0])
    assert out["backbone_images"] == 5  # summed over the ranks
    assert out["backbone_seconds"] == 5.0  # the slowest rank: they ran side by side


def test_gather_category_with_two_banks_and_shares_in_any_rank_order():
    parts = (_part([3, 1], n_banks=2), _part([0, 2], n_banks=2))
    out = gather_category(_Gathered(0, 2, parts=parts), {}, n_banks=2)
    assert out["positions"] == [0, 1, 2, 3]
    assert [len(b) for b in out["distances"]] == [2, 2]
    assert out["distances"][1][1][:, 0, 0, 0].tolist() == [10.0 * q + 7 for q in range(4)]
    assert out["paths"] == ["img0.png", "img1.png", "img2.png", "img3.png"]


def test_gather_category_when_one_rank_had_every_image():
    """A one-image category under two ranks: rank 1's share is empty and is left out."""
    parts = (_part([0], images=1, seconds=1.5), _part([], n_stages=0, n_banks=0, seconds=0.1))
    out = gather_category(_Gathered(0, 2, parts=parts), {}, n_banks=1)
    assert out["positions"] == [0] and out["paths"] == ["img0.png"]
    assert [t[:, 0, 0, 0].tolist() for t in out["logits"]] == [[0.0], [1.0]]
    assert [t[:, 0, 0, 0].tolist() for t in out["distances"][0]] == [[5.0], [6.0]]
    assert (out["backbone_images"], out["backbone_seconds"]) == (1, 1.5)


def test_gather_category_on_one_process_and_on_other_ranks():
    res = _part([0, 1])
    assert gather_category(Dist(), res, n_banks=1) is res  # one process: unchanged
    assert gather_category(_Gathered(1, 2, parts=(res, res)), res, n_banks=1) is None
