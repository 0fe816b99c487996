"""The pieces every benchmark-set builder shares (datasets/sets/common.py), the index format's
stamp and check (index_format.py) and the registry: listing images, pairing masks by name,
records with paths relative to the root (``../`` for a file made outside it), the masks a
builder writes, the split kinds, and an index written under the old rule refused.

Expected values are worked out by hand from the few files each test writes. Fast (no model):
the mutation check of datasets/sets/ runs this file with tests/test_sets_layouts.py.
"""
from __future__ import annotations

from dataclasses import FrozenInstanceError

import numpy as np
import pytest
from PIL import Image

from datasets.sets import SETS, register
from datasets.sets.common import (
    images,
    marks_anything,
    mask_for,
    meta,
    need_dir,
    normals,
    one_category,
    record,
    save_mask,
    with_suffix,
)
from datasets.sets.index_format import EVERY_IMAGE, INDEX_VERSION, TEST_SPLIT, IndexInfo, read_index, stamp
from errors import DatasetError


def _touch(path, value: int = 0, size: int = 4):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)
    return path


# --- common -------------------------------------------------------------------------------------
def test_images_lists_image_files_sorted_any_case_without_hidden_ones(tmp_path):
    for n in ("b.PNG", "a.jpg", "c.Jpeg", ".hidden.png", "notes.txt", "d.tiff", "e.webp",
              "f.bmp", "g.tif"):
        (tmp_path / n).write_bytes(b"")
    assert images(tmp_path) == ["a.jpg", "b.PNG", "c.Jpeg", "d.tiff", "e.webp", "f.bmp",
                                "g.tif"]
    assert images(tmp_path / "absent") == []


def test_need_dir_names_the_missing_folder(tmp_path):
    assert need_dir(tmp_path, "x") == tmp_path
    (tmp_path / "file").write_text("")
    with pytest.raises(DatasetError, match=r"image folder not found: .*file \(is the release"):
        need_dir(tmp_path / "file", "image folder")


def test_record_paths_are_relative_to_the_root_with_steps_up_for_made_files(tmp_path):
    root = tmp_path / "data"
    r = record(root, root / "cat" / "x.png", tmp_path / "index" / "m" / "x.png", "cat", "crack",
               True)
    assert r == {"img_path": "cat/x.png", "mask_path": "../index/m/x.png", "cls_name": "cat",
                 "specie_name": "crack", "anomaly": 1}
    assert record(root, root / "y.png", None, "c", "good", 0)["mask_path"] == ""
    assert type(r["anomaly"]) is int


def test_mask_for_takes_the_first_existing_name_and_names_what_it_tried(tmp_path):
    img = tmp_path / "img" / "007.png"
    names = with_suffix("_mask", (".png", ".bmp"))
    assert names("007") == ["007_mask.png", "007_mask.bmp"]
    assert with_suffix("")("a") == ["a.png"]
    _touch(tmp_path / "gt" / "007_mask.bmp")
    assert mask_for(img, tmp_path / "gt", names) == tmp_path / "gt" / "007_mask.bmp"
    _touch(tmp_path / "gt" / "007_mask.png")
    assert mask_for(img, tmp_path / "gt", names) == tmp_path / "gt" / "007_mask.png"
    (tmp_path / "gt" / "008_mask.png").mkdir()  # a folder is not a mask
    with pytest.raises(DatasetError) as e:
        mask_for(tmp_path / "img" / "008.png", tmp_path / "gt", names)
    assert str(e.value) == (f"image {tmp_path / 'img' / '008.png'} has no mask in "
                            f"{tmp_path / 'gt'} (looked for 008_mask.png, 008_mask.bmp)")


def test_save_mask_writes_0_255_and_marks_anything_sees_one_pixel_of_1(tmp_path):
    marked = np.zeros((3, 5), bool)
    marked[1, 2] = True
    path = save_mask(tmp_path / "new" / "deep" / "m.png", marked)
    with Image.open(path) as m:
        assert m.mode == "L" and m.format == "PNG"
        a = np.asarray(m)
    assert a.tolist() == [[0] * 5, [0, 0, 255, 0, 0], [0] * 5]
    assert marks_anything(path)
    assert not marks_anything(_touch(tmp_path / "black.png", 0))
    one = np.zeros((4, 4), np.uint8)
    one[3, 3] = 1  # the least mark there is
    Image.fromarray(one).save(tmp_path / "one.png")
    assert marks_anything(tmp_path / "one.png")


def test_normals_one_category_and_meta(tmp_path):
    for n in ("b.png", "a.png"):
        _touch(tmp_path / "ok" / n)
    assert normals(tmp_path, tmp_path / "ok", "c", "ok") == [
        {"img_path": "ok/a.png", "mask_path": "", "cls_name": "c", "specie_name": "ok",
         "anomaly": 0},
        {"img_path": "ok/b.png", "mask_path": "", "cls_name": "c", "specie_name": "ok",
         "anomaly": 0}]
    assert normals(tmp_path, tmp_path / "ok", "c")[0]["specie_name"] == "good"
    m = one_category(tmp_path, "w", [tmp_path / "n2.png", tmp_path / "n1.png"],
                     [(tmp_path / "d.png", tmp_path / "d_m.png"), (tmp_path / "e.png", None)],
                     "tumor")
    assert m["train"] == {"w": []} and "labels" not in m
    assert [(r["img_path"], r["mask_path"], r["specie_name"], r["anomaly"])
            for r in m["test"]["w"]] == [("n2.png", "", "good", 0), ("n1.png", "", "good", 0),
                                         ("d.png", "d_m.png", "tumor", 1),
                                         ("e.png", "", "tumor", 1)]
    assert one_category(tmp_path, "w", [tmp_path / "n.png"], [], "x",
                        labels="image")["labels"] == "image"
    assert meta({"a": []}, {"a": [{"x": 1}]}) == {"train": {"a": []}, "test": {"a": [{"x": 1}]}}
    with pytest.raises(DatasetError, match="category b has no test images"):
        meta({}, {"a": [{"x": 1}], "b": []})


# --- index_format -------------------------------------------------------------------------------
def test_stamp_records_the_name_version_split_and_test_images():
    assert stamp({"train": {}, "test": {}}, "btad", True) == {
        "dataset": "btad", "index_version": 2, "official_split": True,
        "test_images": TEST_SPLIT, "train": {}, "test": {}}
    assert stamp({"test": {}}, "ksdd", False)["test_images"] == EVERY_IMAGE
    assert stamp({"test": {}, "test_images": "PraNet's test split"}, "colondb", False)[
        "test_images"] == "PraNet's test split"  # the builder's own value wins
    assert INDEX_VERSION == 2


def _index(version, official=False, test_images=EVERY_IMAGE, img="no/1.jpg", **extra):
    m = {"test": {"brain": [{"img_path": img}]}, **extra}
    if version is not None:
        m.update(index_version=version, official_split=official, test_images=test_images)
    return m


def test_read_index_of_a_current_index_says_what_it_tested(tmp_path):
    assert read_index(_index(2), tmp_path, "brainmri") == IndexInfo(False, EVERY_IMAGE)
    assert read_index(_index(3, True, TEST_SPLIT), tmp_path, "btad") == \
        IndexInfo(True, TEST_SPLIT)
    # a newer index of a set without a split is read, not refused as an older one
    assert read_index(_index(3), tmp_path, "brainmri") == IndexInfo(False, EVERY_IMAGE)
    assert read_index({"test": {}}, tmp_path, "mvtec") == IndexInfo(True, None)  # not a set
    assert read_index(_index(2), tmp_path, "folder") == IndexInfo(True, None)
    # a current index that does not say: the release's own split, no test images named
    assert read_index({"index_version": 2, "test": {}}, tmp_path, "btad") == IndexInfo(True, None)
    # the name the index records wins over the --dataset given (a folder, or another name)
    assert read_index(_index(2, dataset="brainmri"), tmp_path, "folder") == \
        IndexInfo(False, EVERY_IMAGE)


@pytest.mark.parametrize("version", [None, 1, "2"])
def test_read_index_refuses_an_old_index_of_a_set_without_a_split(tmp_path, version):
    """Version 1, no version (written before it existed) or not an int: the old rule."""
    m = _index(version if version != "2" else None)
    if version == "2":
        m["index_version"] = "2"
    with pytest.raises(DatasetError) as e:
        read_index(m, tmp_path, "brainmri")
    want = version if version is not None else 1
    assert str(e.value) == (
        f"{tmp_path / 'meta.json'} was written by an older version (index version {want}, "
        f"this one reads 2) that held normal images of brainmri back from the test set; now "
        f"zero-shot tests every image: rebuild the index with "
        f"`python -m datasets.prepare brainmri {tmp_path}`")
    m["dataset"] = "ksdd"  # the recorded name is the one named
    with pytest.raises(DatasetError, match="normal images of ksdd back"):
        read_index(m, tmp_path, "folder")


def test_an_old_index_written_apart_from_its_data_names_the_out_form(tmp_path):
    with pytest.raises(DatasetError) as e:
        read_index(_index(1, img="/data/brainmri/no/1.jpg"), tmp_path, "brainmri")
    assert ("`python -m datasets.prepare brainmri DATASET_ROOT --out "
            f"{tmp_path}` (DATASET_ROOT: the folder the index was made from)") in str(e.value)


def test_an_old_index_of_a_set_with_a_split_is_read_as_the_release_split(tmp_path):
    assert read_index(_index(None), tmp_path, "btad") == IndexInfo(True, TEST_SPLIT)
    assert read_index(_index(1), tmp_path, "isic") == IndexInfo(True, TEST_SPLIT)


# --- registry -----------------------------------------------------------------------------------
def test_a_name_registers_once_and_few_shot_says_which_images_it_tests():
    with pytest.raises(ValueError, match="a builder named 'btad' is registered twice"):
        register("btad", title="again")(lambda root, out: {})
    assert "btad" in SETS and SETS["btad"].build.__name__ == "btad"
    assert SETS["isic"].few_shot == "none (no normal images: zero-shot only)"  # a split, no normals
    assert SETS["ksdd"].few_shot == "every image but the run's k references"
    assert SETS["ksdd2"].few_shot == "the zero-shot test images"


def test_which_sets_have_an_official_split():
    """As the README lists them: KolektorSDD, ELPV, BrainMRI, Br35H, HeadCT and the polyp sets
    have none (every image is a test image); every other set keeps its release's split."""
    assert {n for n, info in SETS.items() if not info.official_split} == {
        "ksdd", "elpv", "brainmri", "br35h", "headct", "clinicdb", "colondb", "kvasir", "endo"}
    assert {n for n, info in SETS.items() if info.official_split} == {
        "mpdd", "dtd_synthetic", "btad", "mvtec_loco", "mvtec_ad2", "ksdd2", "dagm", "realiad",
        "isic", "tn3k"}


def test_registry_entries_and_index_facts_are_read_only():
    """One registry for every entry point: no caller may change what it says of a set."""
    with pytest.raises(FrozenInstanceError):
        SETS["ksdd"].official_split = True
    with pytest.raises(FrozenInstanceError):
        IndexInfo().official_split = False


def test_the_rebuild_advice_of_a_visa_index_names_its_split_file():
    """VisA's index is made from split_csv/1cls.csv, so a removed image's row goes first: under
    the data root when the index lies in it, under DATASET_ROOT when the index names absolute
    paths (made with --out apart from the data)."""
    from pathlib import Path

    from datasets.sets.index_format import rebuild_advice

    assert rebuild_advice("/data/visa", "visa", "candle/Data/Images/Normal/0000.JPG") == (
        f"delete its row in {Path('/data/visa/split_csv/1cls.csv')}, then rebuild the index "
        "with `python -m datasets.prepare visa /data/visa`")
    assert rebuild_advice("/idx/visa", "visa", "/data/visa/candle/Data/Images/Normal/0000.JPG") \
        == (f"delete its row in {Path('DATASET_ROOT/split_csv/1cls.csv')}, then rebuild the "
            "index with `python -m datasets.prepare visa DATASET_ROOT --out /idx/visa` "
            "(DATASET_ROOT: the folder the index was made from)")
    assert rebuild_advice("/data/btad", "btad") == \
        "rebuild the index with `python -m datasets.prepare btad /data/btad`"
    # the kind as a command line or meta.json gives it: an equal string, not the same object
    given = "".join(["vi", "sa"])
    assert rebuild_advice("/data/visa", given, "a.JPG").startswith("delete its row in")
