"""report.html links and pictures reach their files whatever the file names hold: ``#``, ``%``,
``?``, spaces, a literal ``%20``, non-ASCII, a folder with a space. predict.py writes the
heatmaps and masks under the images' own names; headless Chromium clicks every link of its
report and must land on that very file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image
from report_browser import Chromium, find_chromium
from report_html import parse_page
from test_predict import BOTTLE, run

from engine.report import PredictReport

# the file names of the images; each is awkward in a URL in its own way
NAMES = ["good #1.png", "100% bad.png", "why?.png", "a%20b.png", "défaut ü.png", "日本.png",
         "sub dir/x#?.png"]


def test_predict_hrefs_and_srcs_are_percent_encoded(tmp_path):
    rep = PredictReport(tmp_path, "t", {})
    pic = np.full((8, 8, 3), 120, np.uint8)
    rec = rep.add("sub dir/x#?.png", 0.5, pic, pic, name="a b#c")
    rep.records[-1] = {**rec, "heatmap": "heatmaps/sub dir/x#?.png", "mask": "masks/é%.png"}
    html = rep.finish(None, []).read_text()
    # written out by hand: space %20, # %23, ? %3F, % %25, é (UTF-8 C3 A9) %C3%A9
    assert 'href="heatmaps/sub%20dir/x%23%3F.png"' in html
    assert 'href="masks/%C3%A9%25.png"' in html
    assert 'src="report_files/a%20b%23c.jpg"' in html


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """predict.py over bottle test images copied under the odd names, with thresholds (so that
    every image gets a heatmap and a mask)."""
    tmp = tmp_path_factory.mktemp("links")
    images = tmp / "images"
    sources = sorted((BOTTLE / "test").glob("*/*.png"))
    for name, src in zip(NAMES, sources + sources):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, images / name)
    thr = tmp / "thresholds.json"
    thr.write_text(json.dumps({"mode": "zero_shot",
                               "per_category": {"bottle": {"pixel": 0.5, "image": 0.9992}}}))
    capsys = _Quiet()
    code, _, err = run(capsys, images, tmp / "out", "--recursive", "--thresholds", str(thr))
    assert code == 0, err
    return images, tmp / "out"


class _Quiet:
    """What ``test_predict.run`` needs of pytest's capsys, in a module-scoped fixture."""

    @staticmethod
    def readouterr():
        class Out:
            out = err = ""
        return Out()


def test_every_link_of_the_predict_report_opens_its_file_in_chromium(odd_run):
    images, save = odd_run
    report = save / "report.html"
    parse_page(report)
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium not found (/usr/bin/chromium or chromium on PATH): install the "
                    "Debian package chromium (.ci/run does) to run the browser test")
    with Chromium(binary) as browser:
        page = browser.open(report, 1280, 900)
        assert page.broken_images() == 0
        caption = page.evaluate("Array.from(document.querySelectorAll('table.predict tbody tr'))"
                                ".filter(r => !r.classList.contains('divider'))"
                                ".map(r => r.querySelector('code').textContent)")
        assert sorted(caption) == sorted(NAMES)
        links = page.evaluate("document.querySelectorAll('div.links a').length")
        assert links == 2 * len(NAMES)  # a heatmap and a mask per image
        landed = []
        for i in range(links):
            row = page.evaluate(f"document.querySelectorAll('div.links a')[{i}]"
                                ".closest('tr').querySelector('code').textContent")
            kind = page.evaluate(f"document.querySelectorAll('div.links a')[{i}].textContent")
            got = browser.follow(page, "div.links a", i)
            # the file predict.py wrote for this image (its name with .png, under heatmaps/ or
            # masks/), found from the names this test chose, not from the page
            want = save / ("heatmaps" if kind == "heatmap" else "masks") / Path(row).with_suffix(".png")
            assert Path(unquote(urlsplit(got["url"]).path)) == want.resolve(), (row, got)
            assert got["type"] == "image/png", got
            with Image.open(want) as im:
                assert (got["width"], got["height"]) == im.size, (row, got)
            landed.append(want)
            page = browser.open(report, 1280, 900)
        assert len(set(landed)) == 2 * len(NAMES)
        browser.collect_errors(page)
        assert page.errors == []
