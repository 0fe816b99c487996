"""Tests of training from normal images only (``train.py --synthesize_anomalies``, issue 16).

End to end on the tiny random ViT at 84 px (CPU): ``--train_split train`` and
``--train_image_dir``, exact resume, the feature cache, clear errors, the dataset wrapper's
determinism and its released behaviour at P = 0, and a smoke run of the benchmark script.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GOLDEN, REPO, assert_user_error
from PIL import Image

import train
from datasets import AnomalyDataset, anomaly_dataset, make_samples, normal_only
from datasets.normal_only import SynthesizingDataset, folder_samples, synthesis_seed, training_dataset

VIT = GOLDEN / "models"
MVTEC = GOLDEN / "data" / "mvtec"
VISA = GOLDEN / "data" / "visa"
pytestmark = pytest.mark.skipif(not (VIT / "tiny-vit-random.pt").is_file(),
                                reason=f"golden fixtures not found under {GOLDEN}")


def args(save: Path, *extra: str, data: Path = MVTEC, dataset: str = "mvtec",
         init: bool = True) -> list[str]:
    """A tiny-ViT run (from the fixture's random projections unless ``init`` is False)."""
    start = ["--init_checkpoint", str(VIT / "linear-random.pth")] if init else []
    return ["--dataset", dataset, "--train_data_path", str(data), "--save_path", str(save),
            "--model", "tiny-vit", "--config_path", str(VIT / "tiny-vit.json"), "--pretrained",
            str(VIT / "tiny-vit-random.pt"), "--image_size", "84", "--features_list", "2", "4",
            "6", "8", "--device", "cpu", *start, *extra]


def ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def same_weights(a: dict, b: dict) -> bool:
    wa, wb = a["trainable_linearlayer"], b["trainable_linearlayer"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """A plain folder: RGB, grayscale and non-square images, a sub-folder and a non-image."""
    d = tmp_path_factory.mktemp("plain")
    rng = np.random.default_rng(0)
    for i, src in enumerate(sorted((MVTEC / "bottle" / "train" / "good").iterdir())[:4]):
        im = Image.open(src).convert("RGB")
        if i == 1:
            im = im.convert("L")
        if i == 2:
            im = im.resize((im.width, im.height * 3 // 4))
        im.save(d / f"img{i}{'.jpg' if i == 3 else '.png'}")
    (d / "notes.txt").write_text("not an image")
    (d / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(d / "sub" / "x.png")
    return d


def test_train_split_runs_and_resumes_exactly(tmp_path):
    common = ["--train_split", "train", "--synthesize_anomalies", "0.5", "--aug_rate", "0.3",
              "--batch_size", "5"]
    assert train.main(args(tmp_path / "full", *common, "--epoch", "2")) == 0
    assert train.main(args(tmp_path / "part", *common, "--epoch", "1")) == 0
    assert train.main(args(tmp_path / "part", *common, "--epoch", "2", "--resume",
                           str(tmp_path / "part" / "epoch_1.pth"), init=False)) == 0
    a, b = ckpt(tmp_path / "full" / "epoch_2.pth"), ckpt(tmp_path / "part" / "epoch_2.pth")
    assert same_weights(a, b) and a["epoch"] == b["epoch"] == 2
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert set(a) == {"trainable_linearlayer", "config", "trained_with", "optimizer", "epoch", "rng"}
    assert a["config"]["synthesize_anomalies"] == 0.5 and a["config"]["train_split"] == "train"
    log = (tmp_path / "full" / "log.txt").read_text()
    assert "(train split, 2 categories, 10 images, 0 anomalous)" in log
    assert "synthesize_anomalies 0.5" in log and "epoch [2/2], loss:" in log
    assert "warning" not in log


def test_normal_only_epoch_default():
    from engine.config import NORMAL_ONLY_EPOCHS, PAPER_EPOCHS

    base = ["--synthesize_anomalies", "0.5"]
    assert train.parse_args(base + ["--train_split", "train"]).epoch == NORMAL_ONLY_EPOCHS
    assert train.parse_args(base + ["--train_image_dir", "x", "--object_name", "o"]).epoch == \
        NORMAL_ONLY_EPOCHS
    assert train.parse_args(["--dataset", "visa"]).epoch == PAPER_EPOCHS["visa"]  # as released
    assert train.parse_args(base + ["--train_split", "train", "--epoch", "2"]).epoch == 2


def test_training_moves_the_weights_and_visa_train_rows(tmp_path):
    out = train.train(train.parse_args(args(tmp_path, "--train_split", "train",
                                            "--synthesize_anomalies", "1", "--epoch", "1",
                                            "--batch_size", "10", data=VISA, dataset="visa")))
    init = ckpt(VIT / "linear-random.pth")["trainable_linearlayer"]
    trained = ckpt(tmp_path / "epoch_1.pth")["trainable_linearlayer"]
    assert any(not torch.equal(init[k], trained[k]) for k in init)
    assert out["backbone_images"] == 10 and np.isfinite(out["epoch_losses"][0])


def test_train_image_dir(tmp_path, image_dir, capsys, monkeypatch):
    extra = ["--synthesize_anomalies", "0.5", "--object_name", "bottle", "--batch_size", "3",
             "--epoch", "2", "--aug_rate", "0.5"]
    a = args(tmp_path / "run", "--train_image_dir", str(image_dir), *extra)
    i = a.index("--train_data_path")
    del a[i:i + 2]  # no dataset root at all

    def no_mosaic(*a, **k):
        raise AssertionError("a mosaic was drawn for --train_image_dir")
    monkeypatch.setattr(normal_only, "mosaic", no_mosaic)
    monkeypatch.setattr(anomaly_dataset, "mosaic", no_mosaic)
    assert train.main(a) == 0
    err = capsys.readouterr().err
    assert "notes.txt" in err  # the unreadable file is named, not fatal
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "--aug_rate 0.5 ignored" in log
    assert f"the images of {image_dir} (bottle, 1 category, 4 images" in log
    c = ckpt(tmp_path / "run" / "epoch_2.pth")
    assert c["config"]["object_name"] == "bottle" and c["epoch"] == 2
    # --recursive takes the sub-folder too
    assert [s.img_path for s in folder_samples(image_dir, "bottle", recursive=True)] == \
        ["img0.png", "img1.png", "img2.png", "img3.jpg", "sub/x.png"]


def test_cache_serves_untouched_images_only(tmp_path):
    common = ["--train_split", "train", "--synthesize_anomalies", "0.5", "--aug_rate", "0",
              "--batch_size", "5", "--epoch", "2", "--seed", "3"]
    plain = train.train(train.parse_args(args(tmp_path / "plain", *common)))
    cache = tmp_path / "cache"
    cached = train.train(train.parse_args(args(tmp_path / "cached", *common,
                                               "--cache_features", str(cache))))
    # the cached run sends only the uncached images through the backbone (smaller batches):
    # float32 rounding apart on some CPUs (1.5e-8 measured with MKL's Intel AVX2 kernels)
    wa, wb = (ckpt(tmp_path / d / "epoch_2.pth")["trainable_linearlayer"]
              for d in ("plain", "cached"))
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6
    samples = [s for c in make_samples(MVTEC, "train").values() for s in c]
    ds = training_dataset(MVTEC, samples, 84, 0.0, 3, 0.5)
    synth = []
    for e in range(2):
        ds.set_epoch(e)
        synth.append({i for i in range(len(ds)) if ds.is_synthesized(i)})
    assert 0 < len(synth[0]) < len(ds)
    # epoch 1: every sample through the backbone; epoch 2: the synthesized ones and the normal
    # ones that were synthesized in epoch 1 (not cached then)
    assert plain["backbone_images"] == 2 * len(ds)
    assert cached["backbone_images"] == len(ds) + len(synth[1] | synth[0])


def test_released_path_unchanged_at_p0():
    samples = [s for c in make_samples(MVTEC, "test").values() for s in c]
    released = AnomalyDataset(MVTEC, samples, 84, 0.5, 111)
    assert type(training_dataset(MVTEC, samples, 84, 0.5, 111, 0.0)) is AnomalyDataset
    wrapped = SynthesizingDataset(MVTEC, samples, 84, 0.5, 111, 0.0)
    for e in (0, 1):
        released.set_epoch(e)
        wrapped.set_epoch(e)
        for i in range(len(samples)):
            a, b = released[i], wrapped[i]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
            assert a["augmented"] == b["augmented"] == released.is_augmented(i)


class _CornerDefect:
    """A stand-in synthesizer: paints the top-left 8 x 8 pixels and reports exactly those."""

    def synth(self, img, epoch, index):
        arr = np.array(img)
        arr[:8, :8] = 255
        changed = np.zeros(arr.shape[:2], bool)
        changed[:8, :8] = True
        return Image.fromarray(arr), changed


def test_synthesis_on_a_defective_image_keeps_the_real_defect():
    """The training mask is the real defect OR the synthesized one (never one of them only)."""
    samples = [s for c in make_samples(MVTEC, "test").values() for s in c]
    i = next(k for k, s in enumerate(samples) if s.anomaly)
    plain = AnomalyDataset(MVTEC, samples, 84, 0.0, 111)[i]["mask"]
    ds = SynthesizingDataset(MVTEC, samples, 84, 0.0, 111, 1.0, _CornerDefect())
    item = ds[i]
    assert plain.sum() > 0 and item["label"] == 1 and item["augmented"]
    assert bool((item["mask"] >= plain).all())  # every real defect pixel is still a defect
    corner = item["mask"][:2, :2]  # 8 px of the original size cover the first pixels at 84
    assert bool((corner == 1).all())
    assert item["mask"].sum() > plain.sum()


def test_synthesis_is_seeded_per_epoch_and_index():
    samples = [s for c in make_samples(MVTEC, "train").values() for s in c]

    def item(epoch: int, index: int, seed: int = 111) -> dict:
        ds = training_dataset(MVTEC, samples, 84, 0.0, seed, 1.0)
        ds.set_epoch(epoch)
        return ds[index]

    a, b = item(2, 3), item(2, 3)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert a["mask"].sum() > 0 and a["augmented"] and a["label"] == 1
    assert not torch.equal(a["mask"], item(1, 3)["mask"])
    assert not torch.equal(a["mask"], item(2, 3, seed=112)["mask"])
    assert synthesis_seed(111) != 111  # its own stream, not the mosaic's


@pytest.mark.parametrize("extra, names", [
    (["--train_split", "train"], ["--train_split train", "--synthesize_anomalies"]),
    (["--train_image_dir", "IMG", "--synthesize_anomalies", "0.5"], ["--train_image_dir",
                                                                      "--object_name"]),
    (["--train_image_dir", "IMG", "--object_name", "bottle"], ["--synthesize_anomalies"]),
    (["--train_image_dir", "IMG", "--object_name", "b", "--synthesize_anomalies", "0.5",
      "--train_split", "train"], ["--train_split", "--train_image_dir"]),
    (["--object_name", "bottle"], ["--object_name", "--train_image_dir"]),
    (["--texture_dir", "TEX"], ["--texture_dir", "--synthesize_anomalies"]),
    (["--train_split", "train", "--synthesize_anomalies", "0.5", "--texture_dir", "MISSING"],
     ["texture_dir", "MISSING"]),
    (["--train_image_dir", "EMPTY", "--object_name", "b", "--synthesize_anomalies", "0.5"],
     ["EMPTY"]),
    (["--synthesize_anomalies", "1.5"], ["--synthesize_anomalies", "from 0 to 1"]),
])
def test_clear_errors(tmp_path, image_dir, capsys, extra, names):
    (tmp_path / "EMPTY").mkdir()
    subs = {"IMG": str(image_dir), "TEX": str(image_dir), "MISSING": str(tmp_path / "MISSING"),
            "EMPTY": str(tmp_path / "EMPTY")}
    extra = [subs.get(x, x) for x in extra]
    names = [n.replace("MISSING", subs["MISSING"]).replace("EMPTY", subs["EMPTY"]) for n in names]
    save = tmp_path / "run"
    try:
        code = train.main(args(save, *extra, "--epoch", "1"))
    except SystemExit as e:  # a flag combination: argparse's "train.py: error: ..." line
        code = e.code
    err = capsys.readouterr().err.replace("train.py: error:", "error:")
    assert_user_error(code, err, *names)
    assert not list(save.glob("*.pth"))


def test_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "benchmark_normal_only", REPO / "scripts" / "benchmark_normal_only.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--seed", "7", "--out", str(tmp_path), "--epochs", "1",
                       "--supervised_epochs", "1", "--mvtec_categories", "bottle",
                       "--visa_categories", "candle", "--n_train", "3", "--n_test", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("normal-only vs untrained: auroc_px ") and ", pro " in lines[-1]
    assert any(line.startswith("| mvtec | bottle |") for line in lines)
    assert any(line.startswith("| visa | candle |") for line in lines)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["results"]) == {"mvtec", "visa"}


class _Recorder:
    """A stand-in synthesizer: marks every pixel as changed and records the mode it was given."""

    def __init__(self):
        self.modes: list[str] = []

    def synth(self, img, epoch, index):
        self.modes.append(img.mode)
        return img, np.ones((img.height, img.width), bool)


def _mvtec_samples(split: str = "test"):
    root = GOLDEN / "data" / "mvtec"
    if not root.is_dir():
        pytest.skip(f"golden fixtures not found under {GOLDEN}")
    return root, [s for c in make_samples(root, split).values() for s in c]


@pytest.mark.parametrize("rate", [-0.1, 1.5, 2.0])
def test_a_synthesis_rate_outside_0_1_is_refused(rate):
    root, samples = _mvtec_samples()
    with pytest.raises(ValueError, match=r"synth_rate must be in \[0, 1\]"):
        SynthesizingDataset(root, samples, 84, 0.0, 111, rate, _Recorder())


def test_the_synthesis_rate_bounds_and_the_synthesizer_it_needs():
    root, samples = _mvtec_samples()
    for rate in (0.0, 1.0):  # both ends are allowed
        ds = SynthesizingDataset(root, samples, 84, 0.0, 111, rate, _Recorder())
        assert ds.synth_rate == rate
    assert SynthesizingDataset(root, samples, 84, 0.0, 111, 0.0).synth_rate == 0.0
    with pytest.raises(ValueError, match="needs a synthesizer"):
        SynthesizingDataset(root, samples, 84, 0.0, 111, 0.5)


def test_the_defaults_are_the_released_dataset():
    """``SynthesizingDataset(root, samples, size)``: no mosaic, no synthesis, as released."""
    root, samples = _mvtec_samples()
    ds = SynthesizingDataset(root, samples, 84)
    assert (ds.aug_rate, ds.synth_rate, ds.synthesizer) == (0.0, 0.0, None)
    i = next(k for k, s in enumerate(samples) if s.anomaly)
    a, b = ds[i], AnomalyDataset(root, samples, 84)[i]
    assert a["label"] == b["label"] == 1 and not a["augmented"]
    assert bool((a["mask"] == b["mask"]).all()) and bool((a["image"] == b["image"]).all())


def test_training_dataset_without_a_rate_is_the_released_one():
    root, samples = _mvtec_samples("train")
    assert type(training_dataset(root, samples, 84, 0.0, 111)) is AnomalyDataset


def test_a_synthesized_sample_is_augmented_so_never_read_from_the_feature_cache():
    """The feature cache serves a sample only when ``is_augmented`` is False: a synthesized
    image must never get the features of its clean original."""
    root, samples = _mvtec_samples()
    ds = SynthesizingDataset(root, samples, 84, 0.0, 111, 1.0, _Recorder())  # no mosaic, P = 1
    assert all(ds.is_synthesized(i) and not ds.is_mosaic(i) and ds.is_augmented(i)
               for i in range(len(samples)))
    plain = SynthesizingDataset(root, samples, 84, 0.0, 111, 0.0)
    assert not any(plain.is_augmented(i) for i in range(len(samples)))


def test_a_quarter_of_the_samples_are_synthesized_at_p_one_quarter():
    """rng.random() < P: about P of the (epoch, index) draws, not 1 - P."""
    root, samples = _mvtec_samples()
    ds = SynthesizingDataset(root, samples, 84, 0.0, 111, 0.25, _Recorder())
    hits = []
    for epoch in range(40):
        ds.set_epoch(epoch)
        hits += [ds.is_synthesized(i) for i in range(len(samples))]
    assert len(hits) >= 200 and 0.15 < np.mean(hits) < 0.35


@pytest.mark.parametrize("mode, given", [("P", "RGB"), ("CMYK", "RGB"), ("L", "L"), ("RGB", "RGB")])
def test_the_synthesizer_gets_a_mode_it_handles(mode, given):
    """Palette and CMYK images are converted to RGB before the defect is drawn; gray and colour
    ones are passed as they are. The mask is the old one OR the defect's (here: every pixel)."""
    root, samples = _mvtec_samples()
    rec = _Recorder()
    ds = SynthesizingDataset(root, samples, 84, 0.0, 111, 1.0, rec)
    img = Image.new("RGB", (6, 4), (10, 200, 30)).convert(mode)
    real = np.zeros((4, 6), np.uint8)
    real[1, 2] = 255  # a real defect pixel, also covered by the synthesized one
    out, mask = ds._synthesize(img, Image.fromarray(real, mode="L"), 0)
    assert rec.modes == [given] and out.mode == given
    assert mask.mode == "L" and np.asarray(mask).tolist() == [[255] * 6] * 4
