"""The prompt study's report.html: the header the other reports have (random-model warning,
model, checkpoint, dataset), tables that fit a 1280 px window without sideways scrolling, and a
change chart whose best and worst variants stay legible with 49 variants (seeded synthetic
study rows; one small real study for the header)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import VIT
from PIL import Image
from report_browser import Chromium, find_chromium
from report_html import parse_page, table_with
from test_predict import MODELS

import prompt_study
from datasets.sets import MVTEC_CATEGORIES
from metrics import METRIC_KEYS

from engine.report.common import random_model_note
from engine.report.study import write_study_report

GREEN, RED = (0x1E, 0x7A, 0x3C), (0xB3, 0x26, 0x1E)  # the chart's bar colours
N_VARIANTS, EACH = 49, 15


def _rows(seed: int = 11) -> list[dict]:
    """A study of 49 variants (the baseline first) over the 15 MVTec categories, ranked by
    auroc_px+auroc_sp; every change non-zero (so that every drawn row has a bar)."""
    rng = np.random.default_rng(seed)
    cats = list(MVTEC_CATEGORIES)
    base = {c: dict(zip(METRIC_KEYS, rng.uniform(0.5, 0.95, len(METRIC_KEYS)))) for c in cats}
    rows = []
    for v in range(N_VARIANTS):
        shift = 0.0 if v == 0 else rng.choice([-1, 1]) * rng.uniform(0.002, 0.03)
        per = {c: {k: x + (0 if v == 0 else shift + rng.normal(0, 0.002)) for k, x in m.items()}
               for c, m in base.items()}
        mean = {k: float(np.mean([per[c][k] for c in cats])) for k in METRIC_KEYS}
        name = "baseline" if v == 0 else f"no_template_{v:02d}"
        rows.append({"name": name, "change": "same as the baseline" if v == 0 else
                     f"without template {v}: 'a cropped low resolution photo of the {{}}.'",
                     "per_category": per, "mean": mean,
                     "rank": (mean["auroc_px"] + mean["auroc_sp"]) / 2})
    for r in rows:
        r["delta"] = {k: 100 * (r["mean"][k] - rows[0]["mean"][k]) for k in METRIC_KEYS}
        r["rank_delta"] = 100 * (r["rank"] - rows[0]["rank"])
    return rows


@pytest.fixture(scope="module")
def page_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    rows = _rows()
    order = sorted(rows, key=lambda r: -r["rank"])
    info = {"warning": random_model_note(str(MODELS / "tiny-vit-random.pt")),
            "mode": "zero_shot", "dataset": "mvtec", "model": "tiny-vit",
            "checkpoint": str(MODELS / "linear-random.pth")}
    write_study_report(out, "prompt study: mvtec zero_shot", rows, order,
                       "auroc_px+auroc_sp", info)
    return out / "report.html", rows


def _bar_rows(png: bytes) -> list[int]:
    """The heights (px) of the chart's bar rows: runs of pixel rows holding a bar colour."""
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    bar = np.zeros(a.shape[:2], bool)
    for colour in (GREEN, RED):
        bar |= (np.abs(a - colour) <= 8).all(axis=-1)
    on = bar.sum(axis=1) >= 3
    runs, n = [], 0
    for v in [*on, False]:
        if v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def test_study_chart_draws_the_best_and_worst_legibly_and_the_page_fits(page_path):
    path, rows = page_path
    parse_page(path)
    by_rank = sorted(rows, key=lambda r: -r["rank"])
    best, worst = [r["name"] for r in by_rank[:EACH]], [r["name"] for r in by_rank[-EACH:]]
    assert "baseline" not in best + worst  # the seed puts it in the middle
    png = (path.parent / "report_files" / "deltas.png").read_bytes()
    heights = _bar_rows(png)
    assert len(heights) == 2 * EACH, heights  # one bar row per drawn variant, none for the gap
    assert min(heights) >= 14, heights  # each row tall enough for its 9 pt name
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium not found (/usr/bin/chromium or chromium on PATH): install the "
                    "Debian package chromium (.ci/run does) to run the browser test")
    with Chromium(binary) as browser:
        page = browser.open(path, 1280, 900)
        alt = page.evaluate("document.querySelector('#deltas ~ .plots img').alt")
        assert alt == (f"change against the baseline, per metric, of the {EACH} best variants ("
                       + ", ".join(best) + f") and the {EACH} worst (" + ", ".join(worst) + ")")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        for table in ("table.study", "table.heat", "table.info"):
            fits = page.evaluate(f"(() => {{ const t = document.querySelector('{table}');"
                                 " return [t.scrollWidth, t.clientWidth]; })()")
            assert fits[0] <= fits[1], (table, fits)  # no scrolling inside its own box either
        shown = page.evaluate("(() => { const i = document.querySelector('#deltas ~ .plots img');"
                              " return [i.getBoundingClientRect().width, i.naturalWidth,"
                              " i.complete]; })()")
        assert shown[2] and shown[0] == shown[1], shown  # drawn at its own size, not shrunk
        assert page.evaluate("document.querySelectorAll('table.heat tbody tr').length") == \
            N_VARIANTS
        assert page.evaluate("document.querySelectorAll('table.study tbody tr').length") == \
            N_VARIANTS
        browser.collect_errors(page)
        assert page.errors == []


def test_study_heat_table_is_per_variant_and_category(page_path):
    path, rows = page_path
    (heat,) = table_with(parse_page(path), "heat")
    assert heat.head == [["variant", *MVTEC_CATEGORIES]]
    by_rank = sorted(rows, key=lambda r: -r["rank"])
    base = rows[0]["per_category"]
    for row, r in zip(heat.body, by_rank):
        assert row[0] == r["name"]
        for text, c in zip(row[1:], MVTEC_CATEGORIES):
            m = r["per_category"][c]
            d = 50 * (m["auroc_px"] - base[c]["auroc_px"] + m["auroc_sp"] - base[c]["auroc_sp"])
            assert text == ("0.0" if abs(d) < 0.05 else f"{d:+.1f}"), (r["name"], c)


def test_real_study_report_has_the_random_model_banner_and_header(tmp_path):
    variant = tmp_path / "short"
    variant.mkdir()
    (variant / "normal_states.txt").write_text("flawless {}\n{}\n")
    (variant / "abnormal_states.txt").write_text("damaged {}\n")
    (variant / "templates.txt").write_text("a photo of a {}.\n")
    save = tmp_path / "study"
    args = VIT.args("mvtec", save, "zero_shot", "--variants", str(variant), "--categories",
                    "bottle", "--no_mvtec_aupro", report=True)
    assert prompt_study.main(args) == 0
    page = parse_page(save / "report.html")
    html = (save / "report.html").read_text()
    assert 'class="warn">Made with a random test model (tiny-vit-random.pt)' in html
    (info,) = [t for t in page.tables if "info" in t.classes]
    facts = {r[0]: r[1] for r in info.body}
    assert facts["dataset"] == "mvtec" and facts["mode"] == "zero_shot"
    assert facts["model"] == VIT.model_name
    assert facts["checkpoint"] == str(VIT.checkpoint)
    assert facts["variants"] == "2" and facts["categories"] == "1"
    ranked = json.loads((save / "study.json").read_text())["ranking"]
    (table,) = table_with(page, "study")
    assert [r[1] for r in table.body] == ranked
