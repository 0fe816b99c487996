"""datasets.sets.released, unit by unit: the MVTec AD and VisA builders' pairing of masks and
their one-line refusals, each naming the file, the row or the value at fault."""
from __future__ import annotations

import pytest
from PIL import Image

from datasets.sets.released import mvtec_layout_meta, visa_meta
from errors import DatasetError


def _png(path, size=(4, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size).save(path)


def _mvtec(root, images=2, masks=("000_mask.png", "001_mask.png"), mask_size=(4, 6)):
    _png(root / "bottle" / "train" / "good" / "000.png")
    _png(root / "bottle" / "test" / "good" / "000.png")
    for i in range(images):
        _png(root / "bottle" / "test" / "crack" / f"{i:03d}.png")
    for m in masks:
        _png(root / "bottle" / "ground_truth" / "crack" / m, mask_size)
    return root


def test_masks_named_otherwise_pair_by_sorted_order_as_released(tmp_path):
    root = _mvtec(tmp_path, masks=("b.png", "a.png"))  # not <stem>_mask: sorted order
    rows = mvtec_layout_meta(root)["test"]["bottle"]
    assert [(r["img_path"], r["mask_path"]) for r in rows if r["anomaly"]] == [
        ("bottle/test/crack/000.png", "bottle/ground_truth/crack/a.png"),
        ("bottle/test/crack/001.png", "bottle/ground_truth/crack/b.png")]


def test_an_image_past_the_last_mask_is_named(tmp_path):
    root = _mvtec(tmp_path, images=3, masks=("a.png",))
    with pytest.raises(DatasetError, match=r"anomalous image .*crack/001\.png has no mask"):
        mvtec_layout_meta(root)


def test_a_mask_of_another_size_names_both_sizes(tmp_path):
    root = _mvtec(tmp_path, mask_size=(6, 4))
    with pytest.raises(DatasetError) as e:
        mvtec_layout_meta(root)
    assert str(e.value) == (f"mask {root / 'bottle/ground_truth/crack/000_mask.png'} is 6x4 but "
                            f"its image {root / 'bottle/test/crack/000.png'} is 4x6: masks must "
                            "match their image")


def test_an_image_that_cannot_be_read_is_named(tmp_path):
    root = _mvtec(tmp_path)
    (root / "bottle" / "test" / "crack" / "000.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError) as e:
        mvtec_layout_meta(root)
    assert str(e.value).startswith(f"cannot read {root / 'bottle/test/crack/000.png'} or its "
                                   "mask: ")


def test_the_notice_of_missing_standard_categories_only_when_some_are_there(tmp_path, capsys):
    """Some of the standard categories found: the others are named on stderr. None of them
    (a set of one's own), or all of them: no notice."""
    root = _mvtec(tmp_path / "some")
    assert list(mvtec_layout_meta(root)["test"]) == ["bottle"]
    err = capsys.readouterr().err
    assert err.startswith("notice: mvtec: standard categories not found (skipped): cable, ")
    assert "bottle" not in err
    mvtec_layout_meta(root, standard=("bottle",))  # every standard category is there
    (root / "bottle").rename(root / "widget")
    assert list(mvtec_layout_meta(root)["test"]) == ["widget"]  # none of them: one's own set
    assert capsys.readouterr().err == ""


def test_only_folders_with_train_and_test_are_categories_and_stray_files_are_skipped(tmp_path):
    root = _mvtec(tmp_path)
    (root / "notes" / "train").mkdir(parents=True)  # a train/ alone is not a category
    (root / "bottle" / "test" / ".DS_Store").write_text("")  # sorts before every defect type
    (root / "bottle" / "test" / "README.txt").write_text("")
    info = mvtec_layout_meta(root)
    assert list(info["test"]) == ["bottle"]
    assert [r["img_path"] for r in info["test"]["bottle"]] == [
        "bottle/test/crack/000.png", "bottle/test/crack/001.png", "bottle/test/good/000.png"]


def _visa(root, rows, header="object,split,label,image,mask"):
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join([header, *rows]) + "\n")
    _png(root / "candle" / "a.png")
    _png(root / "candle" / "b.png")
    _png(root / "candle" / "b_mask.png")
    return root


GOOD = ["candle,train,normal,candle/a.png,", "candle,test,anomaly,candle/b.png,candle/b_mask.png"]


def test_visa_rows_become_the_index(tmp_path):
    info = visa_meta(_visa(tmp_path, GOOD))
    assert info["train"]["candle"][0]["anomaly"] == 0
    assert info["test"]["candle"] == [{"img_path": "candle/b.png", "mask_path": "candle/b_mask.png",
                                       "cls_name": "candle", "specie_name": "", "anomaly": 1}]


@pytest.mark.parametrize("rows, header, said", [
    (GOOD + ["candle,test,anomaly,candle/b.png"], None,
     ":4: a row needs 5 columns (object,split,label,image,mask; mask may be empty), found 4"),
    (GOOD + ["candle,val,normal,candle/a.png,"], None, ":4: split must be train or test, found 'val'"),
    (GOOD, "Object,split,label,image,mask", ": expected columns object,split,label,image,mask"),
    (GOOD + ["candle,test,normal,candle/c.png,"], None, " lists candle/c.png, which is not under "),
    (GOOD, "object,split,label,image,mask2", ": expected columns object,split,label,image,mask"),
    (GOOD + ["candle,test,anomaly,candle/a.png,"], None, ": anomalous image candle/a.png has no mask"),
])
def test_visa_refusals_name_the_row_and_the_value(tmp_path, rows, header, said):
    root = _visa(tmp_path, rows, header or "object,split,label,image,mask")
    with pytest.raises(DatasetError) as e:
        visa_meta(root)
    assert said in str(e.value) and str(root / "split_csv" / "1cls.csv") in str(e.value)


def test_visa_extra_columns_are_read_past(tmp_path):
    """Columns after the fifth (in the header and the rows) are not the index's business."""
    rows = [r + ",note" for r in GOOD]
    info = visa_meta(_visa(tmp_path, rows, "object,split,label,image,mask,comment"))
    assert [r["mask_path"] for r in info["test"]["candle"]] == ["candle/b_mask.png"]


def test_a_visa_split_file_that_is_not_utf8_is_named(tmp_path):
    root = _visa(tmp_path, GOOD)
    (root / "split_csv" / "1cls.csv").write_bytes(b"object,split,label,image,mask\n\xff\xfe,train\n")
    with pytest.raises(DatasetError) as e:
        visa_meta(root)
    assert str(e.value).startswith(f"cannot read {root / 'split_csv' / '1cls.csv'}: ")
    assert str(e.value).endswith("; it ships with VisA")
