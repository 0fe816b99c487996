"""Dataset indexing and preprocessing (METHOD §2, §8).

* ``python -m datasets.prepare`` rebuilds the fixtures' meta.json;
* images are squashed exactly as open_clip's ``resize_mode='squash'`` eval transform (not the
  default 'shortest'); grayscale images become RGB after the resize;
* masks: pixels > 0 (VisA class ids) -> binary, squashed like the image; they equal the fixture's
  ``gt_masks``;
* 16-bit images are scaled to 8 bits (not clipped) and evaluate like their 8-bit original.
"""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import DATASET_NAMES, GOLDEN, RN, VIT, copy_dataset, load_predictions, require, run_prepare, run_test_main
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transform import image_transform as openclip_transform
from PIL import Image

from datasets import AnomalyDataset, image_transform, load_meta, make_samples, mask_transform
from datasets import anomaly_dataset as ad
from datasets.transforms import binary_mask_image, image_transform, open_image


def _squash(size):
    return openclip_transform(size, is_train=False, mean=OPENAI_DATASET_MEAN,
                              std=OPENAI_DATASET_STD, resize_mode="squash")


def _shortest(size):
    return openclip_transform(size, is_train=False, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)


def _key(entry: dict) -> str:
    return json.dumps(entry, sort_keys=True)


# --- meta.json ---------------------------------------------------------------------------------

@pytest.mark.parametrize("ds", DATASET_NAMES)
def test_prepare_reproduces_fixture_meta(ds, tmp_path):
    require(GOLDEN / "data" / ds / "meta.json")
    root = copy_dataset(ds, tmp_path / ds, with_meta=False)
    assert not (root / "meta.json").exists()
    proc = run_prepare(ds, root)
    assert proc.returncode == 0, proc.stderr
    ours = json.loads((root / "meta.json").read_text())
    ref = json.loads((GOLDEN / "data" / ds / "meta.json").read_text())
    assert set(ours) >= {"train", "test"}
    for split in ("train", "test"):
        assert list(ours[split]) == list(ref[split]), split  # categories, in the released order
        for cls in ref[split]:
            # MVTec defect folders are sorted here, os.listdir order in the released solver
            assert Counter(map(_key, ours[split][cls])) == Counter(map(_key, ref[split][cls])), cls
            if ds == "visa":  # CSV row order on both sides
                assert ours[split][cls] == ref[split][cls]
            else:  # within a defect type, files are in sorted order on both sides
                for sp in {e["specie_name"] for e in ref[split][cls]}:
                    assert ([e for e in ours[split][cls] if e["specie_name"] == sp]
                            == [e for e in ref[split][cls] if e["specie_name"] == sp])


def test_make_samples_reads_meta_in_order():
    root = VIT.data("mvtec")
    meta = load_meta(root)
    test = make_samples(root, "test", meta=meta)
    assert list(test) == list(meta["test"])
    for cls, samples in test.items():
        assert [s.img_path for s in samples] == [e["img_path"] for e in meta["test"][cls]]
        assert all(bool(s.mask_path) == bool(s.anomaly) for s in samples)
    sub = make_samples(root, "test", [list(test)[-1]], meta=meta)
    assert list(sub) == [list(test)[-1]]


# --- image preprocessing -----------------------------------------------------------------------

def _fixture_images():
    out = []
    for ds in DATASET_NAMES:
        meta = json.loads((GOLDEN / "data" / ds / "meta.json").read_text())
        for cls, entries in meta["test"].items():
            out.append(GOLDEN / "data" / ds / entries[0]["img_path"])
    return out


@pytest.mark.parametrize("size", [84, 64])
def test_image_transform_is_openclip_squash(size):
    rng = np.random.default_rng(0)
    images = [Image.open(p) for p in _fixture_images()]
    images += [Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)),       # wide RGB
               Image.fromarray(rng.integers(0, 256, (130, 70), dtype=np.uint8), mode="L")]  # tall gray
    assert any(im.mode == "L" for im in images) and any(im.size[0] != im.size[1] for im in images)
    ours, squash, shortest = image_transform(size), _squash(size), _shortest(size)
    for im in images:
        x = ours(im)
        assert x.shape == (3, size, size) and x.dtype == torch.float32
        assert torch.equal(x, squash(im)), (im.mode, im.size)
        if im.size[0] != im.size[1]:
            assert (x - shortest(im)).abs().max() > 0.1  # the default crop is not what we do


def test_grayscale_converted_after_resize():
    rng = np.random.default_rng(1)
    gray = Image.fromarray(rng.integers(0, 256, (50, 80), dtype=np.uint8), mode="L")
    x = image_transform(84)(gray)
    # three identical channels up to the per-channel normalisation
    mean, std = torch.tensor(OPENAI_DATASET_MEAN), torch.tensor(OPENAI_DATASET_STD)
    raw = x * std[:, None, None] + mean[:, None, None]
    torch.testing.assert_close(raw[0], raw[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(raw[0], raw[2], rtol=0, atol=1e-6)
    # resize as "L", then RGB: equals resizing the gray image itself
    ref = np.asarray(gray.resize((84, 84), Image.BICUBIC), dtype=np.float32) / 255
    torch.testing.assert_close(raw[0], torch.from_numpy(ref), rtol=0, atol=1e-6)


# --- masks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fx", [VIT, RN], ids=["vit", "resnet"])
@pytest.mark.parametrize("ds", DATASET_NAMES)
def test_masks_equal_fixture_gt(ds, fx):
    """Binary masks at S (VisA ids > 0 -> anomalous, non-square squash) = the fixture's gt_masks."""
    exp_path = fx.expected_npz(ds)
    require(exp_path)
    exp = load_predictions(exp_path)
    size = exp["anomaly_maps"].shape[-1]
    root = fx.data(ds)
    samples = {s.img_path: s for v in make_samples(root, "test").values() for s in v}
    data = AnomalyDataset(root, [samples[str(p)] for p in exp["img_paths"]], size)
    for i in range(len(data)):
        item = data[i]
        assert item["mask"].shape == (size, size)
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        np.testing.assert_array_equal(item["mask"].numpy().astype(np.uint8), exp["gt_masks"][i],
                                      err_msg=item["path"])
        assert item["label"] == int(exp["gt_sp"][i])
        if not item["label"]:
            assert item["mask"].sum() == 0


def test_visa_class_ids_become_binary():
    root = VIT.data("visa")
    masks = [s.mask_path for v in make_samples(root, "test").values() for s in v if s.anomaly]
    raw = [np.asarray(Image.open(root / m).convert("L")) for m in masks]
    assert max(r.max() for r in raw) < 255  # small ids, as in VisA
    for m, r in zip(masks, raw):
        b = np.asarray(binary_mask_image(root / m))
        np.testing.assert_array_equal(b, np.where(r > 0, 255, 0))


def test_mask_squash_non_square(tmp_path):
    """A 120x60 mask whose left half is set stays the left half at S x S (squash, no crop)."""
    m = np.zeros((60, 120), np.uint8)
    m[:, :60] = 2  # a class id, not 255
    Image.fromarray(m, mode="L").save(tmp_path / "m.png")
    out = mask_transform(32)(binary_mask_image(tmp_path / "m.png"))[0]
    assert out.shape == (32, 32)
    assert torch.all(out[:, :16] == 1) and torch.all(out[:, 16:] == 0)
    # the same as resizing a 0/255 PIL mask bilinearly (antialiased) and thresholding at 0.5
    ref = np.asarray(Image.fromarray(np.where(m > 0, 255, 0).astype(np.uint8)).resize(
        (32, 32), Image.BILINEAR), dtype=np.float32) / 255 > 0.5
    np.testing.assert_array_equal(out.numpy().astype(bool), ref)


def test_16bit_mask_with_small_ids(tmp_path):
    m = np.zeros((40, 40), np.uint16)
    m[5:15, 5:25] = 1
    Image.fromarray(m).save(tmp_path / "m16.png")
    assert Image.open(tmp_path / "m16.png").mode.startswith("I")
    b = np.asarray(binary_mask_image(tmp_path / "m16.png"))
    np.testing.assert_array_equal(b, np.where(m > 0, 255, 0))


# --- 16-bit images -----------------------------------------------------------------------------

def test_16bit_image_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 257, 32896], [50000, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").mode == "I;16"
    im = open_image(tmp_path / "x.png")
    assert im.mode == "L"
    np.testing.assert_array_equal(np.asarray(im), np.round(a / 257).astype(np.uint8))


def test_16bit_image_evaluates_like_its_8bit_original(tmp_path):
    """A grayscale test image re-saved as 16-bit (v * 257) gives the same map as the original."""
    ds = "mvtec"
    require(VIT.expected_npz(ds))
    root = copy_dataset(ds, tmp_path / ds)
    meta = load_meta(root)
    gray = None
    for cls, entries in meta["test"].items():
        for e in entries:
            if Image.open(root / e["img_path"]).mode == "L":
                gray = (cls, e["img_path"])
                break
        if gray:
            break
    if gray is None:
        pytest.skip("no grayscale test image in this fixture")
    cls, rel = gray
    v = np.asarray(Image.open(root / rel), dtype=np.uint16)
    Image.fromarray(v * 257).save(root / rel)
    assert Image.open(root / rel).mode == "I;16"
    save = tmp_path / "out"
    assert run_test_main(VIT.args(ds, save, "zero_shot", "--save_predictions", "--no_mvtec_aupro",
                                  "--categories", cls, "--data_path", str(root))) == 0
    ours = load_predictions(save / "predictions.npz")
    exp = load_predictions(VIT.expected_npz(ds))
    i, j = ours["index"][rel], exp["index"][rel]
    np.testing.assert_allclose(ours["anomaly_maps"][i], exp["anomaly_maps"][j], rtol=0, atol=1e-4)
    assert abs(ours["pr_sp"][i] - exp["pr_sp"][j]) <= 5e-6


ROOT = GOLDEN / "data" / "mvtec"


def _dataset(aug):
    require(ROOT / "meta.json")
    samples = [s for v in make_samples(ROOT, "test").values() for s in v]
    return ad.AnomalyDataset(ROOT, samples, 84, aug_rate=aug, seed=5), samples


def test_mosaic_probability_is_honoured():
    ds, samples = _dataset(0.2)
    hits = 0
    for epoch in range(100):
        ds.set_epoch(epoch)
        hits += sum(ds.is_augmented(i) for i in range(len(samples)))
    n = 100 * len(samples)  # 1,200 seeded draws: within 4 standard deviations of 0.2
    assert abs(hits / n - 0.2) < 4 * np.sqrt(0.2 * 0.8 / n)
    assert not any(_dataset(0.0)[0].is_augmented(i) for i in range(len(samples)))
    ds1, _ = _dataset(1.0)
    assert all(ds1.is_augmented(i) for i in range(len(samples)))


def test_mosaic_tiles_and_masks(monkeypatch):
    ds, samples = _dataset(1.0)
    drawn = []
    real = ad.load_pair

    def record(root, s):
        drawn.append(s)
        return real(root, s)
    monkeypatch.setattr(ad, "load_pair", record)
    for i, s in enumerate(samples):
        drawn.clear()
        rng = ds._rng(i)
        rng.random()  # the aug decision comes first
        image, mask = ad.mosaic(ROOT, ds.mosaic_pool[s.cls_name], rng)
        assert len(drawn) == 4 and {t.cls_name for t in drawn} == {s.cls_name}  # same category
        w, h = open_image(ROOT / drawn[0].img_path).size
        assert image.size == (2 * w, 2 * h) and mask.size == (2 * w, 2 * h)
        m = np.asarray(mask)
        for k, t in enumerate(drawn):  # tile k at ((k % 2) w, (k // 2) h), row-major
            x, y = (k % 2) * w, (k // 2) * h
            tile_img, tile_mask = real(ROOT, t)
            np.testing.assert_array_equal(np.asarray(image)[y:y + h, x:x + w],
                                          np.asarray(tile_img.convert("RGB")))
            np.testing.assert_array_equal(m[y:y + h, x:x + w], np.asarray(tile_mask))
    # the dataset serves exactly that mosaic, resized, with its mask
    item = ds[0]
    assert item["augmented"] and item["image"].shape == (3, 84, 84)
