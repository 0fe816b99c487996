"""Extreme aspect ratios stay legible in the reports: a 4000 x 100 strip and an 8 x 8 image are
drawn with a short side of tens of pixels, their aspect kept, on a page that does not scroll
sideways at 1280 px (panel sizes worked by hand; the page checked in headless Chromium)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from report_browser import Chromium, find_chromium
from report_html import assert_files_exist, parse_page

from utils.visualize import ColorScale

from engine.evaluate.eval_outputs import _pictures
from engine.report import EvalReport, GalleryItem
from engine.report.images import panel_size, thumb_row


@pytest.mark.parametrize("size, box, want", [
    ((4000, 100), 192, (1200, 30)),  # 192 x 5 would be a line: 1200 px long (the cap), 30 high
    ((100, 4000), 192, (30, 1200)),
    ((1000, 100), 192, (480, 48)),  # short side 48 (the minimum), aspect 10:1 kept
    ((8, 8), 192, (192, 192)),  # enlarged to the box
    ((640, 480), 192, (192, 144)),  # ordinary images: fitted into the box, as before
    ((640, 480), 126, (126, 94)),  # 94.5 rounds to even
    ((8, 8), 126, (126, 126)),
])
def test_panel_size_by_hand(size, box, want):
    assert panel_size(*size, box) == want


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_strip_panels_stack_and_tiny_images_keep_sharp_pixels():
    strip = _noise(100, 4000, 1)
    row = thumb_row([strip, strip, strip], 192)
    assert row.size == (1200, 3 * 30 + 2 * 2)  # one above the other: side by side is 3604 px
    tiny = _noise(8, 8, 2)
    row = np.asarray(thumb_row([tiny, tiny], 192))
    assert row.shape == (192, 2 * 192 + 2, 3)
    # enlarged 24x by nearest neighbour: every source pixel a sharp 24 x 24 block
    np.testing.assert_array_equal(row[:, :192], np.kron(tiny, np.ones((24, 24, 1), np.uint8)))


def test_gallery_pictures_of_a_strip_are_rendered_long_enough(tmp_path):
    Image.fromarray(_noise(100, 4000, 3)).save(tmp_path / "strip.png")
    amap = np.random.default_rng(4).random((32, 32)).astype(np.float32)
    rgb, over = _pictures(SimpleNamespace(root=tmp_path), "strip.png", amap,
                          ColorScale(0.0, 1.0, "t"), 384, 192)
    assert rgb.shape == over.shape == (30, 1200, 3)  # not 384 x 10, enlarged 3x in the report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("aspect")
    rep = EvalReport(out, "aspect", {"dataset": "strips"})
    shapes = {"strip": (100, 4000), "tall": (4000, 100), "tiny": (8, 8), "usual": (480, 640)}
    items = {name: GalleryItem(f"{name}.png", 0.5 + i / 10, _noise(*hw, i), _noise(*hw, 10 + i),
                               np.pad(np.ones((4, 4), np.uint8), 14))
             for i, (name, hw) in enumerate(shapes.items())}
    labels = np.array([1, 1, 1, 1, 0])
    rep.add_category("c", None, np.array([0.5, 0.6, 0.7, 0.8, 0.1]), labels,
                     [f"{n}.png" for n in shapes] + ["n.png"], 0.55, 0.5,
                     {"best_detections": list(items.values())})
    return rep.finish({"per_category": {"c": {}}}), shapes


def test_extreme_aspect_ratios_are_legible_in_chromium(report):
    path, shapes = report
    assert_files_exist(path, parse_page(path))
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium not found (/usr/bin/chromium or chromium on PATH): install the "
                    "Debian package chromium (.ci/run does) to run the browser test")
    with Chromium(binary) as browser:
        page = browser.open(path, 1280, 900)
        got = page.evaluate(
            "Array.from(document.querySelectorAll('div.gallery img')).map(i => [i.alt,"
            " i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width,"
            " i.getBoundingClientRect().height])")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        browser.collect_errors(page)
        assert page.errors == []
    drawn = {alt: (w, h, rw, rh) for alt, w, h, rw, rh in got}
    # each row: image | overlay | ground truth, with 2 px gaps; sizes from test_panel_size_by_hand
    assert drawn["strip.png"][:2] == (1200, 3 * 30 + 4)  # stacked: 30 px high each
    assert drawn["tall.png"][:2] == (3 * 30 + 4, 1200)
    assert drawn["tiny.png"][:2] == (3 * 192 + 4, 192)
    assert drawn["usual.png"][:2] == (3 * 192 + 4, 144)
    for alt, (w, h, rw, rh) in drawn.items():
        assert (rw, rh) == (w, h), alt  # shown at its own size: the page does not shrink it


def test_predict_report_draws_a_strip_from_the_full_image(capsys, tmp_path):
    """predict.py's report: a 4000 x 100 image with 20 px stripes. Its image panel (1200 x 30)
    is drawn from the full image, so the stripes (6 px apart there) stay visible; drawn from a
    256 px picture they would be 1.3 px apart, averaged to an even grey."""
    from test_predict import run

    folder = tmp_path / "images"
    folder.mkdir()
    stripes = ((np.arange(4000) // 10) % 2 * 255).astype(np.uint8)  # 10 px black, 10 px white
    Image.fromarray(np.repeat(np.tile(stripes, (100, 1))[..., None], 3, 2)).save(
        folder / "strip.png")
    code, _, err = run(capsys, folder, tmp_path / "out", "--no_heatmaps")
    assert code == 0, err
    thumbs = list((tmp_path / "out" / "report_files").glob("*.jpg"))
    assert len(thumbs) == 1
    row = np.asarray(Image.open(thumbs[0]).convert("L"), dtype=np.float64)
    assert row.shape[1] == 1200 and row.shape[0] >= 30
    panel = row[:30]  # the image panel on top (the two panels are stacked)
    columns = panel.mean(axis=0)
    assert columns.std() > 60, columns.std()  # stripes: about 127 for a clean square wave
