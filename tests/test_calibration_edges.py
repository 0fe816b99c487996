"""Calibration at its edges (predict.py --calibration_dir): a reference image reached by
another path (relative, ``..``, a symbolic link) is still refused; an unreadable calibration
image is not counted; the order statistic with hand-worked values, F n an integer among them.

``calibrate`` is run on hand-made 2x2 images whose maps are their pixel values (the thresholds
worked by hand below); predict.py runs are checked against the same normals scored without
thresholds, sorted here with numpy.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from test_calibration import NORMALS, runs  # noqa: F401 - runs: the fixture of plain runs
from test_predict import BOTTLE, run

from engine.predict.calibration import MARGIN


class _PngScorer:
    """Scores 2x2 8-bit PNGs: an image's map is its pixel values / 10 and its text score their
    mean; a file PIL cannot open goes to ``on_skip`` (as the real scorers' loader does)."""

    size = 2

    def batches(self, root, paths, batch_size, on_skip):
        batch = []
        for p in paths:
            try:
                with Image.open(root / p) as im:
                    batch.append(np.asarray(im, np.float64) / 10)
            except OSError as e:
                on_skip(p, str(e))
                continue
            if len(batch) == batch_size:
                yield {"text_score": [m.mean() for m in batch], "maps": np.stack(batch)}
                batch = []
        if batch:
            yield {"text_score": [m.mean() for m in batch], "maps": np.stack(batch)}


# five readable 2x2 images holding the pixel values 1..20 once each (map = value / 10), maxima
# 2.0, 1.6, 1.8, 1.3, 1.9, and c.png, which is not an image
PNGS = {"a.png": [[1, 2], [3, 20]], "b.png": [[4, 5], [6, 16]], "c.png": None,
        "d.png": [[7, 8], [9, 18]], "e.png": [[10, 11], [12, 13]], "f.png": [[14, 15], [17, 19]]}


def _calibrate_pngs(tmp_path, f, refs_dir=None, refs=()):
    from types import SimpleNamespace

    from engine.predict.calibration import calibrate

    for name, px in PNGS.items():
        if px is None:
            (tmp_path / name).write_bytes(b"not an image")
        else:
            Image.fromarray(np.array(px, np.uint8)).save(tmp_path / name)
    job = SimpleNamespace(cfg=SimpleNamespace(target_fpr=f, batch_size=2), scorer=_PngScorer())
    skipped = []
    out = calibrate(job, sorted(PNGS), tmp_path, refs_dir, list(refs),
                    lambda text, mmax: mmax, lambda path, why: skipped.append(path))
    return out, skipped


@pytest.mark.parametrize("f, image, image_fpr, pixel, pixel_fpr", [
    # n = 5 scored images, not the 6 listed: m = floor(0.34 * 5) = 1 -> the 2nd largest score,
    # 1.9 (of 6: m = 2, 1.8); pixels m = floor(0.34 * 20) = 6 -> the 7th largest value, 1.4
    (0.34, 1.9, 0.2, 1.4, 0.3),
    # F n = 2 and F N = 8 exactly: the 3rd largest score 1.8, the 9th largest pixel 1.2; the
    # reached rates equal F
    (0.4, 1.8, 0.4, 1.2, 0.4),
    # F < 1/n: above the highest score (2.0), with a note; pixels F N = 2: the 3rd largest, 1.8
    (0.1, 2.0, 0.0, 1.8, 0.1)])
def test_calibrate_counts_only_the_images_scored(tmp_path, f, image, image_fpr, pixel,
                                                  pixel_fpr):
    out, skipped = _calibrate_pngs(tmp_path, f)
    assert skipped == ["c.png"]
    assert out["image"] == pytest.approx(image * (1 + MARGIN), rel=1e-12)
    assert out["pixel"] == pytest.approx(pixel * (1 + MARGIN), rel=1e-12)
    c = out["calibration"]
    assert (c["n_images"], c["n_pixels"], c["resolution"], c["target_fpr"]) == (5, 20, 0.2, f)
    assert (c["image_fpr"], c["pixel_fpr"], c["highest_normal_score"]) == (image_fpr, pixel_fpr,
                                                                           2.0)
    assert c["dir"] == str(tmp_path.resolve())
    assert out["source"] == f"calibration on 5 normal images of {tmp_path} (target false-alarm " \
                            f"rate {f:g})"
    assert c["note"] == (None if f >= 0.2 else
                         "5 calibration images cannot show a false-alarm rate as low as 0.1 "
                         "(one image is 1/5 = 0.2): the image threshold sits just above the "
                         "highest normal score")


def test_calibrate_with_no_readable_image_is_an_error(tmp_path):
    from types import SimpleNamespace

    from errors import DatasetError

    from engine.predict.calibration import calibrate

    (tmp_path / "c.png").write_bytes(b"not an image")
    job = SimpleNamespace(cfg=SimpleNamespace(target_fpr=0.1, batch_size=2), scorer=_PngScorer())
    with pytest.raises(DatasetError) as err:
        calibrate(job, ["c.png"], tmp_path, None, [], lambda t, m: m, lambda p, why: None)
    assert str(err.value) == (f"none of the 1 files in {tmp_path} could be read as an image; "
                              "--calibration_dir needs normal images of the object")


def test_calibrate_on_one_image_keeps_enough_of_its_pixels(tmp_path):
    """One 2x2 image, F = 0.5: the image threshold sits above its score (m = 0), and of its 4
    pixels m = floor(0.5 * 4) = 2 may reach the pixel threshold, the 3rd largest map value 0.2
    plus the margin: 2.0 and 0.3 reach it."""
    from types import SimpleNamespace

    from engine.predict.calibration import calibrate

    Image.fromarray(np.array([[1, 2], [3, 20]], np.uint8)).save(tmp_path / "a.png")
    job = SimpleNamespace(cfg=SimpleNamespace(target_fpr=0.5, batch_size=2), scorer=_PngScorer())
    out = calibrate(job, ["a.png"], tmp_path, None, [], lambda t, m: m, lambda p, why: None)
    assert out["image"] == pytest.approx(2.0 * (1 + MARGIN), rel=1e-12)
    assert out["pixel"] == pytest.approx(0.2 + MARGIN, abs=1e-12)
    c = out["calibration"]
    assert (c["n_images"], c["n_pixels"], c["image_fpr"], c["pixel_fpr"]) == (1, 4, 0.0, 0.5)


def test_a_value_equal_to_the_threshold_counts_as_reached():
    """Of 0.5 + 1e-6, 0.5 and 0.1 with F = 0.34 (m = 1), t = 0.5 + 1e-6, which the largest value
    equals: it is at or above t, so the reached rate is 1/3."""
    from engine.predict.calibration import TopValues, fpr_threshold

    top = TopValues(3)
    top.add(np.array([0.5 + 1e-6, 0.5, 0.1]))
    t, reached, m = fpr_threshold(top, 3, 0.34)
    assert (t, reached, m) == (0.5 + 1e-6, 1 / 3, 1)


@pytest.mark.parametrize("f, kept, message", [
    (0.5, 2, "need the 3 largest values, have 2"),  # m = floor(0.5 * 4) = 2
    (0.25, 1, "need the 2 largest values, have 1")])  # m = floor(0.25 * 4) = 1, an odd m
def test_too_few_top_values_is_a_clear_error(f, kept, message):
    """m = floor(F * 4) needs the m + 1 largest of the 4 values; a TopValues of m has not got
    them."""
    from engine.predict.calibration import TopValues, fpr_threshold

    top = TopValues(kept)
    top.add(np.array([4.0, 3.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=rf"^{message}$"):
        fpr_threshold(top, 4, f)


def test_calibrate_refuses_references_however_their_paths_are_written(tmp_path, monkeypatch):
    """The same file reached through a relative folder, a ``..`` and a symbolic link is one file;
    files that are not references pass."""
    from errors import DatasetError

    (tmp_path / "cal").mkdir()
    (tmp_path / "refs").mkdir()
    (tmp_path / "cal" / "x").mkdir()
    shutil.copy(NORMALS / "000.png", tmp_path / "refs" / "000.png")
    (tmp_path / "refs" / "link.png").symlink_to(tmp_path / "cal" / "d.png")
    monkeypatch.chdir(tmp_path)
    for refs_dir, refs in (("cal", ["b.png"]), ("cal/x/../", ["e.png"]), ("refs", ["link.png"])):
        with pytest.raises(DatasetError, match=r"^1 calibration image\(s\) in .* are also "
                                               r"reference images \(e\.g\. [bde]\.png\)"):
            _calibrate_pngs(tmp_path / "cal", 0.4, refs_dir, refs)
    out, _ = _calibrate_pngs(tmp_path / "cal", 0.4, "refs", ["000.png"])
    assert out["calibration"]["n_images"] == 5


@pytest.mark.parametrize("how", ["relative", "dotdot", "linked_file", "linked_folder",
                                 "linked_references"])
def test_a_reference_reached_by_another_path_is_refused(capsys, tmp_path, monkeypatch, how):
    """--reference_dir refs (relative, from the working folder) and a calibration folder that
    reaches refs/000.png by its absolute path, through ``..``, through a symbolic link to the
    file (named link.png, beside a true normal) or to the folder; or --reference_dir
    elsewhere/../linked (a link to refs) and the calibration folder refs: refused, naming the
    file."""
    refs, cal = tmp_path / "refs", tmp_path / "cal"
    refs.mkdir()
    shutil.copy(NORMALS / "000.png", refs / "000.png")
    (tmp_path / "elsewhere").mkdir()
    named = "000.png"
    if how == "relative":
        cal = refs.resolve()
    elif how == "dotdot":
        cal = tmp_path / "elsewhere" / ".." / "refs"
    elif how == "linked_file":
        cal.mkdir()
        shutil.copy(NORMALS / "001.png", cal / "001.png")
        (cal / "link.png").symlink_to(refs / "000.png")
        named = "link.png"
    elif how == "linked_folder":
        cal.symlink_to(refs, target_is_directory=True)
    else:
        (tmp_path / "linked").symlink_to(refs, target_is_directory=True)
        cal = refs.resolve()
    monkeypatch.chdir(tmp_path)
    ref_dir = "elsewhere/../linked" if how == "linked_references" else "refs"
    code, _, err = run(capsys, BOTTLE / "test", tmp_path / "out", "--recursive",
                       "--reference_dir", ref_dir, "--calibration_dir", str(cal))
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: 1 calibration image(s) in "), err
    assert f"are also reference images (e.g. {named})" in last and not (tmp_path / "out").exists()


def test_an_unreadable_calibration_image_is_not_counted(capsys, tmp_path, runs):
    """Five normals and a broken file, F = 0.34: n = 5 (of 6 listed), so m = floor(1.7) = 1 and
    the image threshold is the 2nd largest of the five scores (of six, m would be 2); the pixel
    threshold is the floor(0.34 * 5 * 84 * 84) + 1 = 11996th largest of their map values."""
    cal = tmp_path / "cal"
    shutil.copytree(NORMALS, cal)
    (cal / "002b.png").write_bytes(b"not an image")
    (cal / "sub").mkdir()  # a sub-folder is not scored (no --recursive for calibration)
    shutil.copy(NORMALS / "000.png", cal / "sub" / "000.png")
    code, _, err = run(capsys, BOTTLE / "test", tmp_path / "out", "--recursive", "--no_heatmaps",
                       "--no_report", "--calibration_dir", str(cal), "--target_fpr", "0.34")
    assert code == 0, err
    assert "002b.png" in err and "calibration image skipped" in err
    plain = runs(None)
    scores = np.sort([r["score"] for r in json.loads((plain / "scores.json").read_text())
                      ["images"]])[::-1]
    pixels = np.sort(np.load(plain / "maps.npz")["anomaly_maps"].astype(np.float64).ravel())[::-1]
    thr = json.loads((tmp_path / "out" / "thresholds.json").read_text())
    entry, c = thr["per_category"]["bottle"], thr["calibration"]
    assert (len(scores), pixels.size, c["n_images"], c["n_pixels"]) == (5, 35280, 5, 35280)
    assert entry["image"] == pytest.approx(scores[1] + MARGIN * max(1, abs(scores[1])), abs=1e-9)
    assert entry["pixel"] == pytest.approx(pixels[11995] + MARGIN * max(1, pixels[11995]),
                                           abs=1e-9)
    assert (c["image_fpr"], c["resolution"]) == (0.2, 0.2)
    assert c["pixel_fpr"] == np.mean(pixels >= entry["pixel"]) <= 0.34


def test_calibration_of_an_exported_graph(capsys, tmp_path):
    """predict.py --onnx: the references are the sidecar's (all five normals, so calibrating on
    them is refused), the definition is the graph's (few-shot, its stages, k = 5, fp32); on the
    three good test images, F = 0.34 gives m = floor(1.02) = 1: the 2nd largest of their
    scores, read from a run of the same graph without thresholds."""
    from test_export import argv

    import export

    graph = tmp_path / "few.onnx"
    assert export.main(argv("vit", "few_shot", graph, "--exporter", "torchscript",
                            "--no_verify")) == 0
    import predict

    good = BOTTLE / "test" / "good"
    common = ["--object_name", "bottle", "--onnx", str(graph), "--no_heatmaps", "--no_report"]
    capsys.readouterr()
    assert predict.main(["--image_dir", str(good), "--save_path", str(tmp_path / "refused"),
                         "--calibration_dir", str(NORMALS), *common]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: 5 calibration image(s) in ") and "(e.g. 000.png)" in last
    assert predict.main(["--image_dir", str(good), "--save_path", str(tmp_path / "plain"),
                         *common]) == 0
    assert predict.main(["--image_dir", str(BOTTLE / "test"), "--recursive", "--save_path",
                         str(tmp_path / "cal"), "--calibration_dir", str(good),
                         "--target_fpr", "0.34", *common]) == 0
    scores = np.sort([r["score"] for r in json.loads((tmp_path / "plain" / "scores.json")
                                                     .read_text())["images"]])[::-1]
    thr = json.loads((tmp_path / "cal" / "thresholds.json").read_text())
    assert {k: thr[k] for k in ("mode", "image_score", "model", "image_size", "features_list",
                                "few_shot_features", "k_shot", "precision")} == {
        "mode": "few_shot", "image_score": "per_image", "model": "tiny-vit", "image_size": 84,
        "features_list": [2, 4, 6, 8], "few_shot_features": [2, 4, 6, 8], "k_shot": 5,
        "precision": "fp32"}
    image = thr["per_category"]["bottle"]["image"]
    assert len(scores) == 3 and thr["calibration"]["n_images"] == 3
    assert image == pytest.approx(scores[1] + MARGIN * max(1, abs(scores[1])), abs=1e-9)
    assert thr["calibration"]["image_fpr"] == pytest.approx(1 / 3, abs=1e-15)
