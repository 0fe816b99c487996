"""Image-level sets (BrainMRI, ELPV: no masks): report.html gives metrics.json's reason for the
undefined pixel metrics ("image-level labels only"), not "only one class"; the mean of the
undefined metrics raises no RuntimeWarning, one info line says it; the defined numbers stay."""
from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pytest
from conftest import VIT, run_test_main
from sklearn.metrics import average_precision_score, roc_auc_score

from datasets.sets.indexing import prepare
from tools.synthetic.raw_sets import RAW_SETS

from engine.evaluate.results import write_metrics

PIXEL = ("auroc_px", "f1_px", "ap_px", "pro")


@pytest.mark.parametrize("name", ["brainmri", "elpv"])
def test_image_level_set_report_gives_the_reason_and_no_warning(tmp_path, capsys, name):
    RAW_SETS[name](tmp_path / "data")
    prepare(name, tmp_path / "data")
    args = VIT.args("mvtec", tmp_path / "out", "zero_shot", "--no_mvtec_aupro", report=True)
    args[args.index("--dataset") + 1] = name
    args[args.index("--data_path") + 1] = str(tmp_path / "data")
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_test_main(args) == 0
    out, err = capsys.readouterr()
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert "RuntimeWarning" not in out + err
    said = [ln for ln in (out + err).splitlines() if "undefined" in ln]
    assert len(said) == 1 and "image-level labels only" in said[0], said  # one info line
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    html = (tmp_path / "out" / "report.html").read_text()
    for cat, why in m["undefined"].items():
        if cat == "mean":
            continue
        assert set(why) == set(PIXEL)
        assert f"Pixel-level curves and metrics are undefined: {why['auroc_px']}." in html
    assert "image-level labels only" in html and "only one class" not in html
    assert "Image-level curves and metrics are undefined" not in html
    # the image metrics, recomputed here from the report's scores.csv with scikit-learn
    (cat,) = m["per_category"]
    (scores_csv,) = (tmp_path / "out" / "report_files").glob("*/scores.csv")
    rows = list(csv.DictReader(open(scores_csv)))
    y = np.array([int(r["label"]) for r in rows])
    s = np.array([float(r["score"]) for r in rows])
    assert 0 < y.sum() < len(y)
    assert m["per_category"][cat]["auroc_sp"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    assert m["per_category"][cat]["ap_sp"] == pytest.approx(average_precision_score(y, s), abs=1e-9)
    assert m["mean"]["auroc_sp"] == m["per_category"][cat]["auroc_sp"]  # one category
    assert all(m["mean"][k] is None for k in PIXEL)


def test_write_metrics_mean_of_undefined_values_is_one_line(tmp_path, capsys):
    nan = math.nan
    base = {"f1_px": 0.5, "ap_px": 0.5, "f1_sp": 0.5, "ap_sp": 0.5}
    per = {"a": {**base, "auroc_px": 0.5, "pro": nan, "auroc_sp": 0.25},
           "b": {**base, "auroc_px": 0.75, "pro": nan, "auroc_sp": nan},
           "c": {**base, "auroc_px": 1.0, "pro": nan, "auroc_sp": 0.5}}
    why = {c: {"pro": "image-level labels only"} for c in per}
    why["b"]["auroc_sp"] = "labels contain only one class"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = write_metrics(tmp_path, per, {}, undefined=why)
    assert [str(w.message) for w in caught] == []
    assert res["mean"]["auroc_px"] == 0.75  # (0.5 + 0.75 + 1.0) / 3
    assert res["mean"]["auroc_sp"] == 0.375  # (0.25 + 0.5) / 2: b left out
    assert math.isnan(res["mean"]["pro"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "undefined" in ln]
    assert lines == ["mean row: pro undefined in every category (image-level labels only); "
                     "auroc_sp undefined in b (labels contain only one class): the mean of the "
                     "other 2"]
