"""The frozen CLIP stage backbone and the projection checkpoints (METHOD §1, §6).

Tiny random models from the golden fixtures: a ViT with 8 blocks and a ModifiedResNet.
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import RN, VIT, require

from errors import ConfigError
from models.backbone import ClipBackbone, resolve_stages
from models.projection import CHECKPOINT_KEY

from engine.core.loading import build_model, load_clip, load_projections, read_checkpoint

B = 2


def _images(n: int, s: int, seed: int) -> torch.Tensor:
    """[n, 3, s, s] seeded random input (never the global generator)."""
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(seed))


def _cfg(fx):
    return json.loads(fx.config.read_text())


@pytest.fixture(scope="module")
def vit_model():
    require(VIT.weights)
    model, _ = build_model(VIT.model_name, str(VIT.weights), VIT.image_size(), VIT.stages,
                           VIT.stages, config_path=str(VIT.config))
    return model


@pytest.fixture(scope="module")
def rn_model():
    require(RN.weights)
    model, _ = build_model(RN.model_name, str(RN.weights), RN.image_size(), RN.stages,
                           RN.stages, config_path=str(RN.config))
    return model


def test_vit_stage_tokens(vit_model):
    s = VIT.image_size()
    cfg = _cfg(VIT)
    width, patch = cfg["vision_cfg"]["width"], cfg["vision_cfg"]["patch_size"]
    hw = (s // patch) ** 2
    out = vit_model.backbone(_images(B, s, 0))
    assert sorted(out["patch_tokens"]) == sorted(out["class_tokens"]) == VIT.stages
    for st in VIT.stages:
        assert out["patch_tokens"][st].shape == (B, hw, width)  # no class token
        assert out["class_tokens"][st].shape == (B, width)
    assert out["image_embed"].shape == (B, cfg["embed_dim"])
    assert torch.allclose(out["image_embed"].norm(dim=-1), torch.ones(B), atol=1e-5)


def test_vit_stage_is_raw_block_output(vit_model):
    """Stage n = residual stream after block n (no ln_post/proj); embedding = ln_post(cls) @ proj."""
    s = VIT.image_size()
    x = _images(B, s, 1)
    out = vit_model.backbone(x)
    v = vit_model.backbone.clip.visual
    captured = {}
    hooks = [v.transformer.resblocks[st - 1].register_forward_hook(
        lambda m, i, o, st=st: captured.__setitem__(st, o)) for st in VIT.stages]
    try:
        with torch.no_grad():
            pooled = v(x)
    finally:
        for h in hooks:
            h.remove()
    for st in VIT.stages:
        ref = captured[st]
        if ref.shape[0] != B:  # LND layout in older towers
            ref = ref.permute(1, 0, 2)
        # the block output [B, 1 + HW, C] = class token, then the patch tokens
        torch.testing.assert_close(out["class_tokens"][st], ref[:, 0], rtol=0, atol=1e-6)
        torch.testing.assert_close(out["patch_tokens"][st], ref[:, 1:], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["image_embed"], torch.nn.functional.normalize(pooled, dim=-1),
                               rtol=0, atol=1e-6)


def test_resnet_stage_tokens(rn_model):
    s = RN.image_size()
    width = _cfg(RN)["vision_cfg"]["width"]
    x = _images(B, s, 2)
    out = rn_model.backbone(x)
    assert out["class_tokens"] == {}  # a ResNet has no class token
    v = rn_model.backbone.clip.visual
    with torch.no_grad():
        h = v.stem(x)
        for st in RN.stages:
            h = getattr(v, f"layer{st}")(h)
            c, side = width * 2 ** (st + 1), s // (4 * 2 ** (st - 1))
            tokens = out["patch_tokens"][st]
            assert tokens.shape == (B, side * side, c)  # no class token
            # [B, C, H, W] read row-major as [B, H*W, C]
            torch.testing.assert_close(tokens, h.flatten(2).transpose(1, 2), rtol=0, atol=1e-5)
        pooled = v.attnpool(h)
    torch.testing.assert_close(out["image_embed"], torch.nn.functional.normalize(pooled, dim=-1),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("which", ["vit", "rn"])
def test_backbone_is_frozen(which, request):
    model = request.getfixturevalue(f"{which}_model")
    bb = model.backbone
    assert all(not p.requires_grad for p in bb.parameters())
    model.train()
    bb.train()
    assert not bb.training
    assert not any(m.training for m in bb.modules())
    assert all(p.requires_grad for p in model.projections.parameters())
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in model.projections.parameters()}
    model.eval()


def test_backbone_no_gradient_projection_gradient(vit_model):
    """One backward pass: every projection parameter gets a gradient, no backbone parameter."""
    s = VIT.image_size()
    g = torch.Generator().manual_seed(3)
    text = torch.nn.functional.normalize(torch.randn(_cfg(VIT)["embed_dim"], 2, generator=g), dim=0)
    vit_model.zero_grad(set_to_none=True)
    out = vit_model(_images(B, s, 4), text)
    sum(l.softmax(1)[:, 1].mean() for l in out["stage_logits"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vit_model.projections.parameters())
    assert all(p.grad is None for p in vit_model.backbone.parameters())
    vit_model.zero_grad(set_to_none=True)


def test_resnet_batchnorm_uses_running_statistics(rn_model):
    """Eval mode: an image's tokens do not depend on the rest of the batch."""
    s = RN.image_size()
    x = _images(4, s, 5)
    rn_model.train()  # must not switch the backbone to batch statistics
    full = rn_model.backbone(x)
    one = rn_model.backbone(x[:1])
    for st in RN.stages:
        a, b = full["patch_tokens"][st][:1], one["patch_tokens"][st]
        # With running statistics the two are the same computation; only the convolution's
        # float32 summation order may differ with the batch size: a few ulps of the values
        # summed (eps = 1.2e-7), so a relative tolerance of 1e-5 plus 1e-6 of the stage's
        # largest magnitude for values near 0. Batch statistics would differ by O(1).
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(a.abs().max()))
    rn_model.eval()


def test_resolve_stages():
    assert resolve_stages([6, 12, 18, 24], 24) == [6, 12, 18, 24]
    assert resolve_stages(2, 24) == [23, 24]
    assert resolve_stages([-1], 8) == [8]
    for bad in ([0], [9], [-9], []):
        with pytest.raises(ValueError):
            resolve_stages(bad, 8)
    with pytest.raises(ValueError):
        resolve_stages(9, 8)


def test_stage_validation_in_backbone_and_build():
    require(VIT.weights)
    clip = load_clip(VIT.model_name, str(VIT.weights), VIT.image_size(), str(VIT.config))
    with pytest.raises(ValueError, match="out of range"):
        ClipBackbone(clip, [9], VIT.image_size())
    with pytest.raises(ConfigError, match="features_list"):
        build_model(VIT.model_name, str(VIT.weights), VIT.image_size(), [2, 4, 6, 9],
                    config_path=str(VIT.config))
    with pytest.raises(ConfigError, match="few_shot_features"):
        build_model(VIT.model_name, str(VIT.weights), VIT.image_size(), VIT.stages, [0],
                    config_path=str(VIT.config))
    require(RN.weights)
    with pytest.raises(ConfigError, match="1..4"):
        build_model(RN.model_name, str(RN.weights), RN.image_size(), [1, 2, 3, 5],
                    config_path=str(RN.config))


def test_separate_few_shot_stages_one_pass():
    """--few_shot_features may differ from --features_list; one pass exposes the union."""
    require(VIT.weights)
    model, _ = build_model(VIT.model_name, str(VIT.weights), VIT.image_size(), [2, 8], [3, 8],
                           config_path=str(VIT.config))
    assert model.backbone.stages == [2, 3, 8]
    assert model.features_list == [2, 8] and model.few_shot_features == [3, 8]
    assert len(model.projections.fc) == 2


# --- checkpoint format (METHOD §6) ---------------------------------------------------------------

def test_fixture_checkpoints_load_weights_only():
    for fx in (VIT, RN):
        require(fx.checkpoint)
        ckpt = torch.load(fx.checkpoint, map_location="cpu", weights_only=True)
        assert set(ckpt[CHECKPOINT_KEY]) == {f"fc.{i}.{p}" for i in range(len(fx.stages))
                                             for p in ("weight", "bias")}


@pytest.mark.parametrize("which", ["vit", "rn"])
def test_projection_checkpoint_round_trip(which, request, tmp_path):
    model = request.getfixturevalue(f"{which}_model")
    fx = VIT if which == "vit" else RN
    g = torch.Generator().manual_seed(6)
    sd = {k: torch.randn(v.shape, generator=g) for k, v in model.projections.state_dict().items()}
    path = tmp_path / "epoch_1.pth"
    # the released format plus extra keys (config, epoch) that a training run may add
    torch.save({CHECKPOINT_KEY: sd, "epoch": 1, "config": {"features_list": fx.stages}}, path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw[CHECKPOINT_KEY]) == set(sd)
    assert read_checkpoint(path)["epoch"] == 1
    saved = {k: v.clone() for k, v in model.projections.state_dict().items()}
    try:
        load_projections(model.projections, path)
        for k, v in model.projections.state_dict().items():
            assert torch.equal(v, sd[k])
    finally:
        model.projections.load_state_dict(saved)
    # and the fixture's own checkpoint gives back exactly its tensors
    load_projections(model.projections, fx.checkpoint)
    ref = torch.load(fx.checkpoint, map_location="cpu", weights_only=True)[CHECKPOINT_KEY]
    for k, v in model.projections.state_dict().items():
        assert torch.equal(v, ref[k])
