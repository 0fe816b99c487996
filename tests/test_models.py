"""The pure model pieces: memory-bank lifecycle and state, the nearest-neighbour search by
chunks, the map formulas (one place each; METHOD §4, §5) and the maps built chunk by chunk."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.anomaly_maps import (
    few_shot_map,
    final_maps,
    image_scores,
    nearest_distance,
    stage_probabilities,
    token_grid,
    upsample,
    zero_shot_map,
    zero_shot_maps,
)
from models.memory_bank import MemoryBank


def _tokens(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_memory_bank_before_setup_raises():
    bank = MemoryBank([2, 4])
    assert not bank.is_set
    with pytest.raises(RuntimeError, match="before setup"):
        bank.distances({2: _tokens(1, 9, 8), 4: _tokens(1, 9, 8)})


def test_memory_bank_state_is_complete_and_loads_into_a_fresh_bank():
    refs = ["a/0.png", "a/1.png", "a/0.png"]  # duplicates kept, as released
    toks = {2: _tokens(3, 9, 8, seed=1), 4: _tokens(3, 9, 16, seed=2)}
    bank = MemoryBank([2, 4]).setup("bottle", toks, refs)
    sd = bank.state_dict()
    fresh = MemoryBank([2, 4])
    fresh.load_state_dict(sd)
    assert fresh.class_name == "bottle" and fresh.references == refs and fresh.k_shot == 3
    query = {2: _tokens(2, 9, 8, seed=3), 4: _tokens(2, 9, 16, seed=4)}
    for a, b in zip(bank.distances(query), fresh.distances(query)):
        assert torch.equal(a, b)
    assert fresh.bank(4).shape == (27, 16)
    with pytest.raises(ValueError, match="stages"):
        MemoryBank([2]).load_state_dict(sd, strict=False)


@pytest.mark.parametrize("chunk", [1, 7, 8192])
def test_nearest_distance_by_chunks_equals_the_direct_formula(chunk):
    """A bank larger than one chunk (the real ViT-L bank at k = 10 is 13,690 rows)."""
    tokens, bank = _tokens(2, 16, 8, seed=5), _tokens(37, 8, seed=6)
    got = nearest_distance(tokens, bank, chunk=chunk)  # [2, 1, 4, 4]
    cos = F.normalize(tokens, dim=-1) @ F.normalize(bank, dim=-1).T  # [2, 16, 37]
    want = (1 - cos.amax(dim=-1)).reshape(2, 1, 4, 4)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # the bank may hold raw or normalised tokens: the distance normalises both sides itself
    torch.testing.assert_close(nearest_distance(tokens, F.normalize(bank, dim=-1), chunk), got,
                               rtol=0, atol=1e-6)


def test_zero_shot_map_is_the_abnormal_channel_of_the_stage_probabilities():
    logits = [_tokens(2, 2, 3, 3, seed=7), _tokens(2, 2, 3, 3, seed=8)]
    probs = stage_probabilities(logits, 12)
    assert all(p.shape == (2, 2, 12, 12) for p in probs)
    torch.testing.assert_close(zero_shot_map(logits, 12), probs[0][:, 1] + probs[1][:, 1])
    # upsample first, then softmax (METHOD §4): not the other way round
    other = upsample(torch.softmax(logits[0], dim=1), 12)[:, 1]
    assert not torch.allclose(probs[0][:, 1], other)


@pytest.mark.parametrize("chunk", [1, 3, 7, 16])
def test_maps_built_chunk_by_chunk_equal_the_formulas_on_the_whole_batch(chunk):
    """zero_shot_maps and final_maps on 7 images, ``chunk`` at a time (a last chunk shorter than
    the others with 3), at a map side (5) smaller than the number of images: every image's map
    is the formula's over the whole batch at once. Within 1e-6, not bit for bit: a float32
    kernel may vectorise a batch of 1 unlike a batch of 7."""
    logits = [_tokens(7, 2, 4, 4, seed=s) for s in (1, 2, 3)]
    distances = [_tokens(7, 1, 4, 4, seed=s).abs() for s in (4, 5)]
    whole = zero_shot_map(logits, 5)
    zs = zero_shot_maps(logits, 5, torch.device("cpu"), chunk=chunk)
    assert zs.shape == (7, 5, 5) and zs.dtype == torch.float32
    torch.testing.assert_close(zs, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(final_maps(zs, distances, 5, chunk=chunk),
                               whole + few_shot_map(distances, 5), rtol=0, atol=1e-6)
    assert final_maps(zs, None, 5) is zs and final_maps(zs, [], 5) is zs  # zero-shot: as is


def test_image_scores_with_one_text_or_one_per_image():
    """softmax(100 f T)[abnormal] (METHOD §5) worked image by image, against one [D, 2] text for
    the batch and against a [B, D, 2] text of each image's own category (training batches)."""
    f = F.normalize(_tokens(3, 8, seed=11), dim=-1)
    texts = [F.normalize(_tokens(8, 2, seed=s), dim=0) for s in (12, 13, 14)]

    def by_hand(i: int, t: torch.Tensor) -> torch.Tensor:
        return torch.softmax(100.0 * (f[i] * t.T).sum(dim=1), dim=0)[1]

    torch.testing.assert_close(image_scores(f, texts[0]),
                               torch.stack([by_hand(i, texts[0]) for i in range(3)]),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(image_scores(f, torch.stack(texts)),
                               torch.stack([by_hand(i, texts[i]) for i in range(3)]),
                               rtol=0, atol=1e-6)


def test_token_grid_of_the_released_sizes_and_a_count_that_is_no_square():
    """37 x 37 = 1369 tokens (ViT-L/14 at 518 px), 24 x 24 = 576 (at 336), 6 x 6 (the tiny
    model at 84); one token more or less is no square grid: a clear error, not a wrong side."""
    assert [token_grid(n) for n in (1369, 576, 36, 1)] == [37, 24, 6, 1]
    for n in (1368, 1370, 577, 35, 37, 2):
        with pytest.raises(ValueError, match=f"{n} patch tokens do not form a square grid"):
            token_grid(n)
