"""ResNet (ModifiedResNet) CLIP path against the golden/resnet fixture (METHOD §1, §4, §5).

Stages are layer1..layer4 read row-major as tokens (no class token), the backbone runs in eval mode
so BatchNorm uses its stored statistics (batching does not change results), and the attention
pool's grid is not resized (sizes: tests/test_resnet_sizes.py).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DATASET_NAMES, RN, aligned, compare_metrics, load_predictions, require, run_test_main

from engine.core.loading import build_model

MAP_TOL = 1e-4
SCORE_TOL = 1e-5
COMBINED_TOL = 5e-5
METRIC_TOL = 1e-4
PRO_TOL = 1e-3
BATCH_TOL = 1e-5  # scores of batch 1 against batch 8


@pytest.fixture(scope="module", params=DATASET_NAMES)
def rn_zero_shot(request, tmp_path_factory):
    ds = request.param
    require(RN.expected_npz(ds), RN.expected_metrics(ds), RN.weights, RN.checkpoint)
    save = tmp_path_factory.mktemp(f"rn_zs_{ds}")
    assert run_test_main(RN.args(ds, save, "zero_shot", "--save_predictions")) == 0
    return ds, save


def test_zero_shot_predictions(rn_zero_shot):
    ds, save = rn_zero_shot
    ours = load_predictions(save / "predictions.npz")
    exp = load_predictions(RN.expected_npz(ds))
    maps, emaps = aligned(ours, exp, "anomaly_maps")
    np.testing.assert_allclose(maps, emaps, rtol=0, atol=MAP_TOL)
    score, escore = aligned(ours, exp, "pr_sp")
    np.testing.assert_allclose(score, escore, rtol=0, atol=SCORE_TOL)
    np.testing.assert_array_equal(*aligned(ours, exp, "gt_sp"))


def test_zero_shot_metrics(rn_zero_shot):
    ds, save = rn_zero_shot
    compare_metrics(save / "metrics.json", RN.expected_metrics(ds), METRIC_TOL, PRO_TOL)


def test_batch_of_one_equals_batch_of_eight(rn_zero_shot, tmp_path):
    ds, save = rn_zero_shot
    single = tmp_path / "b1"
    assert run_test_main(RN.args(ds, single, "zero_shot", "--save_predictions",
                                 "--batch_size", "1", "--no_mvtec_aupro")) == 0
    a = load_predictions(save / "predictions.npz")  # default batch size 8
    b = load_predictions(single / "predictions.npz")
    maps_a, maps_b = aligned(a, b, "anomaly_maps")
    # oneDNN's convolutions take other kernels for another batch size: float32 rounding apart,
    # measured up to 7.6e-6 on the maps, so they get the golden map tolerance
    np.testing.assert_allclose(maps_a, maps_b, rtol=0, atol=MAP_TOL)
    np.testing.assert_allclose(*aligned(a, b, "pr_sp"), rtol=0, atol=BATCH_TOL)


def test_few_shot_replay(tmp_path):
    ds = "mvtec"
    require(RN.expected_npz(ds, "few_shot"), RN.refs(ds), RN.expected_metrics(ds, "few_shot"))
    save = tmp_path / "rn_fs"
    assert run_test_main(RN.args(ds, save, "few_shot", "--save_predictions",
                                 "--reference_list", str(RN.refs(ds)))) == 0
    ours = load_predictions(save / "predictions.npz")
    exp = load_predictions(RN.expected_npz(ds, "few_shot"))
    np.testing.assert_allclose(*aligned(ours, exp, "anomaly_maps"), rtol=0, atol=MAP_TOL)
    np.testing.assert_allclose(*aligned(ours, exp, "pr_sp", "pr_sp_fewshot_combined"),
                               rtol=0, atol=COMBINED_TOL)
    compare_metrics(save / "metrics.json", RN.expected_metrics(ds, "few_shot"), METRIC_TOL, PRO_TOL)
    assert json.loads((save / "references.json").read_text()) == json.loads(RN.refs(ds).read_text())


def test_stage_subset_builds_projections_from_the_model():
    """features_list 2 3 4 -> Linear(width*2**(n+1) -> embed) per stage, derived from the model."""
    require(RN.weights)
    cfg = json.loads(RN.config.read_text())
    width, embed = cfg["vision_cfg"]["width"], cfg["embed_dim"]
    stages = [2, 3, 4]
    model, _ = build_model(RN.model_name, str(RN.weights), RN.image_size(), stages,
                           config_path=str(RN.config))
    dims = [(fc.in_features, fc.out_features) for fc in model.projections.fc]
    assert dims == [(width * 2 ** (n + 1), embed) for n in stages]  # (32,32),(64,32),(128,32)
    s = RN.image_size()
    out = model(torch.randn(2, 3, s, s), torch.nn.functional.normalize(torch.randn(embed, 2), dim=0))
    for n, logits in zip(stages, out["stage_logits"]):
        h = s // (4 * 2 ** (n - 1))
        assert logits.shape == (2, 2, h, h)
    assert out["image_score"].shape == (2,)


def test_stage_subset_runs_end_to_end(tmp_path):
    """test.py with ResNet stages 2 3 4 and a checkpoint of matching shapes."""
    require(RN.weights)
    stages = [2, 3, 4]
    model, _ = build_model(RN.model_name, str(RN.weights), RN.image_size(), stages,
                           config_path=str(RN.config))
    ckpt = tmp_path / "rn234.pth"
    torch.save({"trainable_linearlayer": model.projections.state_dict()}, ckpt)
    save = tmp_path / "out"
    argv = RN.args("mvtec", save, "zero_shot", "--no_mvtec_aupro")
    argv += ["--features_list", "2", "3", "4", "--checkpoint_path", str(ckpt)]
    assert run_test_main(argv) == 0
    assert json.loads((save / "config.json").read_text())["features_list"] == stages
    assert (save / "metrics.json").is_file()


def _flags_without_few_shot_features(args: list[str]) -> list[str]:
    i = args.index("--few_shot_features")
    return args[:i] + args[i + 1 + len(RN.stages):]


def test_same_flags_as_vit_for_all_entry_points(tmp_path):
    """A ResNet takes the flags a ViT takes: test.py few-shot (memory stages default to
    --features_list), predict.py with references, and train.py, all without ResNet-only flags."""
    import predict
    import train
    ds = DATASET_NAMES[0]
    require(RN.refs(ds), RN.weights, RN.checkpoint)
    out = tmp_path / "fs"
    argv = _flags_without_few_shot_features(RN.args(ds, out, "few_shot"))
    assert run_test_main(argv + ["--reference_list", str(RN.refs(ds))]) == 0
    assert json.loads((out / "config.json").read_text())["few_shot_features"] == RN.stages

    model = _flags_without_few_shot_features(RN.model_args(RN.image_size(ds)))
    data = RN.data(ds)
    cat = json.loads(RN.refs(ds).read_text())
    name = next(iter(cat))
    images = data / name / "test" / "good"
    refs = data / name / "train" / "good"
    if not images.is_dir() or not refs.is_dir():
        pytest.skip("fixture is not in the MVTec layout")
    assert predict.main(["--image_dir", str(images), "--object_name", name, "--save_path",
                         str(tmp_path / "pred"), "--reference_dir", str(refs), *model]) == 0
    assert (tmp_path / "pred" / "scores.csv").read_text().startswith("path,score")
    i = model.index("--checkpoint_path")
    train_model = model[:i] + model[i + 2:]
    assert train.main(["--dataset", ds, "--train_data_path", str(data), "--save_path",
                       str(tmp_path / "train"), "--epoch", "1", "--batch_size", "4",
                       "--aug_rate", "0.5", *train_model]) == 0
    ckpt = torch.load(tmp_path / "train" / "epoch_1.pth", weights_only=True)
    ref = torch.load(RN.checkpoint, weights_only=True)["trainable_linearlayer"]
    assert {k: v.shape for k, v in ckpt["trainable_linearlayer"].items()} == \
        {k: v.shape for k, v in ref.items()}
