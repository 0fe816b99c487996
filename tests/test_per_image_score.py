"""The per-image few-shot score against hand-worked values and a direct leave-one-out computation.

    score = 0.5 * (text + clip((max map - mu) / mu, 0, 1))
    mu    = mean over the distinct references of max(final map of that reference against a bank
            of the *other* references), every copy of it left out

The direct computation below is written from those formulas with torch alone (linear layers,
L2 norms, 100 * P . T, bilinear upsampling with align_corners=True, softmax, 1 - max cosine);
it shares nothing with ``engine.core.inference`` but the model's weights.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import VIT, require

from models.anomaly_maps import combined_image_scores, per_image_scores

from engine.core.inference import normal_level
from engine.core.loading import build_model

SIZE = 84
STAGES = [2, 4, 6, 8]
FEW = [4, 8]  # memory stages that differ from the map stages, as --few_shot_features allows


@pytest.fixture(scope="module")
def tiny():
    require(VIT.weights, VIT.config)
    model, _ = build_model(VIT.model_name, str(VIT.weights), SIZE, STAGES, FEW,
                           config_path=str(VIT.config))
    g = torch.Generator().manual_seed(3)
    info = model.backbone.info
    tokens = {p: {s: torch.randn(info[s].grid ** 2, info[s].dim, generator=g) for s in info}
              for p in ("a.png", "b.png", "c.png")}
    text = F.normalize(torch.randn(model.backbone.embed_dim, 2, generator=g), dim=0)
    return model, tokens, text


def _up(x: torch.Tensor) -> torch.Tensor:
    """[L, c] on a square grid -> [c, S, S] (bilinear, align_corners=True)."""
    h = int(round(x.shape[0] ** 0.5))
    return F.interpolate(x.T.reshape(1, -1, h, h), size=SIZE, mode="bilinear",
                         align_corners=True)[0]


def _direct_map(model, own: dict, bank: list[dict], text: torch.Tensor) -> torch.Tensor:
    m = torch.zeros(SIZE, SIZE)
    for i, s in enumerate(STAGES):
        fc = model.projections.fc[i]
        p = F.normalize(own[s] @ fc.weight.T + fc.bias, dim=-1)
        m += torch.softmax(_up(100 * p @ text), dim=0)[1]
    for s in FEW if bank else []:
        mem = F.normalize(torch.cat([b[s] for b in bank]), dim=-1)
        cos = F.normalize(own[s], dim=-1) @ mem.T
        m += _up((1 - cos.max(dim=1).values)[:, None])[0]
    return m


def test_normal_level_is_the_leave_one_out_mean_of_map_maxima(tiny):
    model, tokens, text = tiny
    refs = ["a.png", "b.png", "a.png", "c.png"]  # a duplicate: every copy of it is left out
    direct = []
    for p in ("a.png", "b.png", "c.png"):
        others = [tokens[q] for q in refs if q != p]
        direct.append(float(_direct_map(model, tokens[p], others, text).max()))
    with torch.no_grad():
        mu = normal_level(model, refs, tokens, text, SIZE)
    assert mu == pytest.approx(np.mean(direct), rel=1e-5)
    # not the same thing as letting each reference see itself (its memory term would be 0)
    own_in_bank = [float(_direct_map(model, tokens[p], [tokens[q] for q in refs], text).max())
                   for p in ("a.png", "b.png", "c.png")]
    assert abs(mu - np.mean(own_in_bank)) > 1e-3


def test_one_distinct_reference_gives_its_zero_shot_peak(tiny):
    model, tokens, text = tiny
    with torch.no_grad():
        mu = normal_level(model, ["b.png", "b.png"], tokens, text, SIZE)
    assert mu == pytest.approx(float(_direct_map(model, tokens["b.png"], [], text).max()), rel=1e-5)


def test_per_image_score_by_hand():
    text = np.array([0.2, 0.2, 0.6, 0.9, 0.4])
    peak = np.array([1.0, 2.0, 3.0, 4.0, 9.0])  # mu = 2: below, at, 1.5 mu, exactly 2 mu, far above
    # s = clip((peak - 2) / 2, 0, 1) = 0, 0, 0.5, 1, 1
    expected = [0.5 * (0.2 + 0), 0.5 * (0.2 + 0), 0.5 * (0.6 + 0.5), 0.5 * (0.9 + 1), 0.5 * (0.4 + 1)]
    np.testing.assert_allclose(per_image_scores(text, peak, 2.0), expected, rtol=0, atol=1e-12)
    # a score depends on its own image alone: scoring one image equals scoring it among others
    assert per_image_scores(text[2:3], peak[2:3], 2.0)[0] == per_image_scores(text, peak, 2.0)[2]


def test_per_image_score_below_one_and_at_zero_normal_level():
    # mu = 0.5: s = clip((0.6 - 0.5) / 0.5) = 0.2 (mu below 1 is used as it is)
    np.testing.assert_allclose(per_image_scores([0.4], [0.6], 0.5), [0.5 * (0.4 + 0.2)],
                               rtol=0, atol=1e-12)
    # mu = 0 (references whose maps are all zero): any positive peak is at the top, no NaN
    np.testing.assert_allclose(per_image_scores([0.4, 0.4], [0.3, 0.0], 0.0),
                               [0.5 * (0.4 + 1), 0.5 * 0.4], rtol=0, atol=1e-12)


def test_one_formula_for_numpy_and_the_exported_graph():
    """``per_image_score`` serves both the numpy path (float64) and the export graph (torch
    float32 tensors): hand-worked values, text 0.4 and mu 1.0 -- a map peak of 0.5 is below
    the normal level (s = 0), 1.5 half-way (s = 0.5), 3.0 past twice it (s = 1)."""
    from models.anomaly_maps import per_image_score

    text, peaks, want = [0.4, 0.4, 0.4], [0.5, 1.5, 3.0], [0.2, 0.45, 0.7]
    np.testing.assert_allclose(per_image_scores(np.array(text), np.array(peaks), 1.0), want,
                               rtol=0, atol=1e-15)
    got = per_image_score(torch.tensor(text), torch.tensor(peaks), 1.0)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-7)  # float32 rounding
    # and a normal level of 0 is held at 1e-12 in both, never a division by zero
    assert per_image_score(torch.tensor([0.0]), torch.tensor([0.0]), 0.0).item() == 0.0
    assert per_image_scores(np.array([0.0]), np.array([1.0]), 0.0)[0] == 0.5


def test_released_few_shot_score_by_hand():
    text = np.array([0.2, 0.4, 0.6, 0.8])
    peak = np.array([1.0, 3.0, 2.0, 5.0])  # min 1, max 5: minmax = 0, 0.5, 0.25, 1
    expected = [0.5 * (0.2 + 0), 0.5 * (0.4 + 0.5), 0.5 * (0.6 + 0.25), 0.5 * (0.8 + 1)]
    np.testing.assert_allclose(combined_image_scores(text, peak), expected, rtol=0, atol=1e-12)


def test_released_few_shot_score_when_every_map_has_the_same_peak():
    with pytest.warns(UserWarning, match="share one maximum"):
        got = combined_image_scores(np.array([0.3, 0.9]), np.array([2.0, 2.0]))
    np.testing.assert_allclose(got, [0.15, 0.45], rtol=0, atol=1e-12)  # map term 0, not NaN


@pytest.mark.parametrize("mu, peak, text, expected", [
    (0.5, 0.6, 0.3, 0.5 * (0.3 + 0.2)),  # a normal level below 1: s = (0.6 - 0.5) / 0.5 = 0.2
    (0.0, 0.0, 0.4, 0.5 * (0.4 + 0.0)),  # mu = 0 is taken as a tiny positive level, not 0/0
    (0.0, 1e-3, 0.4, 0.5 * (0.4 + 1.0)),  # ... so any peak above it is far above: s = 1
])
def test_per_image_score_at_small_normal_levels(mu, peak, text, expected):
    got = per_image_scores(np.array([text]), np.array([peak]), mu)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, [expected], rtol=0, atol=1e-12)
