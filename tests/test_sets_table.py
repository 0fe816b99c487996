"""scripts/sets_table.py beyond what tests/test_benchmark_sets.py checks: only the zero-shot run
of a set is set beside the published figures (its few-shot run never is), a set prepared in a
folder not named after it is found through its meta.json (and an unreadable one passed over),
which sets a few-shot run can draw references for, the warning when --trained_on and the
checkpoint disagree (and none when they agree), an unreadable checkpoint, a published cell
that is not a number, and the means over the industrial and the medical sets.

Every expected figure is worked out by hand from the fake runs' means and the published tables
in scripts/paper_tables (quoted in the comments). Fast (no model): the mutation check of
scripts/sets_table.py runs this file.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from test_benchmark_sets import FULL, PAPER, _fake_run
from test_benchmarks import load_script

SETS_TABLE = load_script("sets_table")


def _published(res: Path) -> dict:
    return {(r["source"], r["set"], r["metric"]): r
            for r in csv.DictReader(open(res / "published.csv", encoding="utf-8"))}


def _checkpoint(tmp_path: Path, config: dict | None = PAPER) -> Path:
    ck = tmp_path / "epoch_3.pth"
    torch.save({"trainable_linearlayer": {}, **({"config": config} if config else {})}, ck)
    return ck


def test_only_the_zero_shot_run_is_set_beside_the_published_figures(tmp_path):
    """BTAD zero-shot (image AUROC 75.0) and few-shot (95.0): AnomalyCLIP's 73.6 is compared
    with 75.0 (+1.4); BrainMRI run few-shot only has no published row at all, though both
    papers publish it; both settings stay in the main table."""
    res = tmp_path / "res"
    _fake_run(res, "btad", {**FULL, "auroc_sp": 0.75})
    _fake_run(res, "btad", {**FULL, "auroc_sp": 0.95}, folder="few_shot", mode="few_shot")
    _fake_run(res, "brainmri", {**FULL, "auroc_sp": 0.99}, folder="few_shot", mode="few_shot")
    SETS_TABLE.table(res, _checkpoint(tmp_path))
    pub = _published(res)
    row = pub[("anomalyclip", "btad", "auroc_sp")]
    assert (row["ours"], row["published"], row["diff"], row["comparable"]) == \
        ("75.0", "73.6", "1.4", "yes")
    assert pub[("adaclip", "btad", "auroc_sp")]["ours"] == "75.0"  # AdaCLIP: 85.2
    assert not any(k[1] == "brainmri" for k in pub)
    md = (res / "benchmarks.md").read_text(encoding="utf-8")
    # AnomalyCLIP publishes 4 metrics: a table of 6 columns (set, 4 metrics, comparable)
    assert "\n| set | auroc_px | pro | auroc_sp | ap_sp | comparable |\n" \
           "|---|---|---|---|---|---|\n| btad |" in md
    assert "| btad | zero_shot | 50.0 | 50.0 | 50.0 | 50.0 | 75.0 | 50.0 | 50.0 |" in md
    assert "| btad | few_shot | 50.0 | 50.0 | 50.0 | 50.0 | 95.0 | 50.0 | 50.0 |" in md
    assert "| brainmri | few_shot |" in md and "| brainmri |" not in md.split("## Published")[1]


def test_table_means_per_kind_and_setting_over_the_sets_that_define_each_metric(tmp_path):
    """Industrial zero-shot: BTAD (pro 0.5) and KSDD2 (pro 0.25): pro (50 + 25) / 2 = 37.5;
    auroc_px defined by BTAD only: 90.0. Medical: HeadCT has image metrics only: "–" for the
    pixel metrics, 'none' named."""
    res = tmp_path / "res"
    _fake_run(res, "btad", {**FULL, "auroc_px": 0.9})
    _fake_run(res, "ksdd2", {**FULL, "auroc_px": None, "pro": 0.25})
    _fake_run(res, "headct", {**FULL, "auroc_px": None, "f1_px": None, "ap_px": None,
                              "pro": None, "auroc_sp": 0.8})
    SETS_TABLE.table(res, None)
    rows = {(r["set"], r["setting"]): r for r in csv.DictReader(open(res / "benchmarks.csv"))}
    ind = rows[("mean, industrial", "zero_shot")]
    assert (ind["kind"], ind["auroc_px"], ind["pro"], ind["auroc_sp"]) == \
        ("industrial", "90.0", "37.5", "50.0")
    med = rows[("mean, medical", "zero_shot")]
    assert (med["auroc_px"], med["auroc_sp"]) == ("–", "80.0")
    assert rows[("ksdd2", "zero_shot")]["auroc_px"] == "–"
    assert ("mean, industrial", "few_shot") not in rows  # no few-shot run: no mean row
    md = (res / "benchmarks.md").read_text(encoding="utf-8")
    assert "- mean, industrial, zero_shot: auroc_px over btad; f1_px over btad, ksdd2;" in md
    assert "- mean, medical, zero_shot: auroc_px over none;" in md


def test_a_published_figure_beside_a_metric_we_cannot_measure(tmp_path):
    """A run whose pixel AUROC is undefined beside AnomalyCLIP's BTAD figure (60.8): the cell
    is "– / 60.8" with no difference, published.csv leaves ours and the difference empty."""
    res = tmp_path / "res"
    _fake_run(res, "btad", {**FULL, "auroc_px": None})
    SETS_TABLE.table(res, _checkpoint(tmp_path))
    row = _published(res)[("anomalyclip", "btad", "auroc_px")]
    assert (row["ours"], row["published"], row["diff"]) == ("", "60.8", "")
    md = (res / "benchmarks.md").read_text(encoding="utf-8")
    assert "| btad | – / 60.8 | 50.0 / 25.0 (+25.0) |" in md


def test_the_means_of_each_setting_are_over_its_own_runs(tmp_path):
    """BTAD zero-shot (image AUROC 75.0) and few-shot (95.0): the industrial zero-shot mean is
    75.0 and the few-shot mean 95.0, never (75 + 95) / 2 = 85.0."""
    res = tmp_path / "res"
    _fake_run(res, "btad", {**FULL, "auroc_sp": 0.75})
    _fake_run(res, "btad", {**FULL, "auroc_sp": 0.95}, folder="few_shot", mode="few_shot")
    SETS_TABLE.table(res, None)
    rows = {(r["set"], r["setting"]): r for r in csv.DictReader(open(res / "benchmarks.csv"))}
    assert rows[("mean, industrial", "zero_shot")]["auroc_sp"] == "75.0"
    assert rows[("mean, industrial", "few_shot")]["auroc_sp"] == "95.0"


def test_a_source_with_one_figure_gets_its_table_and_its_csv_row(tmp_path, monkeypatch):
    """A source publishing one metric of one set (an odd number of columns): its table is
    set, the metric and comparable, three cells in every row; published.csv holds that one
    comparison: ours 75.0 beside 73.6, +1.4."""
    (tmp_path / "sets_x.csv").write_text("set,auroc_sp\nbtad,73.6\n")
    (tmp_path / "sets_x_tested.csv").write_text(
        "set,tested,ours\nbtad,test/ of the release,the release's test split\n")
    monkeypatch.setattr(SETS_TABLE, "TABLES", tmp_path)
    monkeypatch.setattr(SETS_TABLE, "PUBLISHED", [SETS_TABLE.Published("x", "X", "", "mvtec")])
    res = tmp_path / "res"
    _fake_run(res, "btad", {**FULL, "auroc_sp": 0.75})
    SETS_TABLE.table(res, _checkpoint(tmp_path))
    md = (res / "benchmarks.md").read_text(encoding="utf-8")
    assert "\n| set | auroc_sp | comparable |\n|---|---|---|\n| btad | 75.0 / 73.6 (+1.4) |" in md
    pub = _published(res)
    assert list(pub) == [("x", "btad", "auroc_sp")]
    row = pub[("x", "btad", "auroc_sp")]
    assert (row["ours"], row["published"], row["diff"], row["comparable"]) == \
        ("75.0", "73.6", "1.4", "yes")


def test_a_medical_set_run_few_shot_only_gets_its_mean_row(tmp_path):
    """BTAD zero-shot only (industrial) and BrainMRI few-shot only (medical, image AUROC 99.0):
    the medical few-shot mean row is there though the medical zero-shot one is not."""
    res = tmp_path / "res"
    _fake_run(res, "btad", FULL)
    _fake_run(res, "brainmri", {**FULL, "auroc_sp": 0.99}, folder="few_shot", mode="few_shot")
    SETS_TABLE.table(res, None)
    rows = {(r["set"], r["setting"]): r for r in csv.DictReader(open(res / "benchmarks.csv"))}
    assert ("mean, medical", "zero_shot") not in rows
    assert rows[("mean, medical", "few_shot")]["auroc_sp"] == "99.0"


def test_a_run_on_other_test_images_is_not_comparable_whichever_sorts_first(tmp_path):
    """BTAD's source tested the release's test split; a run that tested every image ('every
    image' sorts before it) is not comparable."""
    res = tmp_path / "res"
    _fake_run(res, "btad", FULL, test_images="every image")
    SETS_TABLE.table(res, _checkpoint(tmp_path))
    row = _published(res)[("anomalyclip", "btad", "auroc_sp")]
    assert row["comparable"] == "no"
    assert row["why"].startswith("the run tested every image, the source test/ of "
                                 "BTech_Dataset_transformed")


def test_a_checkpoint_is_read_as_weights_only(tmp_path, capsys):
    """A checkpoint holding an object that is not weights (here a Fraction, which unpickling
    would build by calling its class) is not read at all: its training is unknown."""
    from fractions import Fraction

    ck = tmp_path / "odd.pth"
    torch.save({"config": PAPER, "note": Fraction(1, 3)}, ck)
    assert SETS_TABLE.recorded_training(ck) is None
    assert f"warning: cannot read {ck} (" in capsys.readouterr().err


def test_a_run_that_records_no_mode_is_not_comparable(tmp_path):
    res = tmp_path / "res"
    _fake_run(res, "btad", FULL, mode=None)
    SETS_TABLE.table(res, _checkpoint(tmp_path))
    row = _published(res)[("anomalyclip", "btad", "auroc_sp")]
    assert row["comparable"] == "no"
    assert row["why"] == "the run is of an unrecorded mode; the published figures are zero-shot"


def test_a_first_table_without_published_sets_writes_no_comparison(tmp_path):
    res = tmp_path / "res"
    _fake_run(res, "ksdd2", FULL)  # nobody published KolektorSDD2; no published.csv before
    assert SETS_TABLE.table(res) == res / "benchmarks.md"
    assert not (res / "published.csv").exists()
    assert "## Published" not in (res / "benchmarks.md").read_text(encoding="utf-8")


def test_no_runs_is_an_error(tmp_path):
    (tmp_path / "res").mkdir()
    with pytest.raises(SystemExit, match="no <set>_zero_shot/metrics.json under"):
        SETS_TABLE.table(tmp_path / "res")


def test_trained_on_warns_only_when_the_checkpoint_records_another_set(tmp_path, capsys):
    res = tmp_path / "res"
    _fake_run(res, "btad", FULL)
    ck = _checkpoint(tmp_path)  # records mvtec
    assert SETS_TABLE.main(["table", str(res), "--checkpoint", str(ck),
                            "--trained_on", "mvtec"]) == 0
    assert "warning" not in capsys.readouterr().err  # they agree: nothing to say
    assert SETS_TABLE.main(["table", str(res), "--checkpoint", str(ck),
                            "--trained_on", "visa"]) == 0
    err = capsys.readouterr().err
    assert f"warning: --trained_on visa, but {ck} records training on mvtec: the recorded one " \
           "is used" in err
    assert _published(res)[("anomalyclip", "btad", "auroc_sp")]["comparable"] == "yes"
    assert SETS_TABLE.main(["table", str(res), "--trained_on", "visa"]) == 0  # nothing recorded
    assert "warning" not in capsys.readouterr().err
    (tmp_path / "visa").mkdir()  # the other direction: the recorded set sorts after the flag's
    other = _checkpoint(tmp_path / "visa", {**PAPER, "dataset": "visa"})
    assert SETS_TABLE.main(["table", str(res), "--checkpoint", str(other),
                            "--trained_on", "mvtec"]) == 0
    assert f"warning: --trained_on mvtec, but {other} records training on visa: the recorded " \
           "one is used" in capsys.readouterr().err


def test_an_unreadable_checkpoint_is_said_and_compares_as_unknown(tmp_path, capsys):
    res = tmp_path / "res"
    _fake_run(res, "btad", FULL)
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    assert SETS_TABLE.main(["table", str(res), "--checkpoint", str(bad)]) == 0
    assert f"warning: cannot read {bad} (" in capsys.readouterr().err
    why = _published(res)[("anomalyclip", "btad", "auroc_sp")]["why"]
    assert "training set is unknown (pass --trained_on)" in why
    assert SETS_TABLE.main(["table", str(res)]) == 0  # no checkpoint at all
    assert "training set is unknown (pass --checkpoint)" in \
        _published(res)[("anomalyclip", "btad", "auroc_sp")]["why"]
    assert SETS_TABLE.recorded_training(_checkpoint(tmp_path, {"dataset": ""})) is None
    torch.save([1, 2], bad)  # readable, but not a dict
    assert SETS_TABLE.recorded_training(bad) is None


def test_a_published_cell_that_is_not_a_number_is_named(tmp_path, monkeypatch):
    (tmp_path / "sets_x.csv").write_text("set,auroc_px,pro\nbtad,60.8,\nmpdd, 94.1 ,n/a\n")
    monkeypatch.setattr(SETS_TABLE, "TABLES", tmp_path)
    source = SETS_TABLE.Published("x", "", "", None)
    with pytest.raises(SystemExit) as e:
        SETS_TABLE.read_published(source)
    assert str(e.value) == (f"error: {tmp_path / 'sets_x.csv'}: set mpdd, column pro: 'n/a' is "
                            "not a number")
    (tmp_path / "sets_x.csv").write_text("set,auroc_px,pro\nbtad,60.8,\nmpdd, 94.1 ,83.2\n")
    assert SETS_TABLE.read_published(source) == {"btad": {"auroc_px": 60.8},
                                                 "mpdd": {"auroc_px": 94.1, "pro": 83.2}}


# --- list ---------------------------------------------------------------------------------------
def _meta(folder: Path, **meta) -> None:
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps(meta))


def _row(anomaly: int) -> dict:
    return {"img_path": "x.png", "anomaly": anomaly}


def test_list_finds_sets_by_their_meta_json_and_says_which_can_run_few_shot(tmp_path, capsys):
    root = tmp_path / "data"
    v2 = {"index_version": 2}
    # named by its index, not its folder; no split: references from the normal test images
    _meta(root / "scans", dataset="brainmri", official_split=False, train={"brain": []},
          test={"brain": [_row(0), _row(1)]}, **v2)
    # named by its folder (an index without a name); a split: references from train
    _meta(root / "btad", train={"01": [_row(0)], "02": [_row(0)]}, test={"01": [_row(1)]})
    # a split whose train has no normal image in one category: no few-shot run
    _meta(root / "my_dagm", dataset="dagm", official_split=True,
          train={"Class1": [_row(0)], "Class2": [_row(1)]}, test={"Class1": [_row(1)]}, **v2)
    # findings only: nothing to draw from
    _meta(root / "polyps", dataset="kvasir", official_split=False, train={"colon": []},
          test={"colon": [_row(1)]}, **v2)
    _meta(root / "mvtec", train={}, test={})  # not a benchmark set
    _meta(root / "notes", dataset="notes")
    (root / "broken").mkdir()
    (root / "broken" / "meta.json").write_text("{not json")  # cannot be read: passed over
    (root / "odd" / "meta.json").mkdir(parents=True)  # a folder where the file should be
    assert SETS_TABLE.main(["list", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"btad {root / 'btad'} 1", f"dagm {root / 'my_dagm'} 0",
        f"kvasir {root / 'polyps'} 0", f"brainmri {root / 'scans'} 1"]


def test_list_of_a_set_with_a_split_and_no_training_images(tmp_path):
    _meta(tmp_path / "isic", dataset="isic", official_split=True, train={},
          test={"skin": [_row(1)]}, index_version=2)
    assert SETS_TABLE.prepared(tmp_path) == [("isic", tmp_path / "isic", False)]


def test_list_refuses_an_index_written_under_the_old_rule(tmp_path, capsys):
    _meta(tmp_path / "scans", dataset="brainmri", train={"brain": [_row(0)]},
          test={"brain": [_row(0), _row(1)]})  # no index_version: before version 2
    assert SETS_TABLE.main(["list", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'scans' / 'meta.json'} was "
                                                "written by an older version")
    assert err[0].endswith(f"`python -m datasets.prepare brainmri {tmp_path / 'scans'}`")


def test_a_model_or_size_other_than_the_released_one_either_way():
    """ViT-bigG-14 sorts after ViT-L-14-336 and 1024 px is above 518: still not the released
    setting, as ViT-B-16 and 336 px below it are not."""
    anomalyclip = SETS_TABLE.PUBLISHED[0]
    for model, size in (("ViT-bigG-14", 1024), ("ViT-B-16", 336)):
        problems, _ = SETS_TABLE.training_problems(anomalyclip, {**PAPER, "model": model,
                                                                 "image_size": size}, None, None)
        assert problems == [f"model {model}, not ViT-L-14-336 (the released setting, which we "
                            "assume the source ran)", f"image size {size}, not 518 (the released "
                            "setting, which we assume the source ran)"]
    assert SETS_TABLE.training_problems(anomalyclip, PAPER, None, None) == \
        ([], "projections trained on mvtec's test split, ViT-L-14-336 at 518 px")


def test_trained_on_another_set_on_either_side_of_the_sources():
    """btad sorts before mvtec, visa after: both are another set than AnomalyCLIP's."""
    anomalyclip = SETS_TABLE.PUBLISHED[0]
    for other in ("btad", "visa"):
        problems, _ = SETS_TABLE.training_problems(anomalyclip, {**PAPER, "dataset": other},
                                                   None, None)
        assert problems == [f"trained on {other}, the source on mvtec"]


def test_a_stated_training_set_on_either_side_of_the_sources():
    """--trained_on for a checkpoint that records nothing: btad sorts before mvtec, visa after;
    both are another set than AnomalyCLIP's, mvtec itself is the source's."""
    anomalyclip = SETS_TABLE.PUBLISHED[0]
    for other in ("btad", "visa"):
        assert SETS_TABLE.training_problems(anomalyclip, None, other, Path("c.pth")) == \
            ([f"the source trained on mvtec, these projections on {other} (--trained_on)"], "")
    stated = "".join(["mv", "tec"])  # a new string, as a command line gives it
    assert SETS_TABLE.training_problems(anomalyclip, None, stated, Path("c.pth")) == \
        ([], "projections trained on mvtec (--trained_on)")


def test_list_as_a_real_command(tmp_path):
    """The command line's words are new strings, not the literals of a test."""
    import subprocess
    import sys

    _meta(tmp_path / "scans", dataset="brainmri", official_split=False, train={"brain": []},
          test={"brain": [_row(0)]}, index_version=2)
    r = subprocess.run([sys.executable, str(Path(SETS_TABLE.__file__)), "list", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"brainmri {tmp_path / 'scans'} 1\n", "")


def test_help_opens_with_what_the_script_does(capsys):
    with pytest.raises(SystemExit) as e:
        SETS_TABLE.main(["--help"])
    assert e.value.code == 0
    assert "The cross-dataset table of scripts/test_benchmarks.sh, and the list of prepared " \
           "sets it runs." in " ".join(capsys.readouterr().out.split())


def test_the_published_sources_are_read_only():
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        SETS_TABLE.PUBLISHED[1].trained_on = "mvtec"


def test_list_of_a_missing_root_is_an_error(tmp_path, capsys):
    assert SETS_TABLE.main(["list", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == f"error: data root not found: {tmp_path / 'none'}\n"


def test_a_command_is_required(capsys):
    """No command is a usage error naming the choice, not a traceback."""
    with pytest.raises(SystemExit) as e:
        SETS_TABLE.main([])
    assert e.value.code == 2 and "the following arguments are required: command" in \
        capsys.readouterr().err
