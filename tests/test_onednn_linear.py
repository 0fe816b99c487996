"""--cpu_linear onednn: the ViT blocks' linear layers packed for oneDNN give the released numbers
(the golden zero-/few-shot outputs at the same tolerances as the GPU checks), every entry point
takes it, the combinations it cannot serve are refused in one line, and its benchmark runs."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import (
    GOLDEN,
    RN,
    VIT,
    aligned,
    assert_user_error,
    compare_metrics,
    load_predictions,
    require,
    run_test_main,
)

import predict
from models.onednn_linear import PackedAttention, PackedLinear, onednn_available, pack_vit_linears

from engine.core.loading import build_model

pytestmark = pytest.mark.skipif(not onednn_available(), reason="torch without oneDNN")
BOTTLE = GOLDEN / "data" / "mvtec" / "bottle"


def _tiny_backbone():
    torch.manual_seed(0)
    model, _ = build_model(VIT.model_name, str(VIT.weights), 84, VIT.stages, (), str(VIT.config))
    model.backbone.autocast = False
    return model.backbone.eval()


def test_packed_blocks_give_the_same_tokens():
    """Every block's c_fc, c_proj and attention (in and out projections) is packed -- counted
    on the unpacked model -- and the stage tokens, class tokens and image embedding equal the
    BLAS path's up to float rounding, at batch 1 and 3."""
    blas = _tiny_backbone()
    blocks = blas.clip.visual.transformer.resblocks
    want = sum(isinstance(m, nn.Linear) for b in blocks for m in b.mlp.children()) + 2 * sum(
        isinstance(b.attn, nn.MultiheadAttention) for b in blocks)
    packed = copy.deepcopy(blas)
    assert pack_vit_linears(packed.clip.visual, rows=50) == want == 4 * len(blocks)
    assert not any(isinstance(m, (nn.Linear, nn.MultiheadAttention))
                   for m in packed.clip.visual.transformer.resblocks.modules())
    x = torch.randn(3, 3, 84, 84, generator=torch.Generator().manual_seed(1))
    for batch in (x[:1], x):
        with torch.inference_mode():
            a, b = blas(batch), packed(batch)
        for s in VIT.stages:
            torch.testing.assert_close(b["patch_tokens"][s], a["patch_tokens"][s],
                                       rtol=0, atol=1e-5)
            torch.testing.assert_close(b["class_tokens"][s], a["class_tokens"][s],
                                       rtol=0, atol=1e-5)
        torch.testing.assert_close(b["image_embed"], a["image_embed"], rtol=0, atol=1e-6)


def test_packed_layers_against_hand_formulas():
    """PackedLinear is x W^T + b; PackedAttention is per-head softmax(q k^T / sqrt(d)) v, then
    the output projection (written out here with explicit matrix products)."""
    g = torch.Generator().manual_seed(2)
    w, b = torch.randn(6, 4, generator=g), torch.randn(6, generator=g)
    x = torch.randn(5, 4, generator=g)
    torch.testing.assert_close(PackedLinear(w, b)(x), x @ w.T + b, rtol=0, atol=1e-5)
    torch.testing.assert_close(PackedLinear(w, None)(x), x @ w.T, rtol=0, atol=1e-5)
    for batch_first in (True, False):
        mha = nn.MultiheadAttention(8, 2, batch_first=batch_first).eval()
        with torch.no_grad():
            for p in mha.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        t = torch.randn(2, 5, 8, generator=g)  # [B, L, C]
        q, k, v = (t @ mha.in_proj_weight.T + mha.in_proj_bias).split(8, dim=-1)
        heads = [torch.softmax(q[..., h * 4:(h + 1) * 4] @ k[..., h * 4:(h + 1) * 4].transpose(1, 2)
                               / 2.0, dim=-1) @ v[..., h * 4:(h + 1) * 4] for h in range(2)]
        want = torch.cat(heads, dim=-1) @ mha.out_proj.weight.T + mha.out_proj.bias
        inp = t if batch_first else t.transpose(0, 1)
        out, none = PackedAttention(mha)(inp, inp, inp, need_weights=False)
        assert none is None
        torch.testing.assert_close(out if batch_first else out.transpose(0, 1), want,
                                   rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="no attention weights"):
        PackedAttention(mha)(inp, inp, inp, need_weights=True)
    with pytest.raises(RuntimeError, match="float32 CPU"):
        PackedLinear(w, b)(x.double())


@pytest.mark.parametrize("mode", ["zero_shot", "few_shot"])
def test_golden_with_onednn_linears(tmp_path, mode):
    """test.py --cpu_linear onednn reproduces the released outputs: maps within 1e-4, image
    scores within 5e-6 (zero-shot) / 1e-5 (few-shot), metrics as the golden tests."""
    require(VIT.expected_npz("mvtec", mode), VIT.refs("mvtec"))
    extra = ["--reference_list", str(VIT.refs("mvtec"))] if mode == "few_shot" else []
    save = tmp_path / "out"
    assert run_test_main(VIT.args("mvtec", save, mode, "--save_predictions", "--cpu_linear",
                                  "onednn", *extra)) == 0
    ours = load_predictions(save / "predictions.npz")
    exp = load_predictions(VIT.expected_npz("mvtec", mode))
    maps, emaps = aligned(ours, exp, "anomaly_maps")
    assert float(np.abs(maps - emaps).max()) <= 1e-4
    key = "pr_sp" if mode == "zero_shot" else "pr_sp_fewshot_combined"
    score, escore = aligned(ours, exp, "pr_sp", key)
    np.testing.assert_allclose(score, escore, rtol=0, atol=5e-6 if mode == "zero_shot" else 1e-5)
    compare_metrics(save / "metrics.json", VIT.expected_metrics("mvtec", mode), 1e-4, 5e-4)
    assert json.loads((save / "config.json").read_text())["cpu_linear"] == "onednn"


def test_predict_with_onednn_linears_scores_as_blas(tmp_path, capsys):
    scores = {}
    for kind in ("blas", "onednn"):
        code = predict.main(["--image_dir", str(BOTTLE / "test"), "--recursive", "--object_name",
                             "bottle", "--save_path", str(tmp_path / kind), "--cpu_linear", kind,
                             "--no_report", "--no_heatmaps", *VIT.model_args(84)])
        assert code == 0, capsys.readouterr().err
        data = json.loads((tmp_path / kind / "scores.json").read_text())
        scores[kind] = {r["path"]: r["score"] for r in data["images"]}
    assert scores["onednn"].keys() == scores["blas"].keys() and len(scores["blas"]) > 3
    for path, s in scores["blas"].items():
        assert abs(scores["onednn"][path] - s) <= 1e-5, path


def test_what_onednn_linears_cannot_serve_is_refused(tmp_path, capsys):
    args = VIT.args("mvtec", tmp_path / "a", "zero_shot", "--cpu_linear", "onednn")
    code = run_test_main(args + ["--precision", "bf16"])
    assert_user_error(code, capsys.readouterr().err, "--cpu_linear onednn", "--precision bf16")
    code = run_test_main(RN.args("mvtec", tmp_path / "b", "zero_shot", "--cpu_linear", "onednn"))
    assert_user_error(code, capsys.readouterr().err, "--cpu_linear onednn", "resnet")
    with pytest.raises(SystemExit) as exit_:  # an argument error, reported by argparse
        predict.main(["--image_dir", str(BOTTLE / "test"), "--onnx", str(tmp_path / "x.onnx"),
                      "--save_path", str(tmp_path / "c"), "--cpu_linear", "onednn"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "--cpu_linear applies to the torch path, not to --onnx" in err, err
    assert "Traceback" not in err


def test_cpu_linear_benchmark_smoke(tmp_path, capsys):
    from test_benchmarks import load_script

    bench = load_script("benchmark_cpu_linear")
    assert bench.main(["--model", "tiny", "--repeats", "1", "--json",
                       str(tmp_path / "c.json")]) == 0
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["packed_products"] == 32 and out["max_abs_diff"] < 1e-5
    assert {g["layer"] for g in out["gemm"]} == {"attention in", "attention out", "mlp c_fc",
                                                  "mlp c_proj"}
    assert all(g["blas_gflops"] > 0 and g["onednn_gflops"] > 0 for g in out["gemm"])
    assert "cpu linear: backbone forward" in capsys.readouterr().out
