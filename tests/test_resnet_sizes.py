"""ResNet CLIPs at image sizes that are not multiples of 32, against the released computation.

open_clip builds a ResNet's attention pool for S // 32 cells and never resizes the weights'
positional grid G, so the weights load for S // 32 == G (64-px weights: 64...95), and the stage
grids are floors (S = 80: 20, 10, 5, 2). Any such S where layer4's grid is G runs, and its
results must be the released computation's. That computation is written out below from
open_clip and torch alone (forward hooks on layer1..4, the checkpoint's linear layers, the
fixture's text features), independent of the project's code; at the fixture's own size it
reproduces the stored outputs of the released code, which is what vouches for it here.
"""
from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from conftest import RN, assert_user_error, load_predictions, require, run_test_main
from PIL import Image
from torchvision import transforms

MAP_TOL = 1e-4
SCORE_TOL = 1e-5
COMBINED_TOL = 5e-5
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def _model(size: int) -> torch.nn.Module:
    open_clip.add_model_config(str(RN.config))
    model = open_clip.create_model(RN.model_name, pretrained=str(RN.weights),
                                   force_image_size=size)
    return model.eval()


def _images(root, paths, size: int) -> torch.Tensor:
    """Released preprocessing: squash-resize (bicubic), centre crop, RGB, OpenAI normalisation."""
    tf = transforms.Compose([
        transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(size), lambda im: im.convert("RGB"), transforms.ToTensor(),
        transforms.Normalize(MEAN, STD)])
    return torch.stack([tf(Image.open(root / p)) for p in paths])


def _stages(model, x: torch.Tensor, stages: list[int]):
    """Tokens [B, H*W, C] of layer1..4 (row-major) and the normalised attention-pool output."""
    out = {}
    hooks = [getattr(model.visual, f"layer{n}").register_forward_hook(
        lambda m, i, o, n=n: out.__setitem__(n, o)) for n in stages]
    with torch.no_grad():
        emb = model.visual(x)
    for h in hooks:
        h.remove()
    tokens = [out[n].flatten(2).permute(0, 2, 1) for n in stages]
    return tokens, emb / emb.norm(dim=-1, keepdim=True)


def _up(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, L, c] on a square grid -> [B, c, S, S], bilinear with align_corners=True."""
    b, n, c = x.shape
    h = int(np.sqrt(n))
    return F.interpolate(x.permute(0, 2, 1).reshape(b, c, h, h), size=size, mode="bilinear",
                         align_corners=True)


def released(size: int, paths, classes, refs: dict | None = None):
    """Released zero-shot (and, with ``refs``, few-shot) maps [N, S, S] and text scores [N]."""
    root = RN.data("mvtec")
    model = _model(size)
    fc = torch.load(RN.checkpoint, weights_only=True)["trainable_linearlayer"]
    text = np.load(RN.expected / "rn_text_features.npz")
    maps, scores = [], []
    for path, cls in zip(paths, classes):
        tokens, emb = _stages(model, _images(root, [path], size), RN.stages)
        t = torch.from_numpy(text[cls]).float()
        scores.append(torch.softmax(100 * emb @ t, dim=-1)[0, 1].item())
        m = torch.zeros(size, size)
        for i, tok in enumerate(tokens):
            p = tok @ fc[f"fc.{i}.weight"].T + fc[f"fc.{i}.bias"]
            p = p / p.norm(dim=-1, keepdim=True)
            m += torch.softmax(_up(100 * p @ t, size), dim=1)[0, 1]
        if refs is not None:
            bank, _ = _stages(model, _images(root, refs[cls], size), RN.stages)
            for tok, mem in zip(tokens, bank):
                mem = mem.reshape(-1, mem.shape[-1])
                cos = F.normalize(tok[0], dim=-1) @ F.normalize(mem, dim=-1).T
                m += _up((1 - cos.max(dim=1).values)[None, :, None], size)[0, 0]
        maps.append(m.numpy())
    return np.stack(maps), np.array(scores)


def _fitting_sizes() -> tuple[int, int]:
    """Two sizes the fixture's weights run at that are not multiples of 32 (80, 88 for 64 px)."""
    base = RN.image_size() // 32 * 32
    return base + 16, base + 24


def test_reference_reproduces_the_released_outputs_at_the_native_size():
    require(RN.weights, RN.checkpoint, RN.expected_npz("mvtec"))
    exp = load_predictions(RN.expected_npz("mvtec"))
    maps, scores = released(RN.image_size(), exp["img_paths"], exp["cls_names"])
    np.testing.assert_allclose(maps, exp["anomaly_maps"], rtol=0, atol=MAP_TOL)
    np.testing.assert_allclose(scores, exp["pr_sp"], rtol=0, atol=SCORE_TOL)


def test_zero_shot_at_a_size_that_is_not_a_multiple_of_32(tmp_path):
    require(RN.weights, RN.checkpoint)
    size = _fitting_sizes()[0]
    save = tmp_path / "zs"
    argv = RN.args("mvtec", save, "zero_shot", "--save_predictions", "--no_mvtec_aupro")
    argv[argv.index("--image_size") + 1] = str(size)
    assert run_test_main(argv) == 0
    ours = load_predictions(save / "predictions.npz")
    assert ours["anomaly_maps"].shape[1:] == (size, size)
    maps, scores = released(size, ours["img_paths"], ours["cls_names"])
    np.testing.assert_allclose(ours["anomaly_maps"], maps, rtol=0, atol=MAP_TOL)
    np.testing.assert_allclose(ours["pr_sp"], scores, rtol=0, atol=SCORE_TOL)


def test_few_shot_at_a_size_that_is_not_a_multiple_of_32(tmp_path):
    require(RN.weights, RN.checkpoint, RN.refs("mvtec"))
    size = _fitting_sizes()[1]
    refs = json.loads(RN.refs("mvtec").read_text())
    save = tmp_path / "fs"
    argv = RN.args("mvtec", save, "few_shot", "--save_predictions", "--no_mvtec_aupro",
                   "--reference_list", str(RN.refs("mvtec")))
    argv[argv.index("--image_size") + 1] = str(size)
    assert run_test_main(argv) == 0
    ours = load_predictions(save / "predictions.npz")
    maps, text = released(size, ours["img_paths"], ours["cls_names"], refs)
    np.testing.assert_allclose(ours["anomaly_maps"], maps, rtol=0, atol=MAP_TOL)
    combined = np.empty_like(text)
    for cls in set(ours["cls_names"]):  # released: max map min-max normalised per category
        i = ours["cls_names"] == cls
        top = maps[i].reshape(i.sum(), -1).max(axis=1)
        combined[i] = 0.5 * (text[i] + (top - top.min()) / (top.max() - top.min()))
    np.testing.assert_allclose(ours["pr_sp"], combined, rtol=0, atol=COMBINED_TOL)


@pytest.mark.parametrize("offset", [31, 32])
def test_sizes_the_weights_cannot_run_at_name_both_grids(tmp_path, capsys, offset):
    """S = 32 G + 31 loads (S // 32 = G) but layer4 has G + 1 cells; 32 (G + 1) does not load."""
    require(RN.weights)
    grid = RN.image_size() // 32
    size = 32 * grid + offset
    save = tmp_path / "out"
    argv = RN.args("mvtec", save) + ["--image_size", str(size)]
    line = assert_user_error(run_test_main(argv), capsys.readouterr().err, str(size))
    assert f"{grid}x{grid}" in line and f"{grid + 1}x{grid + 1}" in line
    assert f"{32 * grid} to {32 * grid + 30}" in line
    assert not save.exists()
