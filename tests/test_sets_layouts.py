"""The builders' layout variants and edges, each on a replica of tools/synthetic/raw_sets changed
by hand: the other places a release puts its folders (BTAD without its wrapper, DAGM's nested
ClassN/ClassN, Real-IAD's JSON folder and lower resolutions, ELPV's source tree, HeadCT's
labels, the polyp copies), the value at a boundary (ELPV's probability 0, a mask pixel of 1, a
JPEG mask's 127 and 128), a file that cannot be read or is missing (named, with its line),
masks made once and only under the index's folder.

Builders are called as ``SETS[name].build(root, out)``; expected values are counted by hand
from the replicas. Fast (no model): part of the mutation check of datasets/sets/.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.sets import SETS
from datasets.sets.index_format import EVERY_IMAGE, PRANET
from errors import DatasetError
from tools.synthetic.raw_sets import RAW_SETS


def build(name: str, root: Path, out: Path | None = None) -> dict:
    return SETS[name].build(root, out or root)


def labels(meta: dict, split: str = "test") -> dict:
    """{img_path: anomaly} of one split, every category."""
    return {r["img_path"]: r["anomaly"] for rows in meta[split].values() for r in rows}


def _png(path: Path, a: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


# --- industrial ---------------------------------------------------------------------------------
def test_btad_without_its_wrapper_folder_and_with_none(tmp_path):
    RAW_SETS["btad"](tmp_path / "w")
    shutil.move(tmp_path / "w" / "BTech_Dataset_transformed", tmp_path / "bare")
    m = build("btad", tmp_path / "bare")
    assert sorted(m["test"]) == ["01", "02", "03"]
    assert labels(m)["02/test/ko/0020.png"] == 1 and labels(m)["01/test/ok/0010.bmp"] == 0
    assert m["test"]["02"][2]["mask_path"] == "02/ground_truth/ko/0020.png"
    with pytest.raises(DatasetError, match="no BTAD category folders"):
        build("btad", tmp_path / "w")  # its one folder moved away


def test_loco_writes_each_merged_mask_once_under_the_index_folder(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "index"
    RAW_SETS["mvtec_loco"](root)
    m = build("mvtec_loco", root, out)
    rows = {r["specie_name"]: r for r in m["test"]["juice_bottle"]}
    assert rows["structural_anomalies"]["mask_path"] == \
        "../index/merged_masks/juice_bottle/structural_anomalies/000.png"
    assert not (root / "merged_masks").exists()
    merged = out / "merged_masks" / "juice_bottle" / "structural_anomalies" / "000.png"
    _png(merged, np.full((2, 2), 255, np.uint8))  # made before: kept as it is
    build("mvtec_loco", root, out)
    assert np.asarray(Image.open(merged)).shape == (2, 2)
    shutil.rmtree(root / "juice_bottle" / "ground_truth" / "logical_anomalies" / "000")
    with pytest.raises(DatasetError, match=r"logical_anomalies/000.png has no masks in"):
        build("mvtec_loco", root, tmp_path / "other")


def test_loco_merges_colour_masks_by_their_channels(tmp_path):
    RAW_SETS["mvtec_loco"](tmp_path)
    gt = tmp_path / "juice_bottle" / "ground_truth" / "structural_anomalies" / "000"
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[0, 0, 2] = 9  # one pixel, blue only
    _png(gt / "000.png", rgb)
    m = build("mvtec_loco", tmp_path)
    row = next(r for r in m["test"]["juice_bottle"] if r["specie_name"] == "structural_anomalies")
    merged = np.asarray(Image.open(tmp_path / row["mask_path"]))
    assert merged.shape == (40, 40) and merged.sum() == 255 and merged[0, 0] == 255


def test_loco_merges_overlapping_masks_and_takes_only_folders_with_train_and_test(tmp_path):
    """Two masks that share a pixel: the merge keeps it (a union, not an exclusive or). A folder
    with train/good and no test/, and one with test/ alone, are not categories."""
    RAW_SETS["mvtec_loco"](tmp_path)
    gt = tmp_path / "juice_bottle" / "ground_truth" / "structural_anomalies" / "000"
    for j, pixels in enumerate([[(0, 0), (0, 1)], [(0, 0), (5, 5)]]):
        a = np.zeros((40, 40), np.uint8)
        for y, x in pixels:
            a[y, x] = 7
        _png(gt / f"{j:03d}.png", a)
    (tmp_path / "notes" / "train" / "good").mkdir(parents=True)
    (tmp_path / "loose" / "test").mkdir(parents=True)
    m = build("mvtec_loco", tmp_path)
    assert list(m["test"]) == ["juice_bottle"]
    row = next(r for r in m["test"]["juice_bottle"] if r["specie_name"] == "structural_anomalies")
    merged = np.asarray(Image.open(tmp_path / row["mask_path"]))
    assert sorted(zip(*np.nonzero(merged))) == [(0, 0), (0, 1), (5, 5)]


def test_ksdd_reads_kos_folders_only_and_ksdd2_dagm_name_defect_and_good(tmp_path):
    RAW_SETS["ksdd"](tmp_path / "ksdd")
    shutil.copytree(tmp_path / "ksdd" / "kos01", tmp_path / "ksdd" / "extras")  # not a kosNN
    assert all(p.startswith("kos") for p in labels(build("ksdd", tmp_path / "ksdd")))
    RAW_SETS["ksdd2"](tmp_path / "ksdd2")
    rows = build("ksdd2", tmp_path / "ksdd2")["test"]["surface"]
    assert [(r["img_path"], r["specie_name"]) for r in rows[:2]] == [
        ("test/20000.png", "defect"), ("test/20001.png", "good")]
    RAW_SETS["dagm"](tmp_path / "dagm")
    rows = build("dagm", tmp_path / "dagm")["test"]["Class1"]
    assert [(r["img_path"], r["specie_name"]) for r in rows[:2]] == [
        ("Class1/Test/0001.PNG", "good"), ("Class1/Test/0002.PNG", "defect")]


def test_mvtec_ad2_and_ksdd_need_their_folders(tmp_path):
    with pytest.raises(DatasetError, match="no MVTec AD 2 category folders"):
        build("mvtec_ad2", tmp_path)
    with pytest.raises(DatasetError, match="no kosNN folders"):
        build("ksdd", tmp_path)
    with pytest.raises(DatasetError, match="no MVTec LOCO category folders"):
        build("mvtec_loco", tmp_path)


def test_ksdd_a_label_of_one_marked_pixel_is_a_defect(tmp_path):
    RAW_SETS["ksdd"](tmp_path)
    one = np.zeros((40, 40), np.uint8)
    one[0, 0] = 1
    Image.fromarray(one).save(tmp_path / "kos02" / "Part0_label.bmp")
    got = labels(build("ksdd", tmp_path))
    assert len(got) == 12 and got["kos02/Part0.jpg"] == 1 and got["kos02/Part1.jpg"] == 0
    assert got["kos01/Part1.jpg"] == 1 and sum(got.values()) == 3
    normal = [r["img_path"] for r in build("ksdd", tmp_path)["test"]["commutator"]][:2]
    assert normal == ["kos01/Part0.jpg", "kos01/Part2.jpg"]  # normal first, in folder order


def test_ksdd2_leaves_defective_training_images_out_and_needs_both_splits(tmp_path):
    RAW_SETS["ksdd2"](tmp_path)
    m = build("ksdd2", tmp_path)
    assert labels(m, "train") == {"train/10000.png": 0, "train/10002.png": 0,
                                  "train/10003.png": 0}
    assert m["test"]["surface"][0]["mask_path"] == "test/20000_GT.png"
    assert m["test"]["surface"][1]["mask_path"] == ""
    shutil.rmtree(tmp_path / "test")
    with pytest.raises(DatasetError, match="KolektorSDD2 test folder not found"):
        build("ksdd2", tmp_path)


def test_dagm_nested_folders_lower_case_labels_and_class_order(tmp_path):
    RAW_SETS["dagm"](tmp_path)
    for c in ("Class1", "Class2"):
        shutil.move(tmp_path / c, tmp_path / f"{c}x")
        (tmp_path / c).mkdir()
        shutil.move(tmp_path / f"{c}x", tmp_path / c / c)  # some downloads nest ClassN/ClassN
    shutil.copytree(tmp_path / "Class2" / "Class2", tmp_path / "Class10")
    label = tmp_path / "Class10" / "Test" / "Label"
    (label / "0002_label.PNG").rename(label / "0002_label.png")
    m = build("dagm", tmp_path)
    assert list(m["test"]) == ["Class1", "Class2", "Class10"]  # 2 before 10
    assert labels(m)["Class10/Test/0002.PNG"] == 1
    assert labels(m)["Class1/Class1/Test/0001.PNG"] == 0
    assert labels(m, "train") == {f"{c}/Train/{k:04d}.PNG": 0 for c in
                                  ("Class1/Class1", "Class2/Class2", "Class10") for k in (1, 3)}
    shutil.rmtree(tmp_path / "Class10" / "Train")
    with pytest.raises(DatasetError) as e:  # ClassN not nested: its own Train/ is named
        build("dagm", tmp_path)
    assert f"DAGM Train folder not found: {tmp_path / 'Class10' / 'Train'} (" in str(e.value)
    with pytest.raises(DatasetError, match="no ClassN folders"):
        build("dagm", tmp_path / "Class1" / "Class1" / "Test")


def test_realiad_other_folders_missing_files_and_categories_not_downloaded(tmp_path):
    RAW_SETS["realiad"](tmp_path)
    jsons = tmp_path / "realiad_jsons"
    shutil.move(jsons / "realiad_jsons" / "audiojack.json", jsons / "audiojack.json")
    shutil.rmtree(jsons / "realiad_jsons")
    shutil.move(tmp_path / "realiad_1024", tmp_path / "realiad_512")
    data = json.loads((jsons / "audiojack.json").read_text())
    data["meta"] = {}  # no normal_class: "OK"
    data["train"].append(data["test"][1])  # a defect listed for training: left out
    (jsons / "audiojack.json").write_text(json.dumps(data))
    m = build("realiad", tmp_path)
    base = "realiad_512/audiojack/"
    assert labels(m, "train") == {base + r["image_path"]: 0 for r in data["train"][:2]}
    assert [(r["specie_name"], r["anomaly"]) for r in m["test"]["audiojack"]] == \
        [("OK", 0), ("QS", 1), ("OK", 0), ("QS", 1)]
    assert m["test"]["audiojack"][1]["mask_path"] == base + data["test"][1]["mask_path"]
    (tmp_path / "realiad_512" / "audiojack" / data["test"][1]["mask_path"]).unlink()
    with pytest.raises(DatasetError, match="lists mask NG/QS/S0020/.*, not found in"):
        build("realiad", tmp_path)
    shutil.move(tmp_path / "realiad_512" / "audiojack", tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match="no Real-IAD category of .* has images in"):
        build("realiad", tmp_path)
    shutil.rmtree(tmp_path / "realiad_512")
    with pytest.raises(DatasetError, match="no realiad_1024/ .* image folder"):
        build("realiad", tmp_path)
    shutil.rmtree(jsons)
    with pytest.raises(DatasetError, match="realiad_jsons/ not found"):
        build("realiad", tmp_path)


def test_realiad_normal_class_from_meta_any_anomaly_class_and_categories_in_any_order(tmp_path):
    """The normal class is the JSON's own ('GOOD' here): an image of that class is normal even
    with a mask listed; an anomaly class sorting before it ('AK') is a defect; an anomaly listed
    first for training leaves the normal ones after it in; a category not downloaded that sorts
    first leaves the others in."""
    RAW_SETS["realiad"](tmp_path)
    jsons = tmp_path / "realiad_jsons" / "realiad_jsons"
    data = json.loads((jsons / "audiojack.json").read_text())
    data["meta"]["normal_class"] = "GOOD"
    for r in data["train"] + data["test"]:
        r["anomaly_class"] = "GOOD" if r["anomaly_class"] == "OK" else r["anomaly_class"]
    data["test"][1]["anomaly_class"] = "AK"
    data["test"][0]["mask_path"] = data["test"][3]["mask_path"]  # a mask, but the normal class
    data["train"].insert(0, dict(data["test"][3]))  # a defect listed first for training
    (jsons / "audiojack.json").write_text(json.dumps(data))
    (jsons / "aaa.json").write_text(json.dumps({"meta": {}, "train": [], "test": []}))
    m = build("realiad", tmp_path)
    base = "realiad_1024/audiojack/"
    assert labels(m, "train") == {base + r["image_path"]: 0 for r in data["train"][1:]}
    assert [(r["specie_name"], r["anomaly"], bool(r["mask_path"])) for r in m["test"]["audiojack"]] \
        == [("GOOD", 0, False), ("AK", 1, True), ("GOOD", 0, False), ("QS", 1, True)]


def test_elpv_a_cell_is_defective_above_probability_zero(tmp_path):
    RAW_SETS["elpv"](tmp_path / "src" / "elpv_dataset" / "data")  # the source tree's copy
    labels_csv = tmp_path / "src" / "elpv_dataset" / "data" / "labels.csv"
    lines = labels_csv.read_text().splitlines()
    lines[0] = "images/cell0001.png  1e-9  mono"  # the smallest rise above 0
    labels_csv.write_text("\n\n".join(lines) + "\n")  # blank lines are passed over
    m = build("elpv", tmp_path)
    got = labels(m)
    assert got["src/elpv_dataset/data/images/cell0001.png"] == 1
    assert got["src/elpv_dataset/data/images/cell0002.png"] == 0
    assert sum(got.values()) == 4 and len(got) == 10 and m["labels"] == "image"


@pytest.mark.parametrize("line, why", [("images/cell0001.png", "expected 'path probability"),
                                       ("images/cell0001.png high poly", "expected 'path"),
                                       ("images/gone.png 0 mono", "lists images/gone.png, not")])
def test_elpv_names_the_line_it_cannot_read(tmp_path, line, why):
    RAW_SETS["elpv"](tmp_path)
    rows = (tmp_path / "labels.csv").read_text().splitlines()
    (tmp_path / "labels.csv").write_text("\n".join(rows[:2] + [line]) + "\n")
    with pytest.raises(DatasetError, match=f"labels.csv:3.*{why}"):
        build("elpv", tmp_path)


def test_elpv_needs_its_labels(tmp_path):
    with pytest.raises(DatasetError, match="labels.csv not found under"):
        build("elpv", tmp_path)


# --- medical ------------------------------------------------------------------------------------
def test_brain_sets_read_yes_and_no_where_the_release_puts_them(tmp_path):
    RAW_SETS["br35h"](tmp_path / "flat")
    m = build("brainmri", tmp_path / "flat")  # no brain_tumor_dataset/ folder: at the root
    assert labels(m)["yes/Y1.jpg"] == 1 and labels(m)["no/1 no.jpg"] == 0 and len(labels(m)) == 8
    assert m["test"]["brain"][5]["specie_name"] == "tumor"
    shutil.rmtree(tmp_path / "flat" / "no")
    with pytest.raises(DatasetError, match="folder of normal scans not found"):
        build("br35h", tmp_path / "flat")
    with pytest.raises(DatasetError, match="folder of anomalous scans not found"):
        build("br35h", tmp_path / "none")


def test_headct_labels_beside_or_inside_its_folder(tmp_path):
    RAW_SETS["headct"](tmp_path)
    shutil.move(tmp_path / "head_ct" / "head_ct", tmp_path / "flat")
    shutil.rmtree(tmp_path / "head_ct")
    shutil.move(tmp_path / "flat", tmp_path / "head_ct")
    text = (tmp_path / "labels.csv").read_text().replace("5,1", "5, 1").replace(
        "\n", "\n\n", 1)  # a blank row after the header
    text = text.replace("hemorrhage\n", "hemorrhage,note\n")  # a column after the two read
    (tmp_path / "head_ct" / "labels.csv").write_text(text)
    (tmp_path / "labels.csv").unlink()
    m = build("headct", tmp_path)
    assert labels(m) == {f"head_ct/{k:03d}.png": int(k >= 4) for k in range(6)}
    assert m["test"]["head"][4]["specie_name"] == "hemorrhage"


@pytest.mark.parametrize("text, why", [("name,label\n0,1\n", r"expected the columns id, hemorrhage; "
                                                                r"got \[\['name', 'label'\]\]"),
                                       ("", "expected the columns"),
                                       ("id, hemorrhage\n9,1\n", "labels.csv:2 names scan 009.png")])
def test_headct_names_what_it_cannot_read(tmp_path, text, why):
    RAW_SETS["headct"](tmp_path)
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(DatasetError, match=why):
        build("headct", tmp_path)
    shutil.rmtree(tmp_path / "head_ct")
    with pytest.raises(DatasetError, match="labels.csv and head_ct/ not found"):
        build("headct", tmp_path)


def test_kvasir_jpeg_masks_are_binarised_above_127_once_under_the_index(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "index"
    RAW_SETS["kvasir"](root)
    edge = np.zeros((40, 40), np.uint8)
    # flat 8 x 8 blocks (JPEG's own tiles) at quality 100 come back exactly: 127, 128, 255
    edge[0:8, 0:8], edge[0:8, 8:16], edge[16:32, 16:32] = 127, 128, 255
    Image.fromarray(edge).save(root / "Kvasir-SEG" / "masks" / "1.jpg", quality=100)
    m = build("kvasir", root, out)
    row = m["test"]["colon"][0]
    assert row["mask_path"] == "../index/binarised_masks/Kvasir-SEG/masks/1.png"
    want = np.zeros((40, 40), np.uint8)
    want[0:8, 8:16] = want[16:32, 16:32] = 255
    got = np.asarray(Image.open(out / "binarised_masks" / "Kvasir-SEG" / "masks" / "1.png"))
    np.testing.assert_array_equal(got, want)
    assert not (root / "binarised_masks").exists() and m["test_images"] == EVERY_IMAGE
    _png(out / "binarised_masks" / "Kvasir-SEG" / "masks" / "1.png", np.zeros((2, 2), np.uint8))
    build("kvasir", root, out)  # made before: kept
    assert np.asarray(Image.open(out / "binarised_masks" / "Kvasir-SEG" / "masks" /
                                 "1.png")).shape == (2, 2)


@pytest.mark.parametrize("name, where, test_images", [
    ("kvasir", "TestDataset/Kvasir", PRANET),
    ("kvasir", "", "images/ and masks/ at the root (Kvasir-SEG or PraNet's copy: not told apart)"),
    ("clinicdb", "TestDataset/CVC-ClinicDB", PRANET), ("clinicdb", "CVC-ClinicDB", PRANET),
    ("colondb", "CVC-ColonDB", PRANET), ("colondb", "TestDataset/CVC-ColonDB", PRANET),
    ("colondb", "", PRANET),
    ("endo", "EndoTect_2020_Segmentation_Test_Dataset", EVERY_IMAGE), ("endo", "", EVERY_IMAGE)])
def test_polyp_copies_say_which_images_they_hold(tmp_path, name, where, test_images):
    RAW_SETS["colondb"](tmp_path / "x")  # images/ and masks/, PNG
    base = tmp_path / "root" / where if where else tmp_path / "root"
    base.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(tmp_path / "x", base)
    m = build(name, tmp_path / "root")
    assert m["test_images"] == test_images
    prefix = f"{where}/" if where else ""
    assert [r["img_path"] for r in m["test"]["colon"]] == [f"{prefix}images/{k}.png"
                                                           for k in (1, 2, 3)]
    assert m["test"]["colon"][0]["mask_path"] == f"{prefix}masks/1.png"  # PNG: used as it is
    assert m["train"] == {"colon": []}
    with pytest.raises(DatasetError, match="images/ and masks/ not found under"):
        build(name, tmp_path / "empty")


def test_clinicdb_release_layout_and_tn3k_at_its_root(tmp_path):
    RAW_SETS["clinicdb"](tmp_path / "c")
    m = build("clinicdb", tmp_path / "c")
    assert m["test"]["colon"][2] == {"img_path": "Original/3.tif", "mask_path":
                                     "Ground Truth/3.tif", "cls_name": "colon",
                                     "specie_name": "lesion", "anomaly": 1}
    assert "test_images" not in m  # the release itself: the default
    RAW_SETS["tn3k"](tmp_path / "t")
    shutil.move(tmp_path / "t" / "tn3k", tmp_path / "bare")
    m = build("tn3k", tmp_path / "bare")
    assert [r["img_path"] for r in m["test"]["thyroid"]] == [f"test-image/{k}.jpg"
                                                             for k in (1, 2, 3)]
    (tmp_path / "bare" / "test-mask" / "2.jpg").unlink()
    with pytest.raises(DatasetError, match="has no mask in"):
        build("tn3k", tmp_path / "bare")
    shutil.rmtree(tmp_path / "bare" / "test-mask")
    with pytest.raises(DatasetError, match="mask folder not found"):
        build("tn3k", tmp_path / "bare")
    with pytest.raises(DatasetError, match="image folder not found"):
        build("isic", tmp_path / "bare")
