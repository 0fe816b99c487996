"""The prompt study's pieces that need no model: which variants a study compares (the baseline,
folders named by their folder, one ablation per line of a group of two or more lines), what
each changes, the folder --write_best writes, the --rank_by checks, the rank value (the mean of
the named metrics), the change against the baseline (its sign: better is +), the ranking (NaN
last) and the chart's bar colours.

Every expected value is worked out by hand from the small prompt sets and metric tables below.
Fast (no model is loaded): the mutation check of engine/evaluate/prompt_variants.py and
engine/evaluate/prompt_study.py runs this file for every mutant.
"""
from __future__ import annotations

import io
import json
import math
import re
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from errors import ConfigError, DatasetError
from prompts import PromptSet

from engine.config import StudyConfig
from engine.evaluate.prompt_study import Study, _pct, rank_value, ranked, results
from engine.evaluate.prompt_variants import Variant, ablations, build_variants, describe_change, write_prompt_dir

BASE = PromptSet(("flawless {}", "perfect {}", "clean {}"), ("damaged {}", "broken {}"),
                 ("a photo of a {}.",))


def _folder(root: Path, name: str, normal, abnormal, templates, overrides=None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    for file, lines in (("normal_states.txt", normal), ("abnormal_states.txt", abnormal),
                        ("templates.txt", templates)):
        (d / file).write_text("\n".join(lines) + "\n")
    if overrides is not None:
        (d / "overrides.json").write_text(json.dumps(overrides))
    return d


# --- engine.evaluate.prompt_variants ---------------------------------------------------------------------
def test_describe_change_counts_added_and_dropped_lines_per_file():
    other = PromptSet(("flawless {}", "pristine {}"), ("damaged {}", "broken {}"),
                      ("a photo of a {}.", "a {}."), {"bottle": {"object": "flask"}})
    # normal: + pristine, - perfect, - clean; abnormal: same; templates: + "a {}."
    assert describe_change(BASE, other) == \
        "normal states +1/-2, templates +1/-0, overrides differ"
    assert describe_change(BASE, PromptSet(BASE.normal_states, ("damaged {}",), BASE.templates)) \
        == "abnormal states +0/-1"
    assert describe_change(BASE, PromptSet(*reversed_groups(BASE))) == "same as the baseline"


def reversed_groups(p: PromptSet):
    """The same lines in another order: a set, not a sequence, is what the change compares."""
    return tuple(tuple(reversed(g)) for g in (p.normal_states, p.abnormal_states, p.templates))


def test_ablations_leave_each_line_out_and_skip_a_group_of_one_line():
    states = ablations(BASE, ["states"])
    # 3 normal states and 2 abnormal: 5 variants; the one template is not ablated
    assert [v.name for v in states] == ["no_normal_state_01", "no_normal_state_02",
                                        "no_normal_state_03", "no_abnormal_state_01",
                                        "no_abnormal_state_02"]
    assert [v.prompts.normal_states for v in states[:3]] == [
        ("perfect {}", "clean {}"), ("flawless {}", "clean {}"), ("flawless {}", "perfect {}")]
    assert [v.change for v in states[:3:2]] == ["without normal state 1: 'flawless {}'",
                                                "without normal state 3: 'clean {}'"]
    assert states[1].prompts.abnormal_states == BASE.abnormal_states
    assert states[1].prompts.templates == BASE.templates
    assert states[1].change == "without normal state 2: 'perfect {}'"
    assert states[4].prompts.abnormal_states == ("damaged {}",)  # a group of two: ablated
    assert states[4].change == "without abnormal state 2: 'broken {}'"
    assert all(v.prompt_dir is None for v in states)
    assert ablations(BASE, ["templates"]) == []  # one template: leaving it out leaves nothing
    given = ["".join(["sta", "tes"])]  # built at run time, as the command line gives it
    assert [v.name for v in ablations(BASE, given)] == [v.name for v in states]
    one = PromptSet(("{}",), ("damaged {}", "broken {}"), ("a {}.", "the {}."))
    both = ablations(one, ["templates", "states"])  # the order asked for
    assert [v.name for v in both] == ["no_template_01", "no_template_02",
                                      "no_abnormal_state_01", "no_abnormal_state_02"]
    assert both[1].prompts.templates == ("a {}.",)
    assert both[1].change == "without template 2: 'the {}.'"


def test_build_variants_names_folders_by_their_folder_even_given_a_relative_path(tmp_path,
                                                                                  monkeypatch):
    _folder(tmp_path, "base", BASE.normal_states, BASE.abnormal_states, BASE.templates)
    _folder(tmp_path, "short", ["flawless {}"], ["damaged {}", "broken {}"], ["a photo of a {}."],
            {"bottle": {"object": "glass bottle"}})
    monkeypatch.chdir(tmp_path / "short")
    out = build_variants(str(tmp_path / "base"), ["."], ["states"], ["bottle"])
    assert [v.name for v in out][:2] == ["baseline", "short"]  # ".", resolved: the folder
    assert (out[0].prompt_dir, out[0].change) == (str(tmp_path / "base"), "the baseline")
    assert out[1].prompt_dir == "."
    assert out[1].change == "normal states +0/-2, overrides differ"
    assert out[1].prompts.overrides == {"bottle": {"object": "glass bottle"}}
    assert [v.name for v in out[2:]] == ["no_normal_state_01", "no_normal_state_02",
                                         "no_normal_state_03", "no_abnormal_state_01",
                                         "no_abnormal_state_02"]


def test_build_variants_refuses_a_missing_folder_and_two_of_one_name(tmp_path):
    with pytest.raises(DatasetError, match="prompt variant folder not found: .*nowhere"):
        build_variants(None, [str(tmp_path / "nowhere")], [], ["bottle"])
    a = _folder(tmp_path / "a", "short", ["{}"], ["damaged {}"], ["a {}."])
    b = _folder(tmp_path / "b", "short", ["{}"], ["broken {}"], ["a {}."])
    with pytest.raises(ConfigError, match="two prompt variants are named 'short'") as e:
        build_variants(None, [str(a), str(b)], [], ["bottle"])
    assert f"({a} and {b})" in str(e.value)
    base = _folder(tmp_path, "baseline", ["{}"], ["damaged {}"], ["a {}."])
    with pytest.raises(ConfigError, match="named 'baseline'"):  # the baseline's own name
        build_variants(None, [str(base)], [], ["bottle"])


def test_build_variants_checks_every_set_before_any_work(tmp_path):
    bad = _folder(tmp_path, "bad", ["{}", "perfect"], ["damaged {}"], ["a {}."])
    with pytest.raises(DatasetError, match="bad prompt files") as e:
        build_variants(None, [str(bad)], [], ["bottle"])
    assert f"{bad / 'normal_states.txt'}:2" in str(e.value)


def test_write_prompt_dir_writes_a_ready_folder(tmp_path):
    v = Variant("no_normal_state_02", PromptSet(("flawless {}", "clean {}"), ("damaged {}",),
                                                ("a photo of a {}.", "a {}."),
                                                {"bottle": {"object": "flask"}}),
                None, "without normal state 2: 'perfect {}'")
    folder = write_prompt_dir(v, tmp_path / "new" / "chosen")  # parents made
    assert folder == tmp_path / "new" / "chosen"
    head = ("# prompt variant 'no_normal_state_02' (without normal state 2: 'perfect {}'), "
            "written by prompt_study.py\n")
    assert (folder / "normal_states.txt").read_text() == head + "flawless {}\nclean {}\n"
    assert (folder / "abnormal_states.txt").read_text() == head + "damaged {}\n"
    assert (folder / "templates.txt").read_text() == head + "a photo of a {}.\na {}.\n"
    assert (folder / "overrides.json").read_text() == \
        '{\n  "bottle": {\n    "object": "flask"\n  }\n}\n'  # indented by 2, as shipped
    assert PromptSet.load(folder) == v.prompts  # read back as --prompt_dir
    again = Variant("baseline", BASE, None, "the baseline")
    write_prompt_dir(again, folder)  # an existing folder (a rerun): its files replaced
    assert PromptSet.load(folder) == BASE
    with pytest.raises(FrozenInstanceError):  # a variant is a value: its study's record of it
        again.name = "other"


# --- engine.evaluate.prompt_study: settings, rank value, change, ranking ---------------------------------
@pytest.mark.parametrize("rank_by", ["speed", "", "auroc_px+", "auroc_px+speed"])
def test_rank_by_names_metrics_joined_by_plus(rank_by):
    with pytest.raises(ConfigError, match="use metrics of auroc_px, f1_px"):
        StudyConfig(rank_by=rank_by)


def test_one_few_shot_setting():
    assert StudyConfig(rank_by="ap_sp+pro+auroc_px").rank_by == "ap_sp+pro+auroc_px"
    StudyConfig(mode="few_shot", k_shot=[2], seed=[1])
    StudyConfig(mode="zero_shot", k_shot=[1, 2], seed=[1, 2])  # not used zero-shot
    few = "".join(["few", "_shot"])  # built at run time, as the command line gives it
    for k, s in (([1, 2], [1]), ([2], [1, 2])):
        with pytest.raises(ConfigError, match="one --k_shot and one --seed"):
            StudyConfig(mode=few, k_shot=k, seed=s)


def test_the_study_offers_no_flag_it_has_no_use_for(capsys):
    """test.py's --save_predictions, --visualize and --metric_workers do nothing in a study:
    prompt_study.py neither lists nor takes them."""
    import prompt_study

    with pytest.raises(SystemExit):
        prompt_study.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "--rank_by" in text and "--ablate" in text
    for flag in ("--save_predictions", "--visualize", "--metric_workers"):
        assert not re.search(rf"(^|\s|\[){flag}(\s|,|\]|$)", text, re.M), flag  # an option
        with pytest.raises(SystemExit) as e:
            prompt_study.parse_args([flag])
        assert e.value.code == 2


def test_rank_value_is_the_mean_of_the_named_metrics():
    mean = {"auroc_px": 0.9, "pro": 0.6, "auroc_sp": 0.75, "ap_sp": float("nan")}
    assert rank_value(mean, "auroc_px") == pytest.approx(0.9, abs=1e-12)
    assert rank_value(mean, "auroc_px+auroc_sp") == pytest.approx(0.825, abs=1e-12)  # 1.65 / 2
    assert rank_value(mean, "auroc_px+pro+auroc_sp") == pytest.approx(0.75, abs=1e-12)  # 2.25/3
    assert math.isnan(rank_value(mean, "auroc_px+ap_sp"))  # one undefined: no rank
    assert math.isnan(rank_value(mean, "auroc_px+f1_sp"))  # one absent: no rank


# three variants over two categories; means by hand:
#   baseline  auroc_px (0.80 + 0.90) / 2 = 0.85, auroc_sp (0.70 + 0.60) / 2 = 0.65
#   better    auroc_px 0.90,                      auroc_sp 0.70
#   worse     auroc_px 0.80,                      auroc_sp 0.55
TABLES = {
    "baseline": {"a": {"auroc_px": 0.80, "auroc_sp": 0.70, "pro": 0.5},
                 "b": {"auroc_px": 0.90, "auroc_sp": 0.60, "pro": 0.5}},
    "better": {"a": {"auroc_px": 0.85, "auroc_sp": 0.75, "pro": 0.6},
               "b": {"auroc_px": 0.95, "auroc_sp": 0.65, "pro": 0.6}},
    "worse": {"a": {"auroc_px": 0.75, "auroc_sp": 0.60, "pro": 0.4},
              "b": {"auroc_px": 0.85, "auroc_sp": 0.50, "pro": 0.4}},
}


def _study(rank_by: str = "auroc_px+auroc_sp", tables: dict = TABLES,
           prompt_dir: str | None = None) -> Study:
    variants = [Variant(n, BASE, prompt_dir if n == "baseline" else None, n) for n in tables]
    return Study(StudyConfig(rank_by=rank_by), None, variants, [], None,
                 [tables[n] for n in tables])


def test_results_mean_rank_and_signed_change_against_the_baseline():
    rows = {r["name"]: r for r in results(_study())}
    assert rows["better"]["mean"]["auroc_px"] == pytest.approx(0.90, abs=1e-12)
    assert rows["worse"]["mean"]["auroc_sp"] == pytest.approx(0.55, abs=1e-12)
    assert rows["baseline"]["rank"] == pytest.approx(0.75, abs=1e-12)  # (0.85 + 0.65) / 2
    assert rows["better"]["rank"] == pytest.approx(0.80, abs=1e-12)  # (0.90 + 0.70) / 2
    assert rows["worse"]["rank"] == pytest.approx(0.675, abs=1e-12)  # (0.80 + 0.55) / 2
    # points, ours minus the baseline's: better is +, worse is -
    assert rows["better"]["rank_delta"] == pytest.approx(5.0, abs=1e-9)
    assert rows["worse"]["rank_delta"] == pytest.approx(-7.5, abs=1e-9)
    assert rows["baseline"]["rank_delta"] == 0.0
    assert rows["better"]["delta"] == pytest.approx({"auroc_px": 5.0, "auroc_sp": 5.0,
                                                     "pro": 10.0}, abs=1e-9)
    assert rows["worse"]["delta"] == pytest.approx({"auroc_px": -5.0, "auroc_sp": -10.0,
                                                    "pro": -10.0}, abs=1e-9)
    assert rows["better"]["per_category"] is TABLES["better"]
    assert rows["better"]["change"] == "better" and rows["better"]["prompt_dir"] is None


def test_results_carry_the_per_image_scores_metrics_with_their_mean():
    """--image_score both: per variant, the per-image score's image metrics per category and
    their mean (a: 0.8, b: 0.6 -> 0.7), as test.py's metrics.json has them."""
    study = _study()
    study.per_image = [{"a": {"auroc_sp": 0.8, "f1_sp": 0.5, "ap_sp": 0.9},
                        "b": {"auroc_sp": 0.6, "f1_sp": 0.7, "ap_sp": 0.5}}, {}, {}]
    rows = results(study)
    got = rows[0]["per_image_score"]
    assert got["per_category"] is study.per_image[0]
    assert got["mean"] == pytest.approx({"auroc_sp": 0.7, "f1_sp": 0.6, "ap_sp": 0.7}, abs=1e-12)
    assert all("per_image_score" not in r for r in rows[1:])
    assert all("per_image_score" not in r for r in results(_study()))


def test_results_rank_by_one_metric_and_by_three():
    one = {r["name"]: r for r in results(_study("auroc_sp"))}
    assert one["worse"]["rank_delta"] == pytest.approx(-10.0, abs=1e-9)
    three = {r["name"]: r for r in results(_study("auroc_px+auroc_sp+pro"))}
    # baseline (0.85 + 0.65 + 0.5) / 3 = 2.0 / 3; better (0.9 + 0.7 + 0.6) / 3 = 2.2 / 3
    assert three["better"]["rank"] == pytest.approx(2.2 / 3, abs=1e-12)
    assert three["better"]["rank_delta"] == pytest.approx(20 / 3, abs=1e-9)


def test_results_resolve_a_relative_prompt_folder(tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    monkeypatch.chdir(tmp_path)
    rows = results(_study(prompt_dir="mine"))
    assert rows[0]["prompt_dir"] == str(tmp_path / "mine")


def test_ranked_best_first_nan_last_ties_in_study_order():
    rows = [{"name": n, "rank": v} for n, v in (("a", 0.5), ("b", float("nan")), ("c", 0.7),
                                                ("d", 0.5), ("e", 0.9))]
    assert [r["name"] for r in ranked(rows)] == ["e", "c", "a", "d", "b"]


def test_percent_text():
    assert (_pct(0.8125), _pct(None), _pct(float("nan")), _pct(0.0)) == ("81.2", "–", "–", "0.0")


# --- the chart of the study report: green (right) for a better variant, red for a worse ----------
GREEN, RED = (0x1E, 0x7A, 0x3C), (0xB3, 0x26, 0x1E)


def test_chart_bars_are_green_for_better_and_red_for_worse(tmp_path):
    """Rows of TABLES (auroc_sp of 'worse' is worse, ap_sp absent: no bar), ranked: better,
    baseline (no bar), worse. Each bar row holds one colour only."""
    from engine.report.study import write_study_report

    rows = results(_study())
    write_study_report(tmp_path, "study", rows, ranked(rows), "auroc_px+auroc_sp", {})
    png = (tmp_path / "report_files" / "deltas.png").read_bytes()
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    green = (np.abs(a - GREEN) <= 8).all(axis=-1).sum(axis=1) >= 3
    red = (np.abs(a - RED) <= 8).all(axis=-1).sum(axis=1) >= 3
    on = green | red
    runs, start = [], None
    for y, v in enumerate([*on, False]):
        if v and start is None:
            start = y
        elif not v and start is not None:
            runs.append((bool(green[start:y].any()), bool(red[start:y].any())))
            start = None
    assert runs == [(True, False), (False, True)]  # better on top in green, worse in red
