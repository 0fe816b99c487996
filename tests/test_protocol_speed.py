"""The paper protocol without waste (issue: each image through the backbone once, metrics on
the device): a feature store shared by training and evaluation gives the same numbers, few-shot
runs share masks and zero-shot maps, and the time split is written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import VIT, load_predictions, require, run_test_main
from tolerances import assert_metrics_close

import train


def _eval(save, *extra, ds="mvtec", mode="few_shot"):
    args = VIT.args(ds, save, mode, "--save_predictions", "--k_shot", "1", "2", "--seed", "3",
                    *extra) if mode == "few_shot" else VIT.args(ds, save, mode,
                                                                "--save_predictions", *extra)
    assert run_test_main(args) == 0


def test_feature_store_gives_the_same_results(tmp_path, count_backbone):
    require(VIT.data("mvtec") / "meta.json")
    store = tmp_path / "store"
    _eval(tmp_path / "plain")
    plain = count_backbone["n"]
    count_backbone["n"] = 0
    _eval(tmp_path / "first", "--feature_store", str(store))
    assert count_backbone["n"] == plain  # the store is filled on the way
    count_backbone["n"] = 0
    _eval(tmp_path / "again", "--feature_store", str(store))
    n_test = len(load_predictions(tmp_path / "plain" / "k1_seed3" / "predictions.npz")["gt_sp"])
    assert count_backbone["n"] == plain - n_test  # only the reference images
    for run in ("k1_seed3", "k2_seed3"):
        a = json.loads((tmp_path / "plain" / run / "metrics.json").read_text())
        for other in ("first", "again"):
            b = json.loads((tmp_path / other / run / "metrics.json").read_text())
            assert a["per_category"] == b["per_category"] and a["mean"] == b["mean"]
            pa = load_predictions(tmp_path / "plain" / run / "predictions.npz")
            pb = load_predictions(tmp_path / other / run / "predictions.npz")
            np.testing.assert_array_equal(pa["anomaly_maps"], pb["anomaly_maps"])  # bit for bit
            np.testing.assert_array_equal(pa["pr_sp"], pb["pr_sp"])
    timings = json.loads((tmp_path / "again" / "timings.json").read_text())
    assert timings["backbone_images"] == count_backbone["n"]
    assert timings["backbone_s"] >= 0 and timings["metrics_s"] > 0


def test_training_fills_the_store_that_evaluation_reads(tmp_path, count_backbone):
    require(VIT.data("mvtec") / "meta.json")
    store = tmp_path / "store"
    args = ["--dataset", "mvtec", "--train_data_path", str(VIT.data("mvtec")), "--save_path",
            str(tmp_path / "exp"), "--model", VIT.model_name, "--config_path", str(VIT.config),
            "--pretrained", str(VIT.weights), "--image_size", str(VIT.image_size()),
            "--features_list", *map(str, VIT.stages), "--epoch", "1", "--aug_rate", "0",
            "--cache_features", str(store), "--device", "cpu"]
    assert train.main(args) == 0
    count_backbone["n"] = 0
    _eval(tmp_path / "zs", "--feature_store", str(store), mode="zero_shot")
    assert count_backbone["n"] == 0  # every test image came from the training's store
    _eval(tmp_path / "zs_plain", mode="zero_shot")
    a = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    b = json.loads((tmp_path / "zs_plain" / "metrics.json").read_text())
    # the store's tokens come from training batches (shuffled, of mixed categories), not the
    # evaluation's: float32 rounding apart on some CPUs (maps moved 3.5e-6 with MKL's Intel AVX2
    # kernels)
    assert_metrics_close(a["per_category"], b["per_category"])


def test_metrics_device_cpu_equals_auto(tmp_path):
    require(VIT.data("mvtec") / "meta.json")
    _eval(tmp_path / "auto", mode="zero_shot")
    _eval(tmp_path / "cpu", "--metrics_device", "cpu", mode="zero_shot")
    a = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    b = json.loads((tmp_path / "cpu" / "metrics.json").read_text())
    assert a["per_category"] == b["per_category"]


@pytest.mark.cuda
def test_metrics_on_the_gpu_equal_the_cpu(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (none here)")
    require(VIT.data("mvtec") / "meta.json")
    _eval(tmp_path / "cpu", "--metrics_device", "cpu", "--device", "cpu")
    _eval(tmp_path / "gpu", "--metrics_device", "cuda", "--device", "cpu")
    for run in ("k1_seed3", "k2_seed3"):
        a = json.loads((tmp_path / "cpu" / run / "metrics.json").read_text())["per_category"]
        b = json.loads((tmp_path / "gpu" / run / "metrics.json").read_text())["per_category"]
        for c in a:
            for k, v in a[c].items():
                assert b[c][k] == pytest.approx(v, rel=1e-9, abs=1e-12), (c, k)
