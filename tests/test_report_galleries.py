"""The evaluation report's galleries: "Worst false negatives" holds only anomalous images below
the image threshold (or says there are none), and never an image that "Best detections" shows."""
from __future__ import annotations

import numpy as np
import pytest
from report_html import parse_page
from report_synthetic import eval_run

from engine.report import select_gallery

SCORES = np.array([0.9, 0.3, 0.7, 0.2, 0.6, 0.5, 0.1, 0.8])
LABELS = np.array([1, 1, 0, 1, 1, 0, 0, 1])


def test_select_gallery_by_the_threshold_worked_by_hand():
    # anomalous: 0 (0.9), 1 (0.3), 3 (0.2), 4 (0.6: at the threshold, flagged), 7 (0.8)
    # normal: 2 (0.7), 5 (0.5), 6 (0.1)
    assert select_gallery(SCORES, LABELS, 0.6, n=6) == {
        "false_positives": [2, 5, 6], "false_negatives": [3, 1], "best_detections": [0, 7, 4]}
    assert select_gallery(SCORES, LABELS, 0.6, n=2) == {
        "false_positives": [2, 5], "false_negatives": [3, 1], "best_detections": [0, 7]}
    assert select_gallery(SCORES, LABELS, 0.15, n=6)["false_negatives"] == []
    assert select_gallery(SCORES, LABELS, 0.95, n=6)["best_detections"] == []
    for undefined in (None, float("nan")):  # one class: no threshold, no false negatives
        assert select_gallery(SCORES, LABELS, undefined, n=6) == {
            "false_positives": [2, 5, 6], "false_negatives": [], "best_detections": [0, 7, 4, 1, 3]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return eval_run(tmp_path_factory.mktemp("galleries"), categories=("bottle", "cable"), n=24,
                    seed=5, gallery_n=6)


def _captions(path) -> dict[tuple[str, str], list[tuple[float, str, str]]]:
    """Per (category, gallery): (score, badge, path) of each figure, read from the HTML."""
    import html as html_lib
    import re

    html = html_lib.unescape(path.read_text())
    out = {}
    for block in re.finditer(r'<div class="gallery" data-kind="(\w+)" data-category="([^"]+)">'
                             r'(.*?)</div>', html, re.S):
        kind, cat, body = block.groups()
        out[(cat, kind)] = [(float(s), b, p) for s, b, p in re.findall(
            r'score <b>([^<]+)</b> <span class="badge \w+">(.*?)</span>.*?<code>([^<]+)</code>',
            body, re.S)]
    return out


def test_false_negatives_are_below_the_threshold_and_not_best_detections(run):
    shown = _captions(run.report)
    page = parse_page(run.report)
    for name, c in run.categories.items():
        thr = c.values["threshold_sp"]
        label = dict(zip(c.paths, c.labels))
        fn = shown.get((name, "false_negatives"), [])
        best = shown.get((name, "best_detections"), [])
        # every anomalous image under the threshold, counted here from the scores and labels
        missed = sorted((s, p) for s, y, p in zip(c.scores, c.labels, c.paths) if y and s < thr)
        assert [p for _, _, p in fn] == [p for _, p in missed][:6]
        assert all(label[p] == 1 and b == "passed, < threshold" for _, b, p in fn)
        assert all(label[p] == 1 and b == "flagged, ≥ threshold" for _, b, p in best)
        assert not {p for *_, p in fn} & {p for *_, p in best}
        if not missed:
            assert (name, "false_negatives") not in page.galleries
    text = run.report.read_text()
    # the fixture's seed gives one category with misses and one without: both cases are seen
    assert sorted(bool(shown.get((n, "false_negatives"))) for n in run.categories) == [False, True]
    assert text.count("none: every anomalous image scores at or above the image threshold") == 1
