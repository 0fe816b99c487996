"""Defect regions (engine/predict/regions.py, predict.py --min_region_area) at their edges: a region of
exactly ``min_area`` pixels is kept, one pixel fewer is dropped, from the list and from the mask
alike; ties of the order; a pixel equal to the threshold belongs to the mask; the boxes drawn.

Areas, boxes and orders are worked by hand on small maps; predict.py's masks are checked with
scipy's labelling, an implementation independent of the OpenCV one the code uses.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from test_predict import BOTTLE, read_csv, run

from engine.predict.regions import REGION_COLUMNS, draw_boxes, find_regions


def _map() -> np.ndarray:
    """Six regions of a 8 x 14 map, all at the threshold 2.0 but one at 3.0 (by hand):

        F  1 px  (13, 7)     max 3.0
        C  6 px  rows 4-5, columns 5-7
        A  5 px  row 1, columns 1-5
        D  4 px  rows 0-1, columns 8-9    (4 px, top row 0)
        B  4 px  rows 4-5, columns 1-2    (4 px, row 4, left)
        E  4 px  rows 4-5, columns 10-11  (4 px, row 4, right)
    No two touch, diagonals included."""
    m = np.zeros((8, 14))
    m[1, 1:6] = 2.0
    m[0:2, 8:10] = 2.0
    m[4:6, 1:3] = 2.0
    m[4:6, 5:8] = 2.0
    m[4:6, 10:12] = 2.0
    m[7, 13] = 3.0
    return m


BOXES = {"F": (13, 7, 14, 8), "C": (5, 4, 8, 6), "A": (1, 1, 6, 2), "D": (8, 0, 10, 2),
         "B": (1, 4, 3, 6), "E": (10, 4, 12, 6)}
AREAS = {"F": 1, "C": 6, "A": 5, "D": 4, "B": 4, "E": 4}


def _pixels(names) -> np.ndarray:
    out = np.zeros((8, 14), bool)
    for n in names:
        x0, y0, x1, y1 = BOXES[n]
        out[y0:y1, x0:x1] = True  # every region fills its box
    return out


@pytest.mark.parametrize("min_area, kept", [
    (0, "FCADBE"), (1, "FCADBE"), (2, "CADBE"), (4, "CADBE"), (5, "CA"), (6, "C"), (7, "")])
def test_a_region_of_exactly_min_area_is_kept_and_one_pixel_less_dropped(min_area, kept):
    """Regions of min_area pixels or more are kept (F has 1, A 5, C 6): in the list, numbered
    by falling max, then larger area, then top-to-bottom, left-to-right; and in the mask,
    which holds exactly their pixels."""
    mask, regions = find_regions(_map(), 2.0, min_area)
    assert [r["region"] for r in regions] == list(range(1, len(kept) + 1))
    assert [(r["x0"], r["y0"], r["x1"], r["y1"]) for r in regions] == [BOXES[n] for n in kept]
    assert [r["area_px"] for r in regions] == [AREAS[n] for n in kept]
    assert [r["max_score"] for r in regions] == [3.0 if n == "F" else 2.0 for n in kept]
    assert [r["mean_score"] for r in regions] == [3.0 if n == "F" else 2.0 for n in kept]
    assert [r["area_fraction"] for r in regions] == [AREAS[n] / 112 for n in kept]
    assert mask.dtype == bool and np.array_equal(mask, _pixels(kept))
    assert all(list(r) == list(REGION_COLUMNS) for r in regions)


def test_the_threshold_itself_is_in_the_mask_and_nothing_above_it_gives_no_region():
    m = _map()
    mask, regions = find_regions(m, 3.0)  # only F reaches 3.0 (equal to it)
    assert [(r["region"], r["area_px"]) for r in regions] == [(1, 1)]
    assert np.array_equal(mask, _pixels("F"))
    mask, regions = find_regions(m, np.nextafter(3.0, 4.0))  # nothing reaches it
    assert regions == [] and mask.shape == (8, 14) and not mask.any()
    mask, regions = find_regions(m, np.nextafter(2.0, 0.0))  # the same six as at 2.0
    assert len(regions) == 6 and np.array_equal(mask, _pixels("FCADBE"))


def test_ties_of_max_score_and_area_order_by_row_then_column():
    """Two 1-pixel regions of the same score in one row, and one above them: the one above
    first, then left before right."""
    m = np.zeros((5, 5))
    m[3, 4], m[3, 0], m[1, 2] = 1.0, 1.0, 1.0
    _, regions = find_regions(m, 0.5)
    assert [(r["x0"], r["y0"]) for r in regions] == [(2, 1), (0, 3), (4, 3)]


def _white(img: np.ndarray) -> np.ndarray:
    return (img == 255).all(-1)


def _outline(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """The 1-pixel outline of the rectangle with corners (x0, y0), (x1, y1), both inclusive."""
    out = np.zeros((h, w), bool)
    out[y0, x0:x1 + 1] = out[y1, x0:x1 + 1] = True
    out[y0:y1 + 1, x0] = out[y0:y1 + 1, x1] = True
    return out


def test_boxes_drawn_at_full_size_and_scaled():
    """A white 1-pixel outline exactly on the box (x1, y1 exclusive: the last pixels are x1 - 1,
    y1 - 1), a black one beside it on both sides, the rest untouched; on a smaller picture the
    box is scaled by width and height separately, and a box smaller than a picture pixel is
    still drawn (one pixel)."""
    gray = np.full((16, 16, 3), 128, np.uint8)
    box = {"x0": 2, "y0": 2, "x1": 12, "y1": 12}
    out = draw_boxes(gray, [box], (16, 16))
    assert np.array_equal(_white(out), _outline(16, 16, 2, 2, 11, 11))
    assert (out[1, 6] == 0).all() and (out[3, 6] == 0).all()  # black outside and inside
    assert (out[7, 7] == 128).all() and (out[15, 15] == 128).all()  # middle and far away
    assert (gray == 128).all()  # the picture given is not drawn on
    # a picture 8 wide and 4 tall of an image 16 wide and 32 tall: x times 1/2, y times 1/8
    box = {"x0": 6, "y0": 16, "x1": 12, "y1": 32}  # -> x 3..5 (ceil(6) - 1), y 2..3
    out = draw_boxes(np.full((4, 8, 3), 128, np.uint8), [box], (16, 32))
    assert np.array_equal(_white(out), _outline(4, 8, 3, 2, 5, 3))
    # 1-pixel regions of a 16 px image on a 4 px picture, one white pixel each: (5, 9)-(6, 10)
    # -> x 1.25 -> 1, y 2.25 -> 2, far corner ceil(1.5) - 1 = 1, ceil(2.5) - 1 = 2; and
    # (13, 5)-(14, 6) -> x 3.25 -> 3, y 1.25 -> 1, far corner ceil(3.5) - 1 = 3, ceil(1.5) - 1 = 1
    for box, pixel in (({"x0": 5, "y0": 9, "x1": 6, "y1": 10}, [2, 1]),
                       ({"x0": 13, "y0": 5, "x1": 14, "y1": 6}, [1, 3])):
        out = draw_boxes(np.full((4, 4, 3), 128, np.uint8), [box], (16, 16))
        assert np.argwhere(_white(out)).tolist() == [pixel]  # [row, column]


def test_min_region_area_in_regions_csv_and_the_masks(capsys, tmp_path):
    """predict.py at a pixel threshold that cuts the good bottles into several regions: with
    --min_region_area a (the smallest region's area) every region stays; with a + 1 the regions
    of a pixels leave regions.csv and their pixels leave the mask, the rest unchanged."""
    images = BOTTLE / "test" / "good"
    args = ["--pixel_threshold", "2.3", "--no_heatmaps", "--no_report"]
    assert run(capsys, images, tmp_path / "all", *args)[0] == 0
    names = sorted(p.name for p in images.iterdir())
    masks = {n: np.asarray(Image.open(tmp_path / "all" / "masks" / n)) > 0 for n in names}
    labels = {n: ndimage.label(m, structure=np.ones((3, 3)))[0] for n, m in masks.items()}
    areas = {n: np.bincount(lab.ravel())[1:] for n, lab in labels.items()}
    assert sum(len(a) for a in areas.values()) >= 2, areas  # several regions to choose from
    a = int(min(x for v in areas.values() for x in v))
    for min_area in (a, a + 1):
        save = tmp_path / f"min{min_area}"
        code, _, err = run(capsys, images, save, *args, "--min_region_area", str(min_area))
        assert code == 0, err
        rows = read_csv(save / "regions.csv")
        for n in names:
            keep = [i + 1 for i, x in enumerate(areas[n]) if x >= min_area]
            mine = sorted(int(r["area_px"]) for r in rows if r["path"] == n)
            assert mine == sorted(int(areas[n][i - 1]) for i in keep), (n, min_area)
            want = np.isin(labels[n], keep)
            got = np.asarray(Image.open(save / "masks" / n)) > 0
            assert np.array_equal(got, want), (n, min_area)
        recorded = json.loads((save / "scores.json").read_text())["images"]
        assert sum(len(r["regions"]) for r in recorded) == len(rows)
        assert (len(rows) == sum(len(v) for v in areas.values())) == (min_area == a)
