"""prompt_study.py: every variant's metrics equal test.py --prompt_dir with its folder (zero- and
few-shot), each test image goes through the backbone once for the whole study, the automatic
ablations are the ones the prompt files imply, the output files, --write_best, and the prompt
checks that test.py and predict.py share (repeated lines, placeholders, over-long prompts)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import VIT, require, run_test_main
from report_html import parse_page, table_with

import prompt_study
from prompts import PROMPT_DIR, PromptSet

from engine.evaluate import prompt_study as study_code

DS = "mvtec"


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def _variant(root: Path, name: str, normal: list[str], abnormal: list[str],
             templates: list[str], overrides: dict | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "normal_states.txt").write_text("\n".join(normal) + "\n")
    (d / "abnormal_states.txt").write_text("\n".join(abnormal) + "\n")
    (d / "templates.txt").write_text("\n".join(templates) + "\n")
    if overrides is not None:
        (d / "overrides.json").write_text(json.dumps(overrides))
    return d


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("variants")
    templates = _lines(PROMPT_DIR / "templates.txt")
    return [_variant(root, "short", ["flawless {}", "{}"], ["damaged {}", "broken {}"],
                     templates[:4]),
            _variant(root, "worded", ["perfect {}"], ["{} with a crack", "scratched {}"],
                     ["a photo of a {}.", "a close-up photo of the {}."],
                     {"bottle": {"object": "glass bottle", "abnormal": ["chipped {}"]}})]


def _argv(args: list[str]) -> list[str]:
    """The words as a command line gives them: new strings, never the interned literals of
    this file (code comparing them with ``is`` instead of ``==`` would pass otherwise)."""
    return [a[:1] + a[1:] for a in map(str, args)]


def _study(tmp_path, *extra: str, mode: str = "zero_shot", name: str = "study",
           report: bool = False) -> dict:
    save = tmp_path / name
    args = VIT.args(DS, save, mode, *extra, report=report)
    assert prompt_study.main(_argv(args)) == 0
    return json.loads((save / "study.json").read_text())


def _test_py(tmp_path, name: str, mode: str, *extra: str) -> dict:
    save = tmp_path / name
    assert run_test_main(VIT.args(DS, save, mode, *extra)) == 0
    return json.loads((save / "metrics.json").read_text())


def _same(study_row: dict, metrics: dict) -> None:
    for cat, m in metrics["per_category"].items():
        assert set(study_row["per_category"][cat]) == set(m), cat  # e.g. the MVTec AU-PRO
        for k, v in study_row["per_category"][cat].items():
            if v is None or metrics["per_category"][cat][k] is None:
                assert v is None and metrics["per_category"][cat][k] is None, (cat, k)
            else:
                assert v == pytest.approx(m[k], abs=1e-4), (study_row["name"], cat, k)
    for k, v in metrics["mean"].items():
        assert study_row["mean"][k] == pytest.approx(v, abs=1e-4, nan_ok=True), k


@pytest.mark.parametrize("mode", ["zero_shot", "few_shot"])
def test_each_variant_equals_test_py_with_its_folder(tmp_path, folders, count_backbone, mode):
    extra = ["--k_shot", "1", "--seed", "3"] if mode == "few_shot" else []
    if mode == "few_shot":
        require(VIT.refs(DS))
    folders = folders if mode == "zero_shot" else folders[1:]  # few-shot: one is enough
    study = _study(tmp_path, "--variants", *map(str, folders), *extra, mode=mode)
    seen = count_backbone["n"]
    names = [v["name"] for v in study["variants"]]
    assert names == ["baseline", *(f.name for f in folders)]
    n_test = len(json.loads((VIT.data(DS) / "meta.json").read_text())["test"]["bottle"]) + len(
        json.loads((VIT.data(DS) / "meta.json").read_text())["test"].get("grid", []))
    refs = 2 if mode == "few_shot" else 0  # k = 1 per category
    assert seen == study["settings"]["backbone_images"] == n_test + refs  # once per image
    if mode == "zero_shot":  # few-shot: the folder's variant alone (the same code path)
        _same(study["variants"][0], _test_py(tmp_path, "base", mode, *extra))
    for row, folder in zip(study["variants"][1:], folders):
        assert row["prompt_dir"] == str(folder.resolve())
        _same(row, _test_py(tmp_path, folder.name, mode, "--prompt_dir", str(folder), *extra))
    assert "overrides differ" in study["variants"][-1]["change"]
    assert (study["settings"]["k_shot"], study["settings"]["seed"]) == (
        (1, 3) if mode == "few_shot" else (None, None))


@pytest.mark.parametrize("image_score", ["per_image", "both"])
def test_per_image_score_equals_test_py_with_each_variants_own_normal_level(tmp_path,
                                                                            image_score):
    """Few-shot with the per-image score: its normal level mu depends on the text features, so
    each variant has its own. Every variant's metrics (and, with both, the per-image score's
    image metrics beside the released ones) equal test.py's with that variant's folder; a
    variant made by an ablation equals test.py with the baseline's lines less that one.

    The folder "same" has one state, the same for normal and abnormal: its text score is 0.5
    for every image and its zero-shot maps are flat (0.5 per stage), so with k = 1 its mu is
    2.0 (4 stages) and its image ranking is that of the map maxima (2.4 to 3.0 on bottle): the
    baseline's mu (3.3 there) would clip all of them to 0 and tie every image."""
    require(VIT.refs(DS))
    extra = ["--k_shot", "1", "--seed", "1", "--image_score", image_score, "--categories",
             "bottle", "--no_mvtec_aupro"]
    normal = _lines(PROMPT_DIR / "normal_states.txt")
    dropped = _variant(tmp_path, "no_normal_state_01", normal[1:],
                       _lines(PROMPT_DIR / "abnormal_states.txt"),
                       _lines(PROMPT_DIR / "templates.txt"))
    same = _variant(tmp_path / "v", "same", ["{}"], ["{}"], ["a photo of a {}."])
    study = _study(tmp_path, "--variants", str(same), "--ablate", "states", *extra,
                   mode="few_shot")
    assert study["settings"]["image_score"] == image_score
    assert study["settings"]["backbone_images"] == 6 + 1  # bottle's test images, 1 reference
    assert not (tmp_path / "study" / "report.html").exists()  # --no_report
    assert (study["settings"]["k_shot"], study["settings"]["seed"]) == (1, 1)
    rows = {r["name"]: r for r in study["variants"]}
    for name, prompt_dir in (("baseline", None), ("same", same), ("no_normal_state_01", dropped)):
        flags = [*extra, *(["--prompt_dir", str(prompt_dir)] if prompt_dir else [])]
        want = _test_py(tmp_path, f"t_{name}", "few_shot", *flags)
        _same(rows[name], want)
        if image_score == "both":
            got = rows[name]["per_image_score"]
            for cat, m in want["per_image_score"]["per_category"].items():
                assert got["per_category"][cat] == pytest.approx(m, abs=1e-4), (name, cat)
            assert got["mean"] == pytest.approx(want["per_image_score"]["mean"], abs=1e-4)
        else:
            assert "per_image_score" not in rows[name]


def test_rank_by_several_metrics_ranks_by_their_mean_and_signs_each_change(tmp_path, folders,
                                                                           monkeypatch):
    """--rank_by auroc_px+ap_sp+f1_px: the rank value is the mean of the three mean-row
    metrics (recomputed here from study.json); the change against the baseline, ours minus
    the baseline's in points, is signed alike in study.csv, study.md and report.html: + for a
    variant ranked above the baseline, - for one below."""
    keys = ("auroc_px", "ap_sp", "f1_px")
    same = _variant(tmp_path / "v", "same", ["{}"], ["{}"], ["a photo of a {}."])
    best = tmp_path / "best"
    # the study's clock, read at its start and its end: 3.1234567 s, recorded to the ms
    clock = iter([1000.0, 1003.1234567])
    monkeypatch.setattr(study_code, "time", SimpleNamespace(time=lambda: next(clock)))
    study = _study(tmp_path, "--variants", *map(str, folders), str(same), "--rank_by",
                   "+".join(keys), "--no_mvtec_aupro", "--categories", "bottle", "--write_best",
                   str(best), report=True)
    value = {r["name"]: sum(r["mean"][k] for k in keys) / 3 for r in study["variants"]}
    assert study["ranking"] == sorted(value, key=lambda n: -value[n])
    assert study["settings"]["rank_by"] == "auroc_px+ap_sp+f1_px"
    delta = {n: 100 * (v - value["baseline"]) for n, v in value.items()}
    assert min(delta.values()) < -0.1 and max(delta.values()) > 0.1  # both signs occur
    winner = max(value, key=value.get)
    chosen = {f.name: f for f in [*folders, same]}.get(winner)  # None: the shipped prompts
    assert PromptSet.load(best) == PromptSet.load(chosen)
    save = tmp_path / "study"
    table = list(csv.DictReader(open(save / "study.csv")))
    assert [r["name"] for r in table] == study["ranking"]
    md = {ln.split(" | ")[1]: ln.split(" | ") for ln in (save / "study.md").read_text()
          .splitlines() if ln.startswith("| ") and not ln.startswith("| rank")}
    (html,) = table_with(parse_page(save / "report.html"), "study")
    shown = {r[1]: r[html.head[0].index("vs baseline")] for r in html.body}
    for r in table:
        n = r["name"]
        assert float(r[f"{'+'.join(keys)} (mean)"]) == pytest.approx(100 * value[n], abs=0.051)
        assert float(r["vs baseline (points)"]) == pytest.approx(delta[n], abs=0.051)
        if abs(delta[n]) >= 0.05:  # printed to one decimal: the sign shows
            sign = "+" if delta[n] > 0 else "-"
            assert r["vs baseline (points)"][0] == md[n][4][0] == sign, (n, delta[n])
            assert shown[n][0] == sign, (n, shown[n])
    assert [r["rank"] for r in table] == [str(i) for i in range(1, len(table) + 1)]
    text = (save / "study.md").read_text()
    assert text.startswith("# Prompt study: mvtec zero_shot, ranked by auroc_px+ap_sp+f1_px\n")
    assert "| rank | name | change | auroc_px+ap_sp+f1_px (mean) | vs baseline (points) | " \
           "auroc_px |" in text and "\n|" + "---|" * 12 + "\n" in text
    facts = {r[0]: r[1] for r in next(t for t in parse_page(save / "report.html").tables
                                      if "info" in t.classes).body}
    assert facts["baseline prompts"] == "the shipped prompts" and "heatmaps" not in facts
    assert (facts["ranked by"], facts["variants"]) == ("auroc_px+ap_sp+f1_px", "4")
    settings = study["settings"]
    assert settings.pop("seconds") == 3.123
    assert settings == {"mode": "zero_shot", "dataset": "mvtec", "data_path":
                        str(VIT.data(DS).resolve()), "rank_by": "auroc_px+ap_sp+f1_px",
                        "image_score": "released", "categories": ["bottle"], "k_shot": None,
                        "seed": None, "backbone_images": 6}
    base = next(r for r in study["variants"] if r["name"] == "baseline")["per_category"]["bottle"]
    assert (f"bottle: baseline auroc_px {100 * base['auroc_px']:.1f}, auroc_sp "
            f"{100 * base['auroc_sp']:.1f}; 4 variants scored") in (save / "log.txt").read_text()
    assert f"; best: {winner}. Results in " in (save / "log.txt").read_text()
    assert "images through the backbone, 3.1 s; best: " in (save / "log.txt").read_text()
    log = (save / "log.txt").read_text().splitlines()  # the table, from its header row on
    at = next(i for i, line in enumerate(log) if line.startswith("| rank | name | change |"))
    assert log[at - 1].strip() and log[at + 1].startswith("|---|")


def test_ablations_outputs_and_write_best(tmp_path):
    normal, abnormal = (_lines(PROMPT_DIR / f) for f in ("normal_states.txt",
                                                           "abnormal_states.txt"))
    templates = _lines(PROMPT_DIR / "templates.txt")
    best = tmp_path / "best"
    study = _study(tmp_path, "--ablate", "states", "templates", "--write_best", str(best),
                   "--rank_by", "auroc_px", "--no_mvtec_aupro", "--categories", "bottle",
                   report=True)
    rows = study["variants"]
    assert len(rows) == 1 + len(normal) + len(abnormal) + len(templates)
    for i, line in enumerate(normal):
        row = next(r for r in rows if r["name"] == f"no_normal_state_{i + 1:02d}")
        assert repr(line) in row["change"]
    for i, line in enumerate(templates):
        assert any(r["name"] == f"no_template_{i + 1:02d}" and repr(line) in r["change"]
                   for r in rows)
    ranked = [r for r in study["ranking"]]
    by_name = {r["name"]: r for r in rows}
    values = [by_name[n]["mean"]["auroc_px"] for n in ranked]
    assert values == sorted(values, reverse=True)
    table = list(csv.DictReader(open(tmp_path / "study" / "study.csv")))
    assert [r["name"] for r in table] == ranked and len(table) == len(rows)
    base_px = by_name["baseline"]["mean"]["auroc_px"]
    for r in table:
        want = 100 * (by_name[r["name"]]["mean"]["auroc_px"] - base_px)
        assert float(r["vs baseline (points)"]) == pytest.approx(want, abs=0.051)
    assert "| rank | name |" in (tmp_path / "study" / "study.md").read_text()
    html = (tmp_path / "study" / "report.html").read_text()
    assert "report_files/deltas.png" in html and (tmp_path / "study" / "report_files" /
                                                   "deltas.png").is_file()
    written = PromptSet.load(best)  # a ready --prompt_dir folder: the winner's lines
    win = ranked[0]
    want = PromptSet.load(None)
    if win.startswith("no_"):
        kind, index = win[3:].rsplit("_", 1)
        attr = {"normal_state": "normal_states", "abnormal_state": "abnormal_states",
                "template": "templates"}[kind]
        lines = list(getattr(want, attr))
        del lines[int(index) - 1]
        assert getattr(written, attr) == tuple(lines)
    else:
        assert written == want


def test_bad_rank_by_and_several_few_shot_settings_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        prompt_study.main(VIT.args(DS, tmp_path / "x", "zero_shot", "--rank_by", "speed"))
    assert "--rank_by 'speed'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prompt_study.main(_argv(VIT.args(DS, tmp_path / "x", "few_shot", "--k_shot", "1",
                                          "2")))
    assert "one --k_shot" in capsys.readouterr().err


@pytest.mark.parametrize("lines, words", [
    (["{}", "perfect {}", "{}"], "repeats line 1"),
    (["{}", "perfect"], "exactly one '{}'"),
    (["{} " + "very " * 80 + "clean"], "tokens long, more than the text encoder's context of 77")])
def test_prompt_files_are_checked_for_every_entry_point(tmp_path, capsys, lines, words):
    bad = _variant(tmp_path, "bad", lines, ["damaged {}"], ["a photo of a {}."])
    code = run_test_main(VIT.args(DS, tmp_path / "t", "zero_shot", "--prompt_dir", str(bad)))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    if "tokens" not in words:
        assert f"{bad / 'normal_states.txt'}:" in err[0]  # file and line
    code = prompt_study.main(VIT.args(DS, tmp_path / "s", "zero_shot", "--variants", str(bad)))
    assert code == 2 and words in capsys.readouterr().err
