"""Reports and heatmaps that explain themselves: named heatmap panels with a colour bar whose
labels fit, small images drawn large enough to read, a calibrated few-shot report (threshold
source, μ, references, links, verdicts the mask does not show explained) in a real browser,
whole-number histogram counts, no "± 0.0" for one run, the "not comparable" flag in the
protocol index, and the random-test-model warning."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from report_html import parse_page, table_with
from report_synthetic import eval_run
from test_predict import BOTTLE, MODELS, REPO, run

from metrics import METRIC_KEYS
from utils.visualize import MIN_SIDE, ColorScale, colour_bar, overlay_panels

from engine.evaluate.results import pct, summarize_runs
from engine.report import write_protocol_index, write_runs_index
from engine.report.common import random_model_note


def _dark(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).min(axis=-1) < 128


@pytest.mark.parametrize("vmax", [0.00247, 1234.5, 6.0])
def test_colour_bar_labels_are_never_cut(vmax):
    bar = colour_bar(300, ColorScale(-vmax / 7, vmax, "test"))
    bar_w = max(8, 300 // 24)
    text = _dark(bar[:, bar_w + 3:])
    assert text.any()
    assert not text[:, -3:].any() and not text[:2].any() and not text[-1:].any()


def test_heatmap_panels_are_named_and_small_images_drawn_legibly():
    img = Image.fromarray(np.full((40, 60, 3), 200, np.uint8))
    amap = np.zeros((16, 16), np.float32)
    out = overlay_panels(img, amap, amap > 1, ColorScale(0, 1, "t"), mask_name="predicted mask")
    w, h = MIN_SIDE, round(40 * MIN_SIDE / 60)  # 60 x 40 drawn at 256 x 171
    strip = out.shape[0] - h
    assert strip > 10 and (out[strip:, :w] == 200).all()  # a title strip above the image
    for x0 in (0, w, 2 * w):  # a title (dark text) above the image, heatmap and mask panels
        assert _dark(out[:strip, x0:x0 + w]).any(), x0
    assert _dark(out[:strip, 3 * w:]).any()  # and above the colour bar ("scale")


def test_histogram_counts_are_whole_numbers():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.report.plots import _histogram_axes
    fig, ax = plt.subplots()
    _histogram_axes(ax, np.array([0.1, 0.2, 0.3, 0.9]), np.array([0, 0, 1, 1]), 0.5, 10)
    fig.canvas.draw()
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plt.close(fig)


def test_one_run_shows_no_spread(tmp_path):
    r = eval_run(tmp_path / "k1_seed1", categories=("bottle",), n=8, seed=1, k_shot=1)
    summary = {"k1": {"n_runs": 1, "seeds": [1], "metrics": summarize_runs([r.metrics])}}
    page = write_runs_index(tmp_path, "one", [{"k": 1, "seed": 1, "mean": r.metrics["mean"]}],
                            summary)
    table = table_with(parse_page(page), "metrics")[0]
    m = r.metrics["per_category"]["bottle"]
    assert table.body[0][1:] == [pct(m[x]) for x in METRIC_KEYS]
    assert "±" not in page.read_text()


def test_protocol_index_flags_means_that_are_not_comparable(tmp_path):
    results = tmp_path / "results"
    eval_run(results / "mvtec_zero_shot", categories=("bottle", "cable"), n=10)
    out = subprocess.run([sys.executable, "scripts/compare_paper.py", "--results", str(results)],
                         cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "not comparable" in (results / "comparison.md").read_text()
    html = write_protocol_index(results, results / "comparison.md", []).read_text()
    assert 'id="not-comparable"' in html and "MVTec AD, 0-shot*" in html


def test_random_model_note_names_test_models_only(tmp_path):
    assert "random test model" in random_model_note(str(MODELS / "tiny-vit-random.pt"))
    assert random_model_note("openai") is None
    mine = tmp_path / "weights.pt"
    mine.write_bytes(b"x")
    assert random_model_note(str(mine)) is None


def test_calibrated_few_shot_report_explains_itself_in_chromium(capsys, tmp_path):
    from report_browser import Chromium, find_chromium

    refs, cal = tmp_path / "refs", tmp_path / "cal"
    refs.mkdir()
    cal.mkdir()
    for i, p in enumerate(sorted((BOTTLE / "train" / "good").glob("*.png"))):
        shutil.copy(p, (refs if i < 2 else cal) / p.name)
    save = tmp_path / "out"
    code, _, err = run(capsys, BOTTLE / "test", save, "--recursive", "--reference_dir",
                       str(refs), "--calibration_dir", str(cal), "--target_fpr", "0.2")
    assert code == 0, err
    scores = json.loads((save / "scores.json").read_text())
    html = (save / "report.html").read_text()
    for words in ("random test model", "calibration", "3 normal images", "target false-alarm "
                  "rate 0.2", "pixel threshold", "normal level μ", "Reference images (2)"):
        assert words in html, words
    why = [i for i in scores["images"] if i.get("anomalous") != bool(i.get("regions"))]
    assert html.count('<div class="why">') == len(why)
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium not found (/usr/bin/chromium or chromium on PATH): install the "
                    "Debian package chromium (.ci/run does) to run the browser test")
    with Chromium(binary) as browser:
        page = browser.open(save / "report.html", 480, 4000)  # narrower than its table
        assert page.broken_images() == 0
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        top = page.evaluate("document.querySelector('header .warn').textContent")
        assert "random test model" in top
        links = page.evaluate("Array.from(document.querySelectorAll('table.predict a'))"
                              ".map(a => a.getAttribute('href'))")
        for rec in scores["images"]:
            assert rec["heatmap"] in links and rec["mask"] in links
        for href in links:
            assert (save / href).is_file(), href
        assert page.evaluate("document.querySelectorAll('div.refs img').length") == 2
        browser.collect_errors(page)
        assert page.errors == []
