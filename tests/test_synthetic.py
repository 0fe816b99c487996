"""Tests for tools/synthetic: layouts match the golden fixture, masks are exact and sane,
generation is deterministic, and existing data is not overwritten by accident."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tools import synthetic
from tools.synthetic import CATEGORIES, generate_mvtec, generate_visa

FIXTURE = Path(__file__).parent / "fixtures" / "golden" / "data"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _mvtec_pattern(rel: str) -> str:
    """bottle/test/scratch/001.png -> <cat>/test/<defect>/NNN.png"""
    parts = rel.split("/")
    parts[0] = "<cat>"
    if len(parts) == 4 and parts[1] in ("test", "ground_truth") and parts[2] != "good":
        parts[2] = "<defect>"
    return re.sub(r"\d", "N", "/".join(parts))


def _visa_pattern(rel: str) -> str:
    parts = rel.split("/")
    if parts[0] != "split_csv":
        parts[0] = "<cat>"
    return re.sub(r"\d", "N", "/".join(parts)).replace("NclsN", "1cls")  # keep 1cls.csv literal


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory) -> Path:
    return generate_mvtec(tmp_path_factory.mktemp("mvtec"), seed=1000)


@pytest.fixture(scope="module")
def visa(tmp_path_factory) -> Path:
    return generate_visa(tmp_path_factory.mktemp("visa"), seed=2000)


def test_mvtec_layout_matches_fixture(mvtec):
    ours = {_mvtec_pattern(r) for r in _files(mvtec)}
    golden = {_mvtec_pattern(r) for r in _files(FIXTURE / "mvtec") if r != "meta.json"}
    assert ours == golden
    assert not (mvtec / "meta.json").exists()
    for cat in ("bottle", "grid"):
        assert len(list((mvtec / cat / "train" / "good").glob("*.png"))) == 5
        assert len(list((mvtec / cat / "test" / "good").glob("*.png"))) == 3
        defects = [p for p in (mvtec / cat / "test").glob("*/*.png") if p.parent.name != "good"]
        assert len(defects) == 3


def test_mvtec_masks_binary_and_aligned(mvtec):
    masks = sorted(mvtec.glob("*/ground_truth/*/*_mask.png"))
    assert len(masks) == 6
    for m in masks:
        img = m.parents[2] / "test" / m.parent.name / m.name.replace("_mask", "")
        assert img.exists()
        mk = Image.open(m)
        assert mk.mode == "L" and mk.size == Image.open(img).size == (96, 96)
        a = np.array(mk)
        assert set(np.unique(a)) == {0, 255}
        assert 0.005 <= (a > 0).mean() <= 0.12, m  # visible, not the whole image
    # every defective test image has its mask, and no mask is left over
    tests = {p.relative_to(mvtec).as_posix() for p in mvtec.glob("*/test/*/*.png") if p.parent.name != "good"}
    assert tests == {m.relative_to(mvtec).as_posix().replace("ground_truth", "test").replace("_mask", "")
                     for m in masks}


def test_modes_and_sizes(mvtec, visa):
    assert {Image.open(p).mode for p in (mvtec / "grid").rglob("*.png") if "ground_truth" not in p.parts} == {"L"}
    assert {Image.open(p).mode for p in (mvtec / "bottle").rglob("*.png") if "ground_truth" not in p.parts} == {"RGB"}
    for p in visa.rglob("*.JPG"):
        im = Image.open(p)
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (120, 90)  # not square


def test_defects_are_visible(mvtec, visa):
    """Masked pixels differ clearly from a thin ring of pixels just outside the mask."""
    pairs = [(m, m.parents[2] / "test" / m.parent.name / m.name.replace("_mask", ""))
             for m in mvtec.glob("*/ground_truth/*/*_mask.png")]
    pairs += [(m, m.parents[2] / "Images" / "Anomaly" / f"{m.stem}.JPG") for m in visa.glob("*/Data/Masks/*/*.png")]
    for m, p in pairs:
        mask = np.array(Image.open(m)) > 0
        img = np.asarray(Image.open(p).convert("RGB"), np.float32)
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~mask
        assert np.abs(img[mask].mean(0) - img[ring].mean(0)).max() > 15, p


def test_visa_layout_matches_fixture(visa):
    ours = {_visa_pattern(r) for r in _files(visa)}
    golden = {_visa_pattern(r) for r in _files(FIXTURE / "visa") if r != "meta.json"}
    assert ours == golden
    assert not (visa / "meta.json").exists()


def test_visa_masks_are_small_ids(visa):
    masks = sorted(visa.glob("*/Data/Masks/Anomaly/*.png"))
    assert len(masks) == 6
    for m in masks:
        cat = m.relative_to(visa).parts[0]
        a = np.array(Image.open(m))
        img = Image.open(visa / cat / "Data" / "Images" / "Anomaly" / f"{m.stem}.JPG")
        assert Image.open(m).mode == "L" and a.shape == (img.size[1], img.size[0])
        ids = set(np.unique(a)) - {0}
        assert len(ids) == 1 and 1 <= min(ids) <= len(CATEGORIES[cat].defects), (m, ids)
        assert 255 not in a and 0.005 <= (a > 0).mean() <= 0.12


def test_visa_csv_matches_files(visa):
    # default categories and counts give exactly the fixture's CSV
    assert (visa / "split_csv" / "1cls.csv").read_bytes() == (FIXTURE / "visa" / "split_csv" / "1cls.csv").read_bytes()
    with open(visa / "split_csv" / "1cls.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["object", "split", "label", "image", "mask"]
    for r in rows:
        assert (visa / r["image"]).is_file() and r["image"].startswith(f"{r['object']}/Data/Images/")
        if r["label"] == "normal":
            assert r["mask"] == "" and "/Normal/" in r["image"]
        else:
            assert r["label"] == "anomaly" and r["split"] == "test" and (visa / r["mask"]).is_file()
            assert Path(r["mask"]).stem == Path(r["image"]).stem
    on_disk = {p.relative_to(visa).as_posix() for p in visa.glob("*/Data/*/*/*") if p.is_file()}
    assert on_disk == {r["image"] for r in rows} | {r["mask"] for r in rows if r["mask"]}
    assert len(rows) == 22


def test_deterministic_and_seed_dependent(tmp_path):
    kw = dict(n_train=2, n_test_good=1, n_test_defect=2, image_size=48)
    a = _files(generate_mvtec(tmp_path / "a", seed=3, **kw))
    b = _files(generate_mvtec(tmp_path / "b", seed=3, **kw))
    c = _files(generate_mvtec(tmp_path / "c", seed=4, **kw))
    assert a == b
    assert a.keys() == c.keys() and any(a[k] != c[k] for k in a)
    vkw = dict(n_train=2, n_test_normal=1, n_test_anomaly=2, image_size=(60, 40))
    va = _files(generate_visa(tmp_path / "va", seed=3, **vkw))
    vb = _files(generate_visa(tmp_path / "vb", seed=3, **vkw))
    assert va == vb  # JPEG too


def test_categories_have_independent_streams(tmp_path):
    kw = dict(n_train=1, n_test_good=1, n_test_defect=1, image_size=48, seed=5)
    both = _files(generate_mvtec(tmp_path / "both", categories=("bottle", "grid"), **kw))
    alone = _files(generate_mvtec(tmp_path / "alone", categories="grid", **kw))
    assert alone == {k: v for k, v in both.items() if k.startswith("grid/")}


@pytest.mark.parametrize("name", sorted(CATEGORIES))
def test_every_category_renders_with_defects(tmp_path, name):
    n = len(CATEGORIES[name].defects)
    root = generate_mvtec(tmp_path / "m", categories=[name], n_train=1, n_test_good=1, n_test_defect=n,
                          image_size=64)
    assert sorted(p.name for p in (root / name / "ground_truth").iterdir()) == sorted(CATEGORIES[name].defects)
    for m in (root / name / "ground_truth").glob("*/*.png"):
        assert (np.array(Image.open(m)) > 0).any()
    vroot = generate_visa(tmp_path / "v", categories=[name], n_train=1, n_test_normal=1, n_test_anomaly=n,
                          image_size=(80, 56))
    ids = {int(np.array(Image.open(m)).max()) for m in vroot.glob("*/Data/Masks/Anomaly/*.png")}
    assert ids == set(range(1, n + 1))
    mode = "L" if CATEGORIES[name].gray else "RGB"
    assert {Image.open(p).mode for p in (root / name / "train").rglob("*.png")} == {mode}


def test_refuses_to_overwrite(tmp_path):
    kw = dict(categories=["grid"], n_train=1, n_test_good=1, n_test_defect=1, image_size=32)
    generate_mvtec(tmp_path, **kw)
    with pytest.raises(ValueError, match="overwrite"):
        generate_mvtec(tmp_path, **kw)
    stale = tmp_path / "grid" / "train" / "good" / "999.png"
    stale.write_bytes(b"x")
    generate_mvtec(tmp_path, overwrite=True, **kw)
    assert not stale.exists()
    # an empty existing category folder is fine, and other categories are left alone
    (tmp_path / "bottle").mkdir()
    generate_mvtec(tmp_path, **{**kw, "categories": ["bottle"]})
    assert (tmp_path / "grid" / "train" / "good" / "000.png").exists()


def test_visa_csv_keeps_other_categories(tmp_path):
    kw = dict(n_train=1, n_test_normal=1, n_test_anomaly=1, image_size=(48, 32))
    generate_visa(tmp_path, categories=["candle"], **kw)
    generate_visa(tmp_path, categories=["pcb1"], **kw)
    generate_visa(tmp_path, categories=["pcb1"], overwrite=True, **kw)
    with open(tmp_path / "split_csv" / "1cls.csv", newline="") as f:
        objects = [r["object"] for r in csv.DictReader(f)]
    assert objects == ["candle"] * 3 + ["pcb1"] * 3


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="categories"):
        generate_mvtec(tmp_path, categories=["nope"])
    with pytest.raises(ValueError):
        generate_mvtec(tmp_path, image_size=8)
    with pytest.raises(ValueError):
        generate_visa(tmp_path, n_train=-1)


def test_cli(tmp_path, capsys):
    synthetic.main(["visa", str(tmp_path), "--categories", "candle", "--image-size", "64", "48",
                    "--n-train", "2", "--n-test-normal", "1", "--n-test-anomaly", "1", "--seed", "7"])
    out = capsys.readouterr().out
    assert "candle" in out and "1cls.csv" in out
    assert Image.open(tmp_path / "candle" / "Data" / "Images" / "Normal" / "0002.JPG").size == (64, 48)
    with pytest.raises(SystemExit):
        synthetic.main(["visa", str(tmp_path), "--categories", "candle"])  # exists, no --overwrite
    synthetic.main(["mvtec", str(tmp_path / "m"), "--categories", "screw", "--image-size", "40"])
    assert Image.open(tmp_path / "m" / "screw" / "train" / "good" / "004.png").size == (40, 40)
