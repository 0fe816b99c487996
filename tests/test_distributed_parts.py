"""The pure parts of ``engine.plumbing.distributed`` without torchrun: which items a rank takes
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

from engine.plumbing.distributed import Dist, gather_category


def test_one_process_is_rank_0_of_1_and_not_distributed():
    d = Dist()
    assert (d.rank, d.world, d.local_rank) == (0, 1, 0)
    assert d.main and not d.enabled
    assert Dist(0, 2).enabled and Dist(0, 2).main
    assert Dist(1, 2).enabled and not Dist(1, 2).main
    # a frozen dataclass with properties, not methods
    assert isinstance(type(d).__dict__["main"], property)
    assert isinstance(type(d).__dict__["enabled"], property)


@pytest.mark.parametrize("n, size, world, first, parts", [
    # 7 items in batches of 2: [0 1] [2 3] [4 5] [6]; batch j to rank j % 3
    (7, 2, 3, 0, [[0, 1, 6], [2, 3], [4, 5]]),
    # the same list after 4 earlier batches: batch j to rank (4 + j) % 3
    (7, 2, 3, 4, [[4, 5], [0, 1, 6], [2, 3]]),
    # a category of 5 with batches of 8: one batch, all on one rank, the other has none
    (5, 8, 2, 0, [[0, 1, 2, 3, 4], []]),
    (5, 8, 2, 1, [[], [0, 1, 2, 3, 4]]),
    (6, 3, 2, 0, [[0, 1, 2], [3, 4, 5]]),
    (5, 1, 2, 0, [[0, 2, 4], [1, 3]]),  # batches of one: strided by image
    (0, 4, 2, 0, [[], []]),
    (5, 2, 1, 3, [[0, 1, 2, 3, 4]]),  # one process takes everything
])
def test_batch_shard_gives_whole_one_process_batches(n, size, world, first, parts):
    assert [Dist(r, world).batch_shard(n, size, first) for r in range(world)] == parts


def test_a_rank_rebatching_its_items_gets_the_one_process_batches():
    """The property the any-CPU equality rests on: batching a rank's items by ``batch_size``
    again gives batches that are each one of the one-process batches, whole."""
    for n in range(0, 30):
        for size in (1, 2, 3, 8):
            one = {tuple(range(i, min(i + size, n))) for i in range(0, n, size)}
            for world in (1, 2, 3):
                seen = []
                for r in range(world):
                    mine = Dist(r, world).batch_shard(n, size, first_batch=n % 5)
                    got = [tuple(mine[i:i + size]) for i in range(0, len(mine), size)]
                    assert set(got) <= one, (n, size, world, r)
                    seen += got
                assert sorted(seen) == sorted(one)  # each batch on exactly one rank


def test_batch_shard_refuses_a_batch_size_below_one():
    with pytest.raises(ValueError, match="at least 1"):
        Dist(0, 2).batch_shard(4, 0)


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


def test_a_rank_with_no_batch_of_a_category_sends_an_empty_share():
    """Whole-batch shards often leave a rank nothing of a small category: its share (what
    ``concat_results`` makes of no batches) is empty and the gather leaves it out."""
    from engine.core.inference import concat_results

    empty = {**concat_results([], 1), "positions": []}
    assert empty["paths"] == [] and len(empty["text_score"]) == 0 and empty["backbone_images"] == 0
    assert empty["distances"] == [[]]
    out = gather_category(_Gathered(0, 2, parts=(empty, _part([0, 1, 2]))), {}, n_banks=1)
    assert out["positions"] == [0, 1, 2] and out["paths"] == ["img0.png", "img1.png", "img2.png"]
    np.testing.assert_array_equal(out["text_score"], [0.0, 0.1, 0.2])
