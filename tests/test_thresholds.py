"""Thresholds in predict.py: which file and flags win, which files are refused (another mode,
model, size, stages or few-shot score), and the >= rule.

An image whose score equals the image threshold is anomalous (``score >= threshold``) in
scores.csv, scores.json and the report, where it sits above the threshold's divider row.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_predict import BOTTLE, read_csv, run

from errors import ConfigError

from engine.config import PredictConfig
from engine.core.thresholds import definition, effective_precision, resolve_thresholds


def _run(mode: str = "zero_shot", score: str = "per_image", model: str = "tiny-vit",
         size: int = 84, stages=(2, 4), k: int | None = 2) -> dict:
    return definition(mode, score, model, size, stages, stages, k)


def _file(tmp_path: Path, mode: str | None, score: str = "released", both: bool = False,
          **run) -> Path:
    """A thresholds.json as test.py writes it: the definition of a run, then the table."""
    path = tmp_path / f"thr_{mode}_{score}_{both}_{len(run)}.json"
    data = {"per_category": {"bottle": {"image": 0.7, "pixel": 1.5}}}
    if both:
        data["per_category"]["bottle"]["image_per_image"] = 0.4
    if mode:
        data.update(_run(mode, score, **run))
    path.write_text(json.dumps(data))
    return path


def _resolve(path: Path | None, mode: str = "zero_shot", score: str = "per_image",
             **flags) -> tuple[dict, list[str]]:
    cfg = PredictConfig(image_dir="x", object_name="bottle", checkpoint_path="x.pth",
                        thresholds=str(path) if path else None, **flags)
    warned: list[str] = []
    return resolve_thresholds(cfg, _run(mode, score),
                              lambda where, why: warned.append(why)), warned


def test_a_file_of_another_mode_is_refused_either_way(tmp_path):
    for fitted, mode in (("few_shot", "zero_shot"), ("zero_shot", "few_shot")):
        with pytest.raises(ConfigError, match=f"fitted on a {fitted} run; this run is {mode}"):
            _resolve(_file(tmp_path, fitted, "per_image"), mode)
    for mode in ("zero_shot", "few_shot"):
        thr, warned = _resolve(_file(tmp_path, mode, "per_image"), mode)
        assert (thr["image"], thr["pixel"], warned) == (0.7, 1.5, [])


@pytest.mark.parametrize("other", [{"model": "ViT-L-14-336"}, {"size": 518},
                                   {"stages": (6, 12)}])
def test_a_file_of_another_model_size_or_stages_is_refused(tmp_path, other):
    with pytest.raises(ConfigError) as err:
        _resolve(_file(tmp_path, "zero_shot", **other))
    line = str(err.value)
    assert "\n" not in line and "tiny-vit at 84 px, stages 2 4" in line  # this run
    theirs = other.get("model", "tiny-vit"), other.get("size", 84), other.get("stages", (2, 4))
    assert f"{theirs[0]} at {theirs[1]} px, stages {' '.join(map(str, theirs[2]))}" in line


def test_few_shot_thresholds_of_the_other_score_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="fitted on the released few-shot score; this run uses "
                                          "per_image: rerun test.py with --image_score "
                                          "per_image .or both. or pass --image_score released"):
        _resolve(_file(tmp_path, "few_shot", "released"), "few_shot", "per_image")
    with pytest.raises(ConfigError, match="fitted on the per_image few-shot score; this run "
                                          "uses released"):
        _resolve(_file(tmp_path, "few_shot", "per_image"), "few_shot", "released")


def test_both_scores_in_one_file_serve_either_run(tmp_path):
    """test.py --image_score both: 'image' is the released score's, 'image_per_image' the other."""
    path = _file(tmp_path, "few_shot", "released", both=True)
    assert _resolve(path, "few_shot", "per_image")[0]["image"] == 0.4
    assert _resolve(path, "few_shot", "released")[0]["image"] == 0.7


def test_another_k_and_an_older_file_only_warn(tmp_path):
    thr, warned = _resolve(_file(tmp_path, "few_shot", "per_image", k=5), "few_shot")
    assert thr["image"] == 0.7 and len(warned) == 1 and "5 reference images" in warned[0]
    thr, warned = _resolve(_file(tmp_path, None), "few_shot")
    assert thr["image"] == 0.7 and len(warned) == 1 and "cannot be checked" in warned[0]


def test_flags_override_the_file(tmp_path):
    path = _file(tmp_path, "zero_shot")
    thr, _ = _resolve(path, image_threshold=0.25)
    assert (thr["image"], thr["pixel"]) == (0.25, 1.5)
    thr, _ = _resolve(path, pixel_threshold=3.0)
    assert (thr["image"], thr["pixel"]) == (0.7, 3.0)
    thr, _ = _resolve(None, image_threshold=0.5, pixel_threshold=2.5)
    assert (thr["image"], thr["pixel"], thr["source"]) == (0.5, 2.5, "command line")


def test_a_score_equal_to_the_threshold_is_anomalous(capsys, tmp_path):
    first = tmp_path / "first"
    code, _, err = run(capsys, BOTTLE / "test", first, "--recursive", "--no_heatmaps",
                       "--no_report")
    assert code == 0, err
    images = json.loads((first / "scores.json").read_text())["images"]
    scores = sorted(r["score"] for r in images)
    tie = scores[len(scores) // 2]
    tied = [r["path"] for r in images if r["score"] == tie]
    save = tmp_path / "second"
    code, _, err = run(capsys, BOTTLE / "test", save, "--recursive", "--no_heatmaps",
                       "--image_threshold", repr(tie))
    assert code == 0, err
    rows = read_csv(save / "scores.csv")
    result = json.loads((save / "scores.json").read_text())["images"]
    for row, rec in zip(rows, result):
        assert row["path"] == rec["path"]
        assert rec["anomalous"] == (rec["score"] >= tie)
        assert int(row["anomalous"]) == int(rec["anomalous"])
    assert all(r["anomalous"] for r in result if r["path"] in tied)
    assert sum(r["anomalous"] for r in result) == sum(s >= tie for s in scores)
    html = (save / "report.html").read_text()
    divider = html.index('<tr class="divider"')
    for r in result:
        at = html.index(f"<code>{r['path']}</code>")
        assert (at < divider) == r["anomalous"], r["path"]


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_a_non_finite_file_threshold_is_not_used(tmp_path, bad):
    path = tmp_path / "thr.json"
    path.write_text('{"per_category": {"bottle": {"image": %s, "pixel": 1.0}}}' % (
        "NaN" if bad == "nan" else "Infinity"))
    thr, warned = _resolve(path)
    assert thr["image"] is None and thr["pixel"] == 1.0
    assert any("image" in w for w in warned)


@pytest.mark.parametrize("flag", ["image_threshold", "pixel_threshold"])
def test_a_flag_alone_says_it_came_from_the_command_line(flag):
    thr, _ = _resolve(None, **{flag: 0.5})
    assert thr[flag.split("_")[0]] == 0.5 and thr["source"] == "command line"


def test_a_missing_category_names_the_ones_there(tmp_path, capsys):
    from errors import DatasetError

    with pytest.raises(DatasetError, match=r"has no thresholds for 'bottle' \(it has: screw, "
                                           r"pcb1\); pass --threshold_category"):
        path = tmp_path / "thr.json"
        path.write_text(json.dumps({"per_category": {"screw": {"image": 1}, "pcb1": {}}}))
        _resolve(path)


@pytest.mark.parametrize("value", ['"high"', '[0.5]'])
def test_a_threshold_that_is_not_a_number_is_a_clear_error(tmp_path, value):
    from errors import DatasetError

    path = tmp_path / "thr.json"
    path.write_text('{"per_category": {"bottle": {"image": %s, "pixel": 1.0}}}' % value)
    with pytest.raises(DatasetError, match="image threshold of 'bottle' is not a number"):
        _resolve(path)


def test_another_precision_only_warns_either_way(tmp_path):
    """bf16 moves scores by about 5e-4: a file fitted at one precision scoring a run at the
    other is used, with a warning naming both; the same precision, or a file that records none,
    says nothing."""
    for fitted, mine in (("bf16", "fp32"), ("fp32", "bf16"), ("fp16", "fp32")):
        path = tmp_path / f"thr_{fitted}.json"
        path.write_text(json.dumps({**_run(), "precision": fitted,
                                    "per_category": {"bottle": {"image": 0.7, "pixel": 1.5}}}))
        cfg = PredictConfig(image_dir="x", object_name="bottle", checkpoint_path="x.pth",
                            thresholds=str(path))
        warned: list[str] = []
        thr = resolve_thresholds(cfg, {**_run(), "precision": mine},
                                 lambda where, why: warned.append(why))
        assert thr["image"] == 0.7 and thr["precision"] == fitted
        assert len(warned) == 1 and f"fitted at {fitted}; this run computes at {mine}" in \
            warned[0], warned
        warned.clear()
        resolve_thresholds(cfg, {**_run(), "precision": fitted},
                           lambda where, why: warned.append(why))
        assert warned == []
    old = _file(tmp_path, "zero_shot")  # a definition without "precision" (an older file)
    data = json.loads(old.read_text())
    del data["precision"]
    old.write_text(json.dumps(data))
    thr, warned = _resolve(old)
    assert warned == [] and "precision" not in thr


@pytest.mark.parametrize("asked, device, onnx, computed", [
    ("auto", "cpu", False, "fp32"), ("auto", "cuda", False, "fp16"),
    ("auto", "cuda", True, "fp32"), ("fp32", "cuda", False, "fp32"),
    ("bf16", "cpu", False, "bf16"), ("bf16", "cpu", True, "bf16")])
def test_the_precision_a_run_records(asked, device, onnx, computed):
    assert effective_precision(asked, device, onnx) == computed
    assert definition("zero_shot", "per_image", "m", 84, [2], [2], None,
                      effective_precision(asked, device, onnx))["precision"] == computed


def test_calibrated_thresholds_record_fp32_and_a_bf16_run_warns(capsys, tmp_path):
    """predict.py end to end: thresholds calibrated on the CPU record fp32; scoring with them
    at --precision bf16 warns (and scores); at fp32 it does not."""
    fit = tmp_path / "fit"
    code, _, err = run(capsys, BOTTLE / "test", fit, "--recursive", "--no_heatmaps", "--no_report",
                       "--calibration_dir", str(BOTTLE / "train" / "good"))
    assert code == 0, err
    saved = json.loads((fit / "thresholds.json").read_text())
    assert saved["precision"] == "fp32"
    for precision, warns in (("bf16", True), ("fp32", False)):
        code, out, err = run(capsys, BOTTLE / "test", tmp_path / precision, "--recursive",
                             "--no_heatmaps", "--no_report", "--precision", precision,
                             "--thresholds", str(fit / "thresholds.json"))
        assert code == 0, err
        assert ("fitted at fp32; this run computes at bf16" in out + err) == warns, out + err


def test_another_k_warns_in_both_directions_and_the_same_k_is_silent(tmp_path):
    """The run has k = 2 (``_run``): a file of 5 and a file of 1 reference each warn, naming
    both numbers; a file of 2 says nothing."""
    for k in (5, 1):
        thr, warned = _resolve(_file(tmp_path, "few_shot", "per_image", k=k), "few_shot")
        assert thr["image"] == 0.7 and warned == [
            f"fitted with {k} reference images per category; this run has 2: the map's normal "
            "level differs a little"]
    thr, warned = _resolve(_file(tmp_path, "few_shot", "per_image", k=2), "few_shot")
    assert (thr["image"], warned) == (0.7, [])


def _few_shot_file(tmp_path: Path, stages, memory) -> Path:
    path = tmp_path / f"thr_{'_'.join(map(str, stages))}-{'_'.join(map(str, memory))}.json"
    path.write_text(json.dumps({**definition("few_shot", "per_image", "tiny-vit", 84, stages,
                                             memory, 2),
                                "per_category": {"bottle": {"image": 0.7, "pixel": 1.5}}}))
    return path


def test_a_file_of_other_memory_bank_stages_is_refused_naming_both(tmp_path):
    """few_shot_features is part of the definition: the memory-bank distances of other stages
    are another map (another range, 0..#stages + 2 #memory stages)."""
    with pytest.raises(ConfigError) as err:
        _resolve(_few_shot_file(tmp_path, (2, 4), (4,)), "few_shot")
    line = str(err.value)
    assert "\n" not in line
    assert "was fitted for tiny-vit at 84 px, stages 2 4, memory-bank stages 4; this run uses " \
           "tiny-vit at 84 px, stages 2 4, memory-bank stages 2 4: " in line, line
    thr, warned = _resolve(_few_shot_file(tmp_path, (2, 4), (2, 4)), "few_shot")
    assert (thr["image"], thr["pixel"], warned) == (0.7, 1.5, [])


def test_test_py_thresholds_of_other_memory_stages_serve_predict_with_the_same_flags(
        capsys, tmp_path):
    """test.py few-shot with --features_list 2 4 6 8 --few_shot_features 4 8 writes a file that
    predict.py takes with the same flags (its numbers, unchanged) and refuses with the default
    memory stages (the --features_list), naming both in one error line."""
    from conftest import run_test_main
    from test_predict import GOLDEN, MODEL

    stages = ["--features_list", "2", "4", "6", "8", "--few_shot_features", "4", "8"]
    flags = [*MODEL[:MODEL.index("--features_list")], *MODEL[MODEL.index("--device"):]]
    ev = tmp_path / "eval"
    assert run_test_main(["--mode", "few_shot", "--dataset", "mvtec", "--data_path",
                          str(GOLDEN / "data" / "mvtec"), "--save_path", str(ev), "--categories",
                          "bottle", "--k_shot", "2", "--seed", "1", "--image_score", "per_image",
                          "--no_mvtec_aupro", "--no_report", *flags, *stages]) == 0
    fitted = json.loads((ev / "thresholds.json").read_text())
    assert (fitted["features_list"], fitted["few_shot_features"], fitted["k_shot"]) == \
        ([2, 4, 6, 8], [4, 8], 2)
    common = ["--image_dir", str(BOTTLE / "test"), "--recursive", "--object_name", "bottle",
              "--reference_dir", str(BOTTLE / "train" / "good"), "--no_heatmaps", "--no_report",
              "--thresholds", str(ev / "thresholds.json"), *flags]
    import predict

    assert predict.main([*common, "--save_path", str(tmp_path / "same"), *stages]) == 0
    used = json.loads((tmp_path / "same" / "scores.json").read_text())["thresholds"]
    entry = fitted["per_category"]["bottle"]
    assert (used["image"], used["pixel"]) == (entry["image"], entry["pixel"])
    capsys.readouterr()
    assert predict.main([*common, "--save_path", str(tmp_path / "other"), *stages[:5]]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "stages 2 4 6 8, memory-bank stages 4 8; this run uses" in err[0] \
        and "stages 2 4 6 8, memory-bank stages 2 4 6 8:" in err[0], err
    assert not (tmp_path / "other" / "scores.json").exists()


def test_a_definition_by_hand():
    """Zero-shot: the image score is the text score, no memory stages, no k; few-shot keeps
    them (k None when unknown)."""
    from engine.core.thresholds import model_name

    assert definition("zero_shot", "per_image", "m", 84.0, (2.0, 4), (2, 4), 3, "bf16") == {
        "mode": "zero_shot", "image_score": "text", "model": "m", "image_size": 84,
        "features_list": [2, 4], "few_shot_features": [], "k_shot": None, "precision": "bf16"}
    assert definition("few_shot", "released", "m", 84, [2, 4], [4.0], 3) == {
        "mode": "few_shot", "image_score": "released", "model": "m", "image_size": 84,
        "features_list": [2, 4], "few_shot_features": [4], "k_shot": 3, "precision": "fp32"}
    assert definition("few_shot", "per_image", "m", 84, [2], [2], None)["k_shot"] is None
    assert model_name("ViT-L-14-336", None) == "ViT-L-14-336"
    assert model_name("ViT-L-14-336", "configs/tiny-vit.json") == "tiny-vit"
    with pytest.raises(ConfigError, match=r"unknown precision 'fp64' \(use one of auto, fp32, "
                                          r"fp16, bf16\)"):
        effective_precision("fp64", "cpu")


def test_the_refusals_name_the_fix(tmp_path):
    """Another mode: the fix says to score with or without --reference_dir; a few-shot file
    without image_score is the released score's; an export (score_fixed) is not told to pass
    --image_score."""
    with pytest.raises(ConfigError) as err:
        _resolve(_file(tmp_path, "few_shot", "per_image"), "zero_shot")
    assert str(err.value).endswith("this run is zero_shot: fit thresholds for zero_shot "
                                   "(test.py --mode zero_shot, or predict.py --calibration_dir) "
                                   "or score with --reference_dir")
    with pytest.raises(ConfigError) as err:
        _resolve(_file(tmp_path, "zero_shot"), "few_shot")
    assert str(err.value).endswith("or score without --reference_dir")
    path = _file(tmp_path, "few_shot", "per_image")
    data = json.loads(path.read_text())
    del data["image_score"]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="fitted on the released few-shot score; this run uses "
                                          "per_image: .* or pass --image_score released$"):
        _resolve(path, "few_shot", "per_image")
    assert _resolve(path, "few_shot", "released")[0]["image"] == 0.7
    cfg = PredictConfig(image_dir="x", object_name="bottle", checkpoint_path="x.pth",
                        thresholds=str(path))
    with pytest.raises(ConfigError) as err:
        resolve_thresholds(cfg, {**_run("few_shot", "per_image"), "score_fixed": True},
                           lambda where, why: None)
    assert str(err.value).endswith("rerun test.py with --image_score per_image (or both)")


def test_what_a_file_gives_besides_its_numbers(tmp_path):
    """--threshold_category picks another entry; a missing number warns and is not used; a
    calibrated file's block and precision travel with the thresholds; a file without a table
    is refused."""
    from errors import DatasetError

    path = tmp_path / "thr.json"
    block = {"n_images": 5, "target_fpr": 0.2}
    path.write_text(json.dumps({**_run(), "source": "calibration", "calibration": block,
                                "per_category": {"screw": {"image": 0.3},
                                                 "bottle": {"image": 0.7, "pixel": 1.5}}}))
    thr, warned = _resolve(path, threshold_category="screw")
    assert (thr["image"], thr["pixel"], thr["calibration"], thr["precision"]) == (
        0.3, None, block, "fp32")
    assert thr["source"] == f"{path.resolve()} [screw]"
    assert warned == ["no finite pixel threshold for 'screw'; not used"]
    path.write_text(json.dumps({**_run(), "calibration": block,
                                "per_category": {"bottle": "0.7"}}))
    thr, warned = _resolve(path)
    assert (thr["image"], thr["pixel"], "calibration" in thr) == (None, None, False)
    assert len(warned) == 2
    path.write_text(json.dumps({**_run(), "per_category": [0.7]}))
    with pytest.raises(DatasetError, match="has no 'per_category' table"):
        _resolve(path)


def test_values_read_from_json_or_torch_compare_by_value(tmp_path):
    """A run definition read from JSON (an export's sidecar) and a device type from torch are
    strings equal to the code's literals but other objects: the checks compare them by value.
    A device other than CUDA (mps) computes auto at fp32."""
    import torch

    assert effective_precision("auto", torch.device("cuda:0").type) == "fp16"
    assert effective_precision("auto", "mps") == "fp32"
    run = json.loads(json.dumps(_run("few_shot", "per_image")))
    cfg = PredictConfig(image_dir="x", object_name="bottle", checkpoint_path="x.pth",
                        thresholds=str(_file(tmp_path, "few_shot", "released", both=True, k=5)))
    warned: list[str] = []
    thr = resolve_thresholds(cfg, run, lambda where, why: warned.append(why))
    assert thr["image"] == 0.4 and len(warned) == 1 and "5 reference images" in warned[0]


def test_the_fix_for_a_released_run_and_a_file_that_names_only_its_model(tmp_path):
    with pytest.raises(ConfigError, match="fitted on the per_image few-shot score; this run uses "
                                          r"released: rerun test.py with --image_score released "
                                          r"\(or both\) or pass --image_score per_image$"):
        _resolve(_file(tmp_path, "few_shot", "per_image"), "few_shot", "released")
    path = tmp_path / "model_only.json"  # a hand-written file: a model and no image size
    path.write_text(json.dumps({"mode": "zero_shot", "model": "ViT-L-14-336",
                                "per_category": {"bottle": {"image": 0.7, "pixel": 1.5}}}))
    with pytest.raises(ConfigError, match="fitted for ViT-L-14-336 at None px"):
        _resolve(path)
