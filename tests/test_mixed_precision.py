"""The GPU code paths before the first GPU: fp16 autocast forced on the CPU through every entry
point (APRILGAN_AUTOCAST=1), and a CUDA suite (``-m cuda``) that runs the golden zero-/few-shot
and training checks on a GPU in float32 at the METHOD §9 tolerances and reports the fp16 drift."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import GOLDEN, VIT, aligned, compare_metrics, load_predictions, require, run_test_main

import predict
import train

BOTTLE = GOLDEN / "data" / "mvtec" / "bottle"


def _cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (none here)")


def _train_args(save, *extra):
    return ["--dataset", "mvtec", "--train_data_path", str(VIT.data("mvtec")), "--save_path",
            str(save), "--model", VIT.model_name, "--config_path", str(VIT.config),
            "--pretrained", str(VIT.weights), "--image_size", "84", "--features_list",
            *map(str, VIT.stages), "--epoch", "1", "--batch_size", "12", "--aug_rate", "0",
            "--init_checkpoint", str(VIT.checkpoint), *extra]


def _maps_drift(save, mode="zero_shot"):
    ours = load_predictions(save / "predictions.npz")
    exp = load_predictions(VIT.expected_npz("mvtec", mode))
    maps, emaps = aligned(ours, exp, "anomaly_maps")
    return float(np.abs(maps - emaps).max())


def test_every_entry_point_runs_with_fp16_autocast_on_the_cpu(tmp_path, monkeypatch, capsys):
    require(VIT.expected_npz("mvtec"), VIT.refs("mvtec"))
    monkeypatch.setenv("APRILGAN_AUTOCAST", "1")
    zs, fs = tmp_path / "zs", tmp_path / "fs"
    assert run_test_main(VIT.args("mvtec", zs, "zero_shot", "--save_predictions",
                                  "--feature_store", str(tmp_path / "store"))) == 0
    assert run_test_main(VIT.args("mvtec", fs, "few_shot", "--save_predictions",
                                  "--reference_list", str(VIT.refs("mvtec")))) == 0
    assert json.loads((tmp_path / "store" / "manifest.json").read_text())["dtype"] == "float16"
    drift = _maps_drift(zs), _maps_drift(fs, "few_shot")
    print(f"fp16 autocast drift of the maps on the CPU: zero-shot {drift[0]:.2e}, "
          f"few-shot {drift[1]:.2e}")
    assert 0 < max(drift) < 0.1  # fp16 really ran, and stayed close to the float32 maps
    assert train.main(_train_args(tmp_path / "exp")) == 0
    ckpt = torch.load(tmp_path / "exp" / "epoch_1.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["trainable_linearlayer"].values())
    code = predict.main(["--image_dir", str(BOTTLE / "test"), "--recursive", "--object_name",
                         "bottle", "--save_path", str(tmp_path / "pred"), "--reference_dir",
                         str(BOTTLE / "train" / "good"), *VIT.model_args(84)])
    assert code == 0, capsys.readouterr().err


# --- on a GPU -------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["zero_shot", "few_shot"])
def test_golden_on_cuda_in_float32(tmp_path, monkeypatch, mode):
    _cuda()
    require(VIT.expected_npz("mvtec", mode), VIT.refs("mvtec"))
    monkeypatch.setenv("APRILGAN_AUTOCAST", "0")
    extra = ["--reference_list", str(VIT.refs("mvtec"))] if mode == "few_shot" else []
    save = tmp_path / "out"
    assert run_test_main(VIT.args("mvtec", save, mode, "--save_predictions", *extra)
                         + ["--device", "cuda"]) == 0
    assert _maps_drift(save, mode) <= 1e-4
    ours, exp = load_predictions(save / "predictions.npz"), load_predictions(VIT.expected_npz("mvtec", mode))
    key = "pr_sp" if mode == "zero_shot" else "pr_sp_fewshot_combined"
    score, escore = aligned(ours, exp, "pr_sp", key)
    np.testing.assert_allclose(score, escore, rtol=0, atol=5e-6 if mode == "zero_shot" else 1e-5)
    compare_metrics(save / "metrics.json", VIT.expected_metrics("mvtec", mode), 1e-4, 5e-4)


@pytest.mark.cuda
def test_golden_training_step_on_cuda_in_float32(tmp_path, monkeypatch):
    _cuda()
    monkeypatch.setenv("APRILGAN_AUTOCAST", "0")
    assert train.main(_train_args(tmp_path, "--device", "cuda")) == 0
    got = torch.load(tmp_path / "epoch_1.pth", weights_only=True)["trainable_linearlayer"]
    want = torch.load(GOLDEN / "expected" / "train_step.pth", weights_only=True)["trainable_linearlayer"]
    assert max((got[k].float() - want[k].float()).abs().max().item() for k in want) <= 1e-6


@pytest.mark.cuda
def test_fp16_autocast_drift_on_cuda(tmp_path, monkeypatch):
    """Reported, not a golden check: the released GPU run used fp16 autocast too."""
    _cuda()
    require(VIT.expected_npz("mvtec"))
    monkeypatch.setenv("APRILGAN_AUTOCAST", "1")
    save = tmp_path / "out"
    assert run_test_main(VIT.args("mvtec", save, "zero_shot", "--save_predictions")
                         + ["--device", "cuda"]) == 0
    drift = _maps_drift(save)
    print(f"fp16 autocast drift of the maps on CUDA: {drift:.2e}")
    assert drift < 0.1


def test_precision_bf16_on_the_cpu_for_test_and_predict(tmp_path, capsys):
    """--precision bf16: the backbone under bf16 autocast (its own feature store), the maps
    close to the float32 golden ones (which auto gives on the CPU: the golden tests)."""
    require(VIT.expected_npz("mvtec"))
    bf = tmp_path / "bf16"
    assert run_test_main(VIT.args("mvtec", bf, "zero_shot", "--save_predictions",
                                  "--precision", "bf16", "--feature_store",
                                  str(tmp_path / "store"))) == 0
    key = json.loads((tmp_path / "store" / "manifest.json").read_text())["key"]
    assert key["autocast"] == "bfloat16"  # never mixed with fp16 or fp32 stores
    drift = _maps_drift(bf)
    print(f"bf16 autocast drift of the maps on the CPU (golden zero-shot): {drift:.2e}")
    assert 0 < drift < 0.2  # bf16 really ran (8-bit mantissa), and stayed close
    code = predict.main(["--image_dir", str(BOTTLE / "test"), "--recursive", "--object_name",
                         "bottle", "--save_path", str(tmp_path / "pred"), "--precision", "bf16",
                         "--no_report", *VIT.model_args(84)])
    assert code == 0, capsys.readouterr().err
