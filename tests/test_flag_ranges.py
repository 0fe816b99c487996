"""A numeric flag outside its range, or no number at all, is one line naming the flag and its
valid range (no usage block), for every numeric flag of every entry point. The expected lines
are written out by hand here; the table must list every numeric flag, so a new one without a
stated range fails."""
from __future__ import annotations

import dataclasses
import typing

import pytest
from conftest import load_repo_test_module

import export
import predict
import prompt_study
import train

SEEDS = "a whole number from 0 to 4294967295"
STAGES = "stage numbers from 1 to the backbone's depth (1-based: 24 is ViT-L-14-336's last)"
PROBABILITY = "a probability from 0 to 1 (0.2 for 20%)"
MODEL = [("--image_size", "0", "a whole number >= 1", "0"),
         ("--batch_size", "0", "a whole number >= 1", "0"),
         ("--num_workers", "-1", "a whole number >= 0", "-1"),
         ("--features_list", "0", STAGES, "0")]
# entry point -> (flags it needs, [(flag, bad value, range in words, value as echoed)])
CASES = {
    "train.py": ([], MODEL + [
        ("--aug_rate", "1.5", PROBABILITY, "1.5"),
        ("--epoch", "0", "a whole number >= 1", "0"),
        ("--learning_rate", "-0.001", "a finite number >= 0.0", "-0.001"),
        ("--print_freq", "0", "a whole number >= 1", "0"),
        ("--save_freq", "0", "a whole number >= 1", "0"),
        ("--seed", "-1", SEEDS, "-1"),
        ("--synthesize_anomalies", "2", PROBABILITY, "2.0")]),
    "test.py": (["--checkpoint_path", "w.pth"], MODEL + [
        ("--few_shot_features", "0", STAGES, "0"),
        ("--k_shot", "0", "a whole number >= 1", "0"),
        ("--seed", "4294967296", SEEDS, "4294967296"),
        ("--metric_workers", "-1", "a whole number >= 0", "-1"),
        ("--heatmap_max_side", "63", "a whole number >= 64", "63")]),
    "predict.py": (["--image_dir", "imgs", "--object_name", "screw", "--checkpoint_path",
                    "w.pth"], MODEL + [
        ("--few_shot_features", "0", STAGES, "0"),
        ("--image_threshold", "nan", "a finite number", "nan"),
        ("--pixel_threshold", "inf", "a finite number", "inf"),
        ("--target_fpr", "5", "a fraction above 0 and below 1 (0.01 for 1%)", "5.0"),
        ("--min_region_area", "-1", "a whole number >= 0", "-1"),
        ("--heatmap_max_side", "10", "a whole number >= 64", "10"),
        ("--report_max_images", "0", "a whole number >= 1", "0")]),
    "export.py": (["--output", "g.onnx", "--object_name", "screw", "--checkpoint_path",
                   "w.pth"], MODEL + [
        ("--few_shot_features", "0", STAGES, "0"),
        ("--image_threshold", "-inf", "a finite number", "-inf"),
        ("--pixel_threshold", "nan", "a finite number", "nan"),
        ("--opset", "12", "a whole number from 13 to 23", "12")]),
    "prompt_study.py": (["--checkpoint_path", "w.pth"], MODEL + [
        ("--few_shot_features", "0", STAGES, "0"),
        ("--k_shot", "0", "a whole number >= 1", "0"),
        ("--seed", "-2", SEEDS, "-2"),
        ("--heatmap_max_side", "1", "a whole number >= 64", "1")]),
}


def _parse(entry: str):
    mod = {"train.py": train, "predict.py": predict, "export.py": export,
           "prompt_study.py": prompt_study}.get(entry) or load_repo_test_module()
    return mod.parse_args


def _one_line(capsys, entry: str, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        _parse(entry)(argv)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert e.value.code == 2 and len(lines) == 1, err  # no usage block
    return lines[0]


@pytest.mark.parametrize("entry,flag,bad,words,echo", [
    (entry, *case) for entry, (_, cases) in CASES.items() for case in cases])
def test_a_value_out_of_range_is_one_line_stating_the_range(capsys, entry, flag, bad, words,
                                                            echo):
    typed = [f"{flag}={bad}"] if bad == "-inf" else [flag, bad]  # "-inf" alone reads as a flag
    line = _one_line(capsys, entry, CASES[entry][0] + typed)
    assert line == f"{entry}: error: {flag} takes {words}, got {echo}"


@pytest.mark.parametrize("entry,flag,words", [
    (entry, flag, words) for entry, (_, cases) in CASES.items()
    for flag, _, words, _ in cases if flag in ("--target_fpr", "--batch_size", "--opset")])
def test_text_that_is_no_number_is_one_line_stating_the_range(capsys, entry, flag, words):
    line = _one_line(capsys, entry, CASES[entry][0] + [flag, "1%"])
    assert line.startswith(f"{entry}: error: argument {flag}")
    assert f"'1%' is not {words}" in line


@pytest.mark.parametrize("entry", list(CASES))
def test_every_numeric_flag_is_in_the_table(entry):
    cls = typing.get_type_hints(_parse(entry))["return"]
    hints = typing.get_type_hints(cls)
    numeric = {f"--{f.name}" for f in dataclasses.fields(cls) if f.metadata.get("cli", True)
               and any(t in str(hints[f.name]) for t in ("int", "float"))}
    assert numeric == {flag for flag, *_ in CASES[entry][1]}


def test_the_ends_of_a_range_are_valid(capsys):
    cfg = predict.parse_args(CASES["predict.py"][0] + ["--target_fpr", "0.999999",
                                                       "--min_region_area", "0"])
    assert (cfg.target_fpr, cfg.min_region_area) == (0.999999, 0)
    cfg = train.parse_args(["--seed", "4294967295", "--aug_rate", "1", "--learning_rate", "0"])
    assert (cfg.seed, cfg.aug_rate, cfg.learning_rate) == (4294967295, 1.0, 0.0)
