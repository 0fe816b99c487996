"""Tests for train.py: golden training steps (ViT on MVTec and VisA, ResNet on MVTec), frozen
backbone, exact resume, the feature cache, and bad input. CPU, tiny random CLIP models.

The golden root can be moved with the environment variable APRILGAN_GOLDEN."""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_user_error

import train
from datasets import AnomalyDataset, collate, make_samples
from prompts import TextFeatureBank
from utils.rng import rng_state, set_rng_state

from engine.core.loading import build_model, load_projections
from engine.training import batch_loss

GOLDEN = Path(os.environ.get("APRILGAN_GOLDEN", Path(__file__).parent / "fixtures" / "golden"))
VIT = GOLDEN / "models"
RN = GOLDEN / "resnet" / "models"
pytestmark = pytest.mark.skipif(not (VIT / "tiny-vit-random.pt").is_file(),
                                reason=f"golden fixtures not found under {GOLDEN}")

# (dataset, model config, weights, init projections, image size, stages, expected/<prefix>)
CASES = {
    "vit-mvtec": ("mvtec", VIT / "tiny-vit.json", VIT / "tiny-vit-random.pt",
                  VIT / "linear-random.pth", 84, [2, 4, 6, 8], GOLDEN / "expected" / "train_step"),
    "vit-visa": ("visa", VIT / "tiny-vit.json", VIT / "tiny-vit-random.pt",
                 VIT / "linear-random.pth", 84, [2, 4, 6, 8], GOLDEN / "expected" / "train_step_visa"),
    "rn-mvtec": ("mvtec", RN / "tiny-rn.json", RN / "tiny-rn-random.pt", RN / "linear-rn-random.pth",
                 64, [1, 2, 3, 4], GOLDEN / "resnet" / "expected" / "rn_train_step"),
}


def model_args(cfg: Path, weights: Path, size: int, stages: list[int]) -> list[str]:
    return ["--model", cfg.stem, "--config_path", str(cfg), "--pretrained", str(weights),
            "--image_size", str(size), "--features_list", *map(str, stages)]


def vit_args(save: Path, *extra: str, data: Path | None = None) -> list[str]:
    """A small MVTec run of the tiny ViT (extra flags appended)."""
    return ["--dataset", "mvtec", "--train_data_path", str(data or GOLDEN / "data" / "mvtec"),
            "--save_path", str(save), *model_args(VIT / "tiny-vit.json", VIT / "tiny-vit-random.pt",
                                                  84, [2, 4, 6, 8]), *extra]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["trainable_linearlayer"]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("case", list(CASES))
def test_golden_training_step(case, tmp_path):
    ds, cfg, w, init, size, stages, expected = CASES[case]
    data = GOLDEN / "data" / ds
    aug = "0.2" if ds == "visa" else "0"  # VisA ignores --aug_rate (no mosaic, as released)
    args = ["--dataset", ds, "--train_data_path", str(data), "--save_path", str(tmp_path),
            *model_args(cfg, w, size, stages), "--batch_size", "12", "--aug_rate", aug,
            "--epoch", "1", "--init_checkpoint", str(init)]
    out = train.train(train.parse_args(args))
    golden = json.loads(expected.with_name(expected.name.split("_visa")[0] + ".json").read_text())
    loss = golden[ds]["loss_before_step"]
    assert out["epoch_losses"][0] == pytest.approx(loss, abs=1e-5)
    assert max_diff(weights(tmp_path / "epoch_1.pth"), weights(expected.with_suffix(".pth"))) <= 1e-6
    log = (tmp_path / "log.txt").read_text()
    assert re.search(rf"epoch \[1/1\], loss:{loss:.4f}\n", log)
    assert ("aug_rate 0.2 ignored" in log) == (ds == "visa")
    assert json.loads((tmp_path / "config.json").read_text())["features_list"] == stages

    # gradients of the same batch, computed through engine.training.batch_loss
    model, tok = build_model(cfg.stem, str(w), size, stages, (), str(cfg))
    load_projections(model.projections, init)
    samples = [s for c in make_samples(data, "test", kind=ds).values() for s in c]
    batch = collate([AnomalyDataset(data, samples, size)[i] for i in range(len(samples))])
    bank = TextFeatureBank(model.backbone.encode_text, tok)
    enc = model.encode(batch["image"])
    text = torch.stack([bank(c) for c in batch["cls_name"]])
    model.train()
    lv = batch_loss(model, enc["patch_tokens"], enc["image_embed"], text, batch["mask"])
    lv.backward()
    assert lv.item() == pytest.approx(loss, abs=1e-5)
    grads = torch.load(f"{expected}_grads.pth", weights_only=True)
    named = dict(model.projections.named_parameters())
    assert max_diff({k: named[k].grad for k in grads}, grads) <= 1e-4
    assert all(p.grad is not None for p in model.trainable_parameters())
    assert all(p.grad is None for p in model.backbone.parameters())
    assert not model.backbone.training


def test_resume_equals_uninterrupted(tmp_path):
    common = ["--batch_size", "5", "--aug_rate", "0.5"]
    init = ["--init_checkpoint", str(VIT / "linear-random.pth")]
    assert train.main(vit_args(tmp_path / "full", *common, *init, "--epoch", "3")) == 0
    assert train.main(vit_args(tmp_path / "part", *common, *init, "--epoch", "1")) == 0
    first = tmp_path / "part" / "epoch_1.pth"
    assert train.main(vit_args(tmp_path / "part", *common, "--epoch", "3", "--resume", str(first))) == 0
    a = torch.load(tmp_path / "full" / "epoch_3.pth", weights_only=True)
    b = torch.load(tmp_path / "part" / "epoch_3.pth", weights_only=True)
    assert max_diff(a["trainable_linearlayer"], b["trainable_linearlayer"]) <= 1e-7
    assert a["epoch"] == b["epoch"] == 3 and a["config"]["aug_rate"] == 0.5
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert "epoch [3/3]" in (tmp_path / "part" / "log.txt").read_text()
    # nothing left to do: a clear error
    assert train.main(vit_args(tmp_path / "part", "--epoch", "3", "--resume",
                               str(tmp_path / "part" / "epoch_3.pth"))) == 2


def test_feature_cache_same_weights_fewer_backbone_images(tmp_path, count_backbone):
    common = ["--batch_size", "4", "--aug_rate", "0.3", "--epoch", "3", "--seed", "5"]
    cache = tmp_path / "cache"
    train.main(vit_args(tmp_path / "plain", *common))
    plain, count_backbone["n"] = count_backbone["n"], 0
    out = train.train(train.parse_args(vit_args(tmp_path / "cached", *common,
                                                "--cache_features", str(cache))))
    cached = count_backbone["n"]
    assert plain == 36 and cached == out["backbone_images"] < plain
    assert max_diff(weights(tmp_path / "plain" / "epoch_3.pth"),
                    weights(tmp_path / "cached" / "epoch_3.pth")) <= 1e-6
    assert (cache / "manifest.json").is_file()
    assert len(list(cache.glob("*.npy"))) == 12 * 6  # 4 stages, embedding, mask per image
    # a second run without augmentation reads everything from the cache
    count_backbone["n"] = 0
    train.main(vit_args(tmp_path / "again", "--batch_size", "4", "--aug_rate", "0", "--epoch", "2",
                        "--cache_features", str(cache)))
    assert count_backbone["n"] == 0


def test_feature_cache_refuses_other_settings(tmp_path, capsys, count_backbone):
    cache = tmp_path / "cache"
    assert train.main(vit_args(tmp_path / "a", "--epoch", "1", "--aug_rate", "0",
                               "--cache_features", str(cache))) == 0
    capsys.readouterr()
    # another stage list reads the stages it shares with the store: nothing recomputed
    count_backbone["n"] = 0
    other = vit_args(tmp_path / "b", "--epoch", "1", "--aug_rate", "0", "--cache_features", str(cache))
    other[other.index("--features_list") + 1:other.index("--features_list") + 5] = ["2", "4", "6"]
    assert train.main(other) == 0 and count_backbone["n"] == 0
    # another image size gives other values: refused
    other = vit_args(tmp_path / "c", "--epoch", "1", "--cache_features", str(cache))
    other[other.index("--image_size") + 1] = "112"
    capsys.readouterr()
    assert train.main(other) == 2
    line = assert_user_error(2, capsys.readouterr().err, "image_size")
    assert line.startswith("error: feature store")


def test_resume_checkpoint_of_another_shape(tmp_path, capsys):
    assert train.main(vit_args(tmp_path / "a", "--epoch", "1")) == 0
    capsys.readouterr()
    args = vit_args(tmp_path / "b", "--epoch", "2", "--resume", str(tmp_path / "a" / "epoch_1.pth"))
    i = args.index("--features_list")
    args[i + 1:i + 5] = ["2", "4", "6"]
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert "does not fit" in assert_user_error(2, err)
    assert "--features_list [2, 4, 6] differs" in err  # the resumed run's setting is named


def test_no_anomalous_image_warns(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(GOLDEN / "data" / "mvtec" / "bottle", data / "bottle")
    meta = json.loads((GOLDEN / "data" / "mvtec" / "meta.json").read_text())
    meta = {split: {"bottle": [e for e in meta[split]["bottle"] if not e["anomaly"]]}
            for split in ("train", "test")}
    (data / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="no anomalous image"):
        assert train.main(vit_args(tmp_path / "run", "--epoch", "1", data=data)) == 0


def test_help_and_checkpoint_format(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for name in ("--train_data_path", "--aug_rate", "--resume", "--cache_features", "--init-checkpoint"):
        assert name in text
    assert train.main(vit_args(tmp_path, "--epoch", "2", "--save_freq", "2", "--batch_size", "6")) == 0
    assert not (tmp_path / "epoch_1.pth").exists()
    ckpt = torch.load(tmp_path / "epoch_2.pth", weights_only=True)
    assert set(ckpt) == {"trainable_linearlayer", "config", "trained_with", "optimizer", "epoch",
                         "rng"}
    assert ckpt["trained_with"] == {"model": "tiny-vit", "image_size": 84,
                                    "features_list": [2, 4, 6, 8]}
    assert sorted(ckpt["trainable_linearlayer"]) == sorted(
        f"fc.{i}.{p}" for i in range(4) for p in ("weight", "bias"))
    assert ckpt["config"] == json.loads((tmp_path / "config.json").read_text())


def test_rng_state_round_trip():
    state = rng_state()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and (first[1] == again[1]).all() and first[2] == again[2]


def test_each_epoch_is_shuffled_anew_and_reproducibly():
    """The order is a permutation, the same for the same (seed, epoch) whatever else drew random
    numbers before, different for another epoch or seed."""
    from engine.training import epoch_order

    a = epoch_order(50, 111, 0)
    assert sorted(a) == list(range(50))
    torch.manual_seed(12345)
    torch.rand(7)  # other draws in between do not shift it
    assert epoch_order(50, 111, 0) == a
    assert epoch_order(50, 111, 1) != a and epoch_order(50, 112, 0) != a
    assert len({tuple(epoch_order(50, 111, e)) for e in range(5)}) == 5
