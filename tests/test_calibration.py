"""Thresholds from normal images alone (predict.py --calibration_dir) and defect regions.

The order statistic is checked on hand-worked values; a calibrated run is checked against the
same images scored without thresholds (their scores and float32 maps, sorted here with numpy);
the calibrated file is used again (another batch size) and flags at most F of those images;
regions.csv is checked against the written masks with scipy's labelling, an implementation
independent of the OpenCV one predict.py uses.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from test_predict import BOTTLE, read_csv, run

from engine.predict.calibration import MARGIN, TopValues, fpr_threshold
from engine.predict.regions import find_regions

NORMALS = BOTTLE / "train" / "good"


def _threshold(values, f):
    top = TopValues(len(values))  # all of them: the rule picks among them
    top.add(np.asarray(values))
    return fpr_threshold(top, len(values), f)


def test_order_statistic_on_hand_worked_values():
    t, reached, m = _threshold([0.9, 0.5, 0.7, 0.1, 0.3], 0.2)  # m = 1: the 2nd largest
    assert (m, reached) == (1, 0.2) and t == pytest.approx(0.7 + MARGIN, abs=1e-12)
    t, reached, m = _threshold([0.9, 0.5, 0.7, 0.1, 0.3], 0.01)  # F < 1/n: above the largest
    assert (m, reached) == (0, 0.0) and t == pytest.approx(0.9 + MARGIN, abs=1e-12)
    t, reached, _ = _threshold([0.5, 0.5, 0.5, 0.1], 0.5)  # ties: none may pass, not three
    assert reached == 0.0 and t > 0.5
    t, _, _ = _threshold([3.0, 2.0, 1.0], 0.01)  # above 1 the margin is relative
    assert t == pytest.approx(3.0 * (1 + MARGIN), rel=1e-12)


def test_the_rule_where_f_times_n_is_an_integer():
    """At F n = m exactly, m values may reach t (a fraction F exactly, allowed): t is the
    (m + 1)-th largest plus the margin. 0.57 * 100 and 0.58 * 50 are 56.99999999999999 and
    28.999999999999996 in floats; the rule counts the decimal F: 57 of 1..100, 29 of 1..50."""
    t, reached, m = _threshold([0.9, 0.5, 0.7, 0.1, 0.3], 0.4)  # m = 2: the 3rd largest, 0.5
    assert (m, reached) == (2, 0.4) and t == pytest.approx(0.5 + MARGIN, abs=1e-12)
    t, reached, m = _threshold(np.arange(1.0, 101.0), 0.57)  # the 58th largest of 1..100: 43
    assert (m, reached) == (57, 0.57) and t == pytest.approx(43 * (1 + MARGIN), rel=1e-12)
    t, reached, m = _threshold(np.arange(1.0, 51.0), 0.58)  # the 30th largest of 1..50: 21
    assert (m, reached) == (29, 0.58) and t == pytest.approx(21 * (1 + MARGIN), rel=1e-12)
    t, reached, m = _threshold([-3.0, -4.0, -5.0], 0.01)  # negative: relative to |v|, upwards
    assert (m, reached) == (0, 0.0) and t == pytest.approx(-3.0 + 3 * MARGIN, abs=1e-12)


def test_streamed_top_values_equal_a_full_sort():
    rng = np.random.default_rng(5)
    parts = [rng.normal(size=(3, 7, 7)) for _ in range(6)]
    top = TopValues(40)
    for p in parts:
        top.add(p)
    every = np.sort(np.concatenate([p.ravel() for p in parts]))[::-1]
    np.testing.assert_array_equal(np.sort(top.top)[::-1], every[:40])
    assert top.seen == every.size


def test_top_values_of_pieces_smaller_than_k():
    """predict.py streams each batch's maps into a TopValues of m + 1 pixels, often more than
    one batch holds: the first pieces are kept whole until k values have come."""
    top = TopValues(8)
    for piece in ([3.0, 9.0, 1.0], [7.0, 2.0, 10.0], [8.0, 4.0, 6.0], [5.0, 12.0, 11.0]):
        top.add(np.array(piece))
    # a selection, no arithmetic: the values kept are the ones given, exactly
    assert sorted(top.top.tolist(), reverse=True) == [12.0, 11.0, 10.0, 9.0, 8.0, 7.0, 6.0, 5.0]
    assert top.seen == 12


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """predict.py runs shared by the tests of this file, each made once: ``runs(None)`` scores
    the normals without thresholds, ``runs(F, *extra)`` calibrates on them (float32 maps kept)."""
    from test_predict import MODEL

    import predict

    root, made = tmp_path_factory.mktemp("calibration"), {}

    def get(f: float | None, *extra: str) -> Path:
        if (f, extra) not in made:
            save = root / f"run{len(made)}"
            if f is None:
                args = [str(NORMALS), "--no_heatmaps", "--no_report"]
            else:
                args = [str(BOTTLE / "test"), "--recursive", "--calibration_dir", str(NORMALS),
                        "--target_fpr", str(f)]
            assert predict.main(["--image_dir", *args, "--object_name", "bottle", "--save_path",
                                 str(save), "--save_maps", "--maps_dtype", "float32", *MODEL,
                                 *extra]) == 0
            made[(f, extra)] = save
        return made[(f, extra)]
    return get


def _calibrated(runs, f, *extra):
    save = runs(f, *extra)
    return save, json.loads((save / "thresholds.json").read_text()), \
        (save / "log.txt").read_text()


@pytest.mark.parametrize("f", [0.2, 0.01, 0.4])  # 0.4: F n = 2 of the 5 normals exactly
def test_calibrated_thresholds_are_the_order_statistic_and_flag_at_most_f(capsys, tmp_path,
                                                                          runs, f):
    save, thr, err = _calibrated(runs, f)
    plain = runs(None)
    scores = np.sort([r["score"] for r in json.loads((plain / "scores.json").read_text())
                      ["images"]])[::-1]
    maps = np.load(plain / "maps.npz")["anomaly_maps"].astype(np.float64)
    n, m = len(scores), int(np.floor(f * len(scores)))
    pixels = np.sort(maps.ravel())[::-1]
    entry = thr["per_category"]["bottle"]
    assert entry["image"] == pytest.approx(scores[m] + MARGIN * max(1, scores[m]), abs=1e-9)
    k = int(np.floor(f * pixels.size))
    assert entry["pixel"] == pytest.approx(pixels[k] * (1 + MARGIN), rel=1e-9)
    cal = thr["calibration"]
    assert (thr["source"], cal["n_images"], cal["target_fpr"]) == ("calibration", n, f)
    assert cal["image_fpr"] == np.mean(scores >= entry["image"]) <= f
    assert cal["pixel_fpr"] == np.mean(pixels >= entry["pixel"]) <= f
    assert (thr["mode"], thr["model"], thr["image_size"]) == ("zero_shot", "tiny-vit", 84)
    if f < 1 / n:
        assert "cannot show a false-alarm rate" in err and entry["image"] > scores[0]
    if f == 0.4:  # F n = 2: the 3rd largest score sets t, and 2 of 5 (F exactly) reach it
        assert m == 2 and cal["image_fpr"] == 0.4
    # the same file again, another batch size: at most F of the normals are flagged
    again = tmp_path / "again"
    code, _, e = run(capsys, NORMALS, again, "--thresholds", str(save / "thresholds.json"),
                     "--batch_size", "2", "--save_maps", "--maps_dtype", "float32")
    assert code == 0, e
    rows = read_csv(again / "scores.csv")
    assert sum(int(r["anomalous"]) for r in rows) <= f * n
    again_maps = np.load(again / "maps.npz")["anomaly_maps"]
    assert np.mean(again_maps >= entry["pixel"]) <= f
    used = json.loads((again / "scores.json").read_text())["thresholds"]
    assert used["calibration"]["n_images"] == n


def test_a_reference_among_the_calibration_images_is_refused(capsys, tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    shutil.copy(NORMALS / "000.png", refs / "000.png")
    code, _, err = run(capsys, BOTTLE / "test", tmp_path / "out", "--recursive",
                       "--reference_dir", str(refs), "--calibration_dir", str(refs))
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: 1 calibration image")
    assert "also reference images" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, words", [
    (["--image_score", "released"], "released few-shot score is min-max normalised"),
    (["--image_threshold", "0.5"], "drop --image_threshold")])
def test_calibration_refuses_what_cannot_work(capsys, tmp_path, extra, words):
    refs = tmp_path / "refs"
    shutil.copytree(NORMALS, refs)
    cal = tmp_path / "cal"
    cal.mkdir()
    Image.open(NORMALS / "000.png").transpose(Image.FLIP_LEFT_RIGHT).save(cal / "flip.png")
    (refs / "000.png").unlink()
    try:
        code, _, err = run(capsys, BOTTLE / "test", tmp_path / "out", "--recursive",
                           "--reference_dir", str(refs), "--calibration_dir", str(cal), *extra)
    except SystemExit as e:  # a flag combination is refused while parsing
        code, err = e.code, capsys.readouterr().err
    assert code == 2 and words in err.strip().splitlines()[-1], err


def test_the_released_score_is_refused_as_a_command_line_gives_it():
    """--image_score released reaches calibrate_job as a string parsed from the command line,
    not the literal of the source: the refusal compares by value."""
    from types import SimpleNamespace

    from errors import ConfigError

    from engine.predict.calibration import calibrate_job

    released = "".join(["rele", "ased"])  # a new string, as sys.argv gives it
    job = SimpleNamespace(score_name=released, dist=SimpleNamespace(enabled=False),
                          cfg=SimpleNamespace(calibration_dir="unused"))
    with pytest.raises(ConfigError, match="released few-shot score is min-max normalised"):
        calibrate_job(job, None)


def test_calibration_is_one_process_only():
    from errors import ConfigError

    from engine.predict.calibration import check_not_distributed

    check_not_distributed(type("D", (), {"enabled": False})())
    with pytest.raises(ConfigError, match="without torchrun"):
        check_not_distributed(type("D", (), {"enabled": True})())


def _masks_and_regions(save: Path) -> tuple[dict, dict]:
    out = json.loads((save / "scores.json").read_text())["images"]
    csv_rows = read_csv(save / "regions.csv")
    by_path = {r["path"]: [row for row in csv_rows if row["path"] == r["path"]] for r in out}
    masks = {r["path"]: np.asarray(Image.open(save / r["mask"])) > 0 for r in out}
    return masks, by_path


@pytest.mark.parametrize("min_area", [0, 60])
def test_regions_agree_with_the_written_masks(runs, min_area):
    save, _, _ = _calibrated(runs, 0.2, *(["--min_region_area", str(min_area)] if min_area
                                          else []))
    masks, regions = _masks_and_regions(save)
    assert any(regions.values())
    for path, mask in masks.items():
        rows = regions[path]
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        assert n == len(rows), path
        assert sum(int(r["area_px"]) for r in rows) == int(mask.sum()), path
        areas = sorted(int(a) for a in np.bincount(labels.ravel())[1:])
        assert sorted(int(r["area_px"]) for r in rows) == areas
        assert all(int(r["area_px"]) >= min_area for r in rows)
        h, w = mask.shape
        for r in rows:  # the box holds a region of that area, touching all four sides
            x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
            inside = labels[y0:y1, x0:x1]
            sizes = np.bincount(inside.ravel(), minlength=n + 1)
            lab = next(i for i in range(1, n + 1) if sizes[i] == int(r["area_px"]) and
                       (labels[y0:y1, x0:x1] == i).any(0)[[0, -1]].all() and
                       (labels[y0:y1, x0:x1] == i).any(1)[[0, -1]].all())
            assert float(r["area_fraction"]) == pytest.approx(int(r["area_px"]) / (h * w),
                                                              rel=1e-5)
            assert int(r["region"]) == rows.index(r) + 1 and lab > 0
        peaks = [float(r["max_score"]) for r in rows]
        assert peaks == sorted(peaks, reverse=True)
    images = json.loads((save / "scores.json").read_text())["images"]
    assert all(len(i.get("regions", [])) == len(regions[i["path"]]) for i in images)


def test_region_scores_by_hand():
    """Two squares and a diagonal pair (one region under 8-connectivity) on a known map."""
    m = np.zeros((6, 8))
    m[1:3, 1:3] = [[2.0, 3.0], [2.5, 2.0]]  # area 4, max 3, mean 2.375
    m[4, 5], m[5, 6] = 5.0, 1.5             # diagonal neighbours: one region, area 2
    mask, regions = find_regions(m, 1.5)
    assert mask.sum() == 6 and [r["region"] for r in regions] == [1, 2]
    first, second = regions
    assert (first["x0"], first["y0"], first["x1"], first["y1"]) == (5, 4, 7, 6)
    assert (first["area_px"], first["max_score"], first["mean_score"]) == (2, 5.0, 3.25)
    assert (second["x0"], second["y0"], second["x1"], second["y1"]) == (1, 1, 3, 3)
    assert (second["area_px"], second["max_score"], second["mean_score"]) == (4, 3.0, 2.375)
    assert second["area_fraction"] == 4 / 48
    mask, regions = find_regions(m, 1.5, min_area=3)
    assert mask.sum() == 4 and len(regions) == 1 and regions[0]["area_px"] == 4
    assert not mask[4:, 5:].any()
    assert cv2.countNonZero(mask.astype(np.uint8)) == 4


def test_export_takes_a_calibrated_file_and_refuses_another_definition(capsys, tmp_path, runs):
    from test_export import argv

    import export

    save, thr, _ = _calibrated(runs, 0.2)
    out = tmp_path / "model.onnx"
    code = export.main(argv("vit", "zero_shot", out, "--thresholds", str(save / "thresholds.json"),
                            "--exporter", "torchscript", "--no_verify"))
    assert code == 0, capsys.readouterr().err
    meta = json.loads(Path(f"{out}.json").read_text())
    entry = thr["per_category"]["bottle"]
    assert (meta["thresholds"]["image"], meta["thresholds"]["pixel"]) == (entry["image"],
                                                                          entry["pixel"])
    assert meta["thresholds"]["precision"] == thr["precision"] == "fp32"  # kept with them
    # sidecar thresholds fitted at another precision than the run's: used, with a warning
    Path(f"{out}.json").write_text(json.dumps({**meta, "thresholds": {**meta["thresholds"],
                                                                      "precision": "bf16"}}))
    import predict

    code = predict.main(["--image_dir", str(BOTTLE / "test"), "--recursive", "--object_name",
                         "bottle", "--save_path", str(tmp_path / "scored"), "--onnx", str(out),
                         "--no_heatmaps", "--no_report"])
    said = capsys.readouterr()
    assert code == 0, said.err
    assert "fitted at bf16; this run computes at fp32" in said.out + said.err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**thr, "image_size": 518}))
    code = export.main(argv("vit", "zero_shot", tmp_path / "no.onnx", "--thresholds", str(other)))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "fitted for tiny-vit at 518 px" in err[0]
    assert not (tmp_path / "no.onnx").exists()
