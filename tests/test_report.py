"""engine/report: report.html of evaluation runs, prediction runs, several (k, seed) runs and the
protocol (issue 17). Synthetic seeded inputs; the pages are checked as HTML5 (html.parser), for
the files they reference, and against metrics.json; one test opens them in headless Chromium
(skipped, with the reason, where Chromium is not installed)."""
from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_browser import Chromium, find_chromium
from report_html import assert_files_exist, parse_page, table_with
from report_synthetic import eval_run, predict_run

from metrics import METRIC_KEYS, category_metrics_and_curves

from engine.evaluate.results import pct, summarize_runs
from engine.report import (
    EvalReport,
    GalleryItem,
    discover_reports,
    read_comparison,
    select_gallery,
    write_protocol_index,
    write_runs_index,
)
from engine.report.plots import f1_point_fpr

REPO = Path(__file__).resolve().parents[1]


def expected_cell(v: float) -> str:
    """metrics.json's value as the table must print it (metrics.md's pct; NaN as —)."""
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else pct(v)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return eval_run(tmp_path_factory.mktemp("eval"), categories=("bottle", "metal nut", "empty"),
                    k_shot=2, one_class=("empty",))


# --- select_gallery ---------------------------------------------------------------------------

def test_select_gallery_orders_by_score_with_index_ties():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(40), 1)  # many ties
    labels = (rng.random(40) < 0.4).astype(int)
    got = select_gallery(scores, labels, threshold=0.5, n=5)
    normal = [i for i in range(40) if labels[i] == 0]
    anomalous = [i for i in range(40) if labels[i] == 1]
    assert got["false_positives"] == sorted(normal, key=lambda i: (-scores[i], i))[:5]
    missed = [i for i in anomalous if scores[i] < 0.5]
    assert got["false_negatives"] == sorted(missed, key=lambda i: (scores[i], i))[:5]
    hit = [i for i in anomalous if scores[i] >= 0.5]
    assert got["best_detections"] == sorted(hit, key=lambda i: (-scores[i], i))[:5]
    none = select_gallery(scores, labels, None, n=5)  # no threshold: no false negatives
    assert none["false_positives"] == got["false_positives"] and none["false_negatives"] == []
    assert none["best_detections"] == sorted(anomalous, key=lambda i: (-scores[i], i))[:5]


def test_select_gallery_small_and_one_class():
    got = select_gallery(np.array([0.2, 0.9, 0.5]), np.array([0, 0, 0]), 0.4, n=6)
    assert got == {"false_positives": [1, 2, 0], "false_negatives": [], "best_detections": []}
    with pytest.raises(ValueError, match="same length"):
        select_gallery(np.zeros(3), np.zeros(4), 0.5)


# --- the evaluation report --------------------------------------------------------------------

def test_eval_report_is_valid_html_and_its_files_exist(run):
    page = parse_page(run.report)
    files = assert_files_exist(run.report, page)
    names = {f.name for f in files}
    assert {"plots.png", "scores.csv", "false_positives_0.jpg", "ref_0.jpg"} <= names
    for f in files:
        if f.suffix in (".jpg", ".png"):
            with Image.open(f) as im:
                assert max(im.size) <= 1100 and im.format in ("JPEG", "PNG")


def test_eval_table_equals_metrics_json(run):
    page = parse_page(run.report)
    (table,) = table_with(page, "metrics")
    assert table.head[0] == ["category", *METRIC_KEYS]
    per = run.metrics["per_category"]
    assert [r[0] for r in table.body] == list(per)
    for row in table.body:
        assert row[1:] == [expected_cell(per[row[0]][k]) for k in METRIC_KEYS], row[0]
    assert table.foot == [["mean", *(expected_cell(run.metrics["mean"][k]) for k in METRIC_KEYS)]]
    assert table.body[2][1:] == ["—"] * len(METRIC_KEYS)  # the one-class category


def test_gallery_false_positives_are_the_highest_scored_normal_images(run):
    page = parse_page(run.report)
    for name, c in run.categories.items():
        normal = [i for i in range(len(c.scores)) if c.labels[i] == 0]
        top = sorted(normal, key=lambda i: (-c.scores[i], i))[:4]
        shown = page.galleries[(name, "false_positives")]
        assert shown == [c.paths[i] for i in top]
        assert all(c.scores[i] >= max(c.scores[j] for j in normal if j not in top) for i in top)
        if c.labels.any():
            thr = c.values["threshold_sp"]
            missed = [i for i in np.flatnonzero(c.labels) if c.scores[i] < thr]
            missed = sorted(missed, key=lambda i: (c.scores[i], i))[:4]
            assert page.galleries.get((name, "false_negatives"), []) == [c.paths[i] for i in missed]
        assert page.galleries[(name, "references")] == c.references


def test_eval_report_says_undefined_for_one_class(run):
    text = run.report.read_text()
    assert "Image-level curves and metrics are undefined" in text
    assert "Pixel-level curves and metrics are undefined" in text
    assert text.count("are undefined: only one class") == 2  # only the one-class category


def test_eval_report_starts_a_fresh_files_folder(tmp_path):
    first = eval_run(tmp_path, categories=("a", "b"), n=8)
    assert (tmp_path / "report_files" / "01_b").is_dir()
    eval_run(tmp_path, categories=("c",), n=8)
    assert sorted(p.name for p in (tmp_path / "report_files").iterdir()) == ["00_c"]
    assert first.report.is_file()


def test_gallery_item_checks_its_arrays(tmp_path):
    rep = EvalReport(tmp_path, "t", {})
    bad = GalleryItem("x.png", 0.5, np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        rep.add_category("c", None, np.array([0.5]), np.array([0]), ["x.png"], 0.5, 0.5,
                         {"false_positives": [bad]})
    with pytest.raises(ValueError, match="same length"):
        rep.add_category("c", None, np.array([0.5, 0.1]), np.array([0]), ["x.png"], 0.5, 0.5, {})


def test_f1_point_is_on_the_roc_curve():
    rng = np.random.default_rng(7)
    labels = (rng.random(60) < 0.4).astype(int)
    scores = rng.random(60) + 0.4 * labels
    masks = (rng.random((60, 24, 24)) < 0.05).astype(np.uint8)
    maps = rng.random((60, 24, 24)) + 0.3 * masks
    values, curves = category_metrics_and_curves(masks, maps, labels, scores)
    for key, y, s, t in (("image", labels, scores, values["threshold_sp"]),
                         ("pixel", masks.ravel(), maps.ravel(), values["threshold_px"])):
        direct = ((s >= t) & (y == 0)).sum() / (y == 0).sum()
        assert f1_point_fpr(curves[key]) == pytest.approx(direct, abs=1e-12)


def test_histogram_ticks_of_packed_scores_print_apart():
    from engine.report.plots import tick_digits

    packed = np.linspace(0.99981, 0.99995, 5)
    digits = tick_digits(packed)
    assert len({f"{t:.{digits}g}" for t in packed}) == 5 and digits == 5
    assert tick_digits(np.linspace(0.0, 1.0, 5)) == 3  # ordinary ranges keep 3 digits


def test_report_package_imports_no_torch_and_no_pyplot():
    code = ("import sys; import engine.report; "
            "bad = [m for m in ('torch', 'matplotlib.pyplot', 'cv2') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# --- predict ----------------------------------------------------------------------------------

def _predict_rows(page):
    (table,) = table_with(page, "predict")
    return table


def test_predict_report_sorted_with_threshold_divider_and_skipped(tmp_path):
    skipped = [{"path": "notes.txt", "error": "not an image"},
               {"path": "broken <1>.png", "error": "truncated file"}]
    report, added = predict_run(tmp_path, 40, threshold=0.6, skipped=skipped)
    page = parse_page(report)
    assert_files_exist(report, page)
    table = _predict_rows(page)
    divider = [i for i, c in enumerate(table.row_classes) if c == "divider"]
    assert len(divider) == 1
    rows = [r for i, r in enumerate(table.body) if i not in divider]
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True) and len(rows) == 40
    assert sorted(r[5] for r in rows) == sorted(p for p, _ in added)  # after "regions"
    want = sorted(added, key=lambda a: -a[1])  # stable: ties keep the order added
    assert [r[5] for r in rows] == [p for p, _ in want]
    above = sum(s >= 0.6 for _, s in added)
    assert divider[0] == above and all(s >= 0.6 for s in scores[:above])
    assert all(s < 0.6 for s in scores[above:])
    assert all(r[2] == ("anomalous" if float(r[1]) >= 0.6 else "normal") for r in rows)
    (sk,) = table_with(page, "skipped")
    assert sk.body == [["notes.txt", "not an image"], ["broken <1>.png", "truncated file"]]


def test_predict_report_without_threshold(tmp_path):
    report, _ = predict_run(tmp_path, 5, threshold=None)
    page = parse_page(report)
    table = _predict_rows(page)
    assert "divider" not in table.row_classes
    assert {r[2] for r in table.body} == {"—"}
    assert "no image threshold known" in report.read_text()


def test_predict_report_size_per_image(tmp_path):
    """Thumbnails stay small: 200 images (512 px inputs) well under 25 kB each (50 MB / 2,000)."""
    t0 = time.perf_counter()
    predict_run(tmp_path, 200, threshold=0.5, size=512)
    seconds = time.perf_counter() - t0
    total = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
    assert total / 200 < 12_000, total
    assert seconds < 10, seconds
    with Image.open(next((tmp_path / "report_files").iterdir())) as im:
        assert max(im.size) <= 256


# --- index pages ------------------------------------------------------------------------------

def test_runs_index_links_every_run_and_shows_mean_std(tmp_path):
    results = {}
    runs = []
    for k, seed in ((1, 1), (1, 2), (2, 1)):
        r = eval_run(tmp_path / f"k{k}_seed{seed}", categories=("bottle",), n=8, seed=seed, k_shot=k)
        results[(k, seed)] = r.metrics
        runs.append({"k": k, "seed": seed, "mean": r.metrics["mean"]})
    summary = {f"k{k}": {"n_runs": len(v), "seeds": [s for (kk, s) in results if kk == k],
                         "metrics": summarize_runs(v)}
               for k in (1, 2) for v in [[m for (kk, _), m in results.items() if kk == k]]}
    runs.append({"k": 2, "seed": 9})  # planned but without a report: listed, not linked
    page_path = write_runs_index(tmp_path, "mvtec few-shot", runs, summary, {"dataset": "mvtec"})
    page = parse_page(page_path)
    files = assert_files_exist(page_path, page)
    assert sorted(f.parent.name for f in files) == ["k1_seed1", "k1_seed2", "k2_seed1"]
    k1 = table_with(page, "metrics")[0]
    m = summary["k1"]["metrics"]
    assert k1.body[0][1:] == [f"{pct(m['bottle'][x]['mean'])} ± {pct(m['bottle'][x]['std'])}"
                              for x in METRIC_KEYS]
    assert k1.foot[0][0] == "mean"
    assert "seed 9 (no report)" in page_path.read_text().replace("<span class=\"muted\">", "").replace("</span>", "")


def test_protocol_index_links_reports_and_colours_the_comparison(tmp_path):
    results = tmp_path / "results"
    zs = eval_run(results / "mvtec_zero_shot", categories=("bottle", "cable"), n=10)
    eval_run(results / "visa_zero_shot", categories=("candle",), n=10, seed=1)
    out = subprocess.run([sys.executable, "scripts/compare_paper.py", "--results", str(results)],
                         cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    entries = discover_reports(results)
    assert [e[0] for e in entries] == ["mvtec_zero_shot", "visa_zero_shot"]
    from engine.report.__main__ import main
    assert main(["protocol", str(results)]) == 0  # what reproduce_all.sh can call
    assert_files_exist(results / "index.html", parse_page(results / "index.html"))
    assert main(["protocol", str(results / "nowhere")]) == 2
    entries.append(("mvtec_few_shot", results / "mvtec_few_shot" / "report.html"))  # not run
    page_path = write_protocol_index(results, results / "comparison.md", entries)
    page = parse_page(page_path)
    files = assert_files_exist(page_path, page)
    assert {f.name for f in files} == {"report.html", "comparison.md", "comparison.csv"}
    tables = read_comparison(results / "comparison.csv")
    assert [t["title"] for t in tables] == ["MVTec AD, 0-shot", "VisA, 0-shot"]
    comp = table_with(page, "comparison")
    assert len(comp) == 1 + len(tables)  # the mean overview and one per dataset/setting
    mv = comp[1]
    row = mv.body[[r[0] for r in mv.body].index("bottle")]
    cls = mv.body_classes[[r[0] for r in mv.body].index("bottle")]
    ours = zs.metrics["per_category"]["bottle"]
    with open(results / "comparison.csv") as f:
        rows = {(r["dataset"], r["category"], r["metric"]): r for r in csv.DictReader(f)}
    for j, key in enumerate(METRIC_KEYS, 1):
        r = rows[("mvtec", "bottle", key)]
        assert row[j].startswith(f"{100 * ours[key]:.1f} / {float(r['paper']):.1f}")
        d = float(r["diff"])
        assert cls[j] == ("same" if abs(d) < 0.05 else "better" if d > 0 else "worse")
        assert row[j].endswith(f"({d:+.1f})" if abs(d) >= 0.05 else "(0.0)")
    assert "mvtec_few_shot (no report found)" in " ".join(
        page_path.read_text().replace('<span class="muted">', "").replace("</span>", "").split())


# --- a real browser ---------------------------------------------------------------------------

def _png_stats(png: bytes) -> tuple[tuple[int, int], float]:
    with Image.open(io.BytesIO(png)) as im:
        return im.size, float(np.asarray(im.convert("L"), dtype=np.float64).std())


def test_reports_render_in_headless_chromium(run, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium not found (/usr/bin/chromium or chromium on PATH): install the "
                    "Debian package chromium (.ci/run does) to run the browser test")
    predict, _ = predict_run(tmp_path / "predict", 30, threshold=0.5,
                             skipped=[{"path": "x.txt", "error": "not an image"}])
    bad = tmp_path / "bad.html"  # the check itself must see errors
    bad.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>x</title></head>'
                   '<body><img src="missing.png"><script>console.error("boom")</script></body></html>')
    with Chromium(binary) as browser:
        page = browser.open(run.report, 1280, 900)
        size, spread = _png_stats(page.shoot())
        assert size == (1280, 900) and spread > 10, (size, spread)
        assert page.broken_images() == 0
        assert page.evaluate("document.querySelectorAll('table.metrics tbody tr').length") == 3
        order = page.evaluate(
            "(() => { const t = document.querySelector('table.metrics');"
            " t.tHead.rows[0].cells[5].click();"  # auroc_sp, descending first
            " return Array.from(t.rows).slice(1).map(r => r.cells[0].textContent.trim()); })()")
        per = run.metrics["per_category"]
        undefined = {c for c in per if per[c]["auroc_sp"] is None}  # null in strict JSON
        want = sorted((c for c in per if c not in undefined), key=lambda c: -per[c]["auroc_sp"])
        assert order == want + [c for c in per if c in undefined] + ["mean"]
        browser.collect_errors(page)
        assert page.errors == []
        p2 = browser.open(predict, 1024, 768)
        size, spread = _png_stats(p2.shoot())
        assert size == (1024, 768) and spread > 10 and p2.errors == []
        assert p2.evaluate("document.querySelectorAll('tr.divider').length") == 1
        p3 = browser.open(bad)
        assert len(p3.errors) == 2, p3.errors  # console.error + the missing picture
        assert p3.broken_images() == 1
        # a lazy picture far below the fold has not loaded at the load event; the check scrolls
        # to it and waits, as a reader would, instead of counting it broken
        lazy = tmp_path / "lazy.html"
        lazy.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>x</title></head>'
                        '<body><div style="height:20000px"></div><img src="'
                        + next(predict.parent.glob("report_files/*")).resolve().as_uri()
                        + '" loading="lazy"></body></html>')
        p4 = browser.open(lazy)
        assert p4.evaluate("document.images[0].complete") is False
        assert p4.broken_images() == 0 and p4.evaluate("window.scrollY") == 0
