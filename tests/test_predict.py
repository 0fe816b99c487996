"""predict.py on fixture folders with the tiny random CLIP: output files and formats, agreement
with the golden zero-shot run, few-shot scoring, thresholds, and bad input (skipped files,
one-line errors with exit status 2)."""
from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import GOLDEN, VIT, load_predictions, require
from PIL import Image

import predict
from utils.visualize import MIN_SIDE

REPO = Path(__file__).resolve().parents[1]

GOLDEN = REPO / "tests" / "fixtures" / "golden"
MODELS = GOLDEN / "models"
MODEL = ["--model", "tiny-vit", "--config_path", str(MODELS / "tiny-vit.json"),
         "--pretrained", str(MODELS / "tiny-vit-random.pt"), "--image_size", "84",
         "--features_list", "2", "4", "6", "8", "--few_shot_features", "2", "4", "6", "8",
         "--device", "cpu", "--checkpoint_path", str(MODELS / "linear-random.pth")]
BOTTLE = GOLDEN / "data" / "mvtec" / "bottle"


def run(capsys, image_dir: Path, save: Path, *extra: str, obj: str = "bottle"):
    code = predict.main(["--image_dir", str(image_dir), "--object_name", obj,
                         "--save_path", str(save), *MODEL, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture()
def folder(tmp_path) -> Path:
    """bottle test images (flat, renamed), one JPEG copy, one broken file, one text file."""
    d = tmp_path / "images"
    d.mkdir()
    for p in sorted((BOTTLE / "test").glob("*/*.png")):
        shutil.copy(p, d / f"{p.parent.name}_{p.name}")
    Image.open(BOTTLE / "train" / "good" / "000.png").convert("RGB").save(d / "extra.jpg")
    (d / "broken.png").write_bytes(b"not an image at all")
    (d / "notes.txt").write_text("ignored: not an image extension")
    return d


def test_zero_shot_matches_golden_run(capsys, tmp_path):
    """Same scores and maps as the released code's zero-shot run on the same images."""
    code, _, err = run(capsys, BOTTLE / "test", tmp_path / "out", "--recursive", "--save_maps")
    assert code == 0, err
    exp = np.load(GOLDEN / "expected" / "mvtec_zero_shot.npz")
    want = {p[len("bottle/test/"):]: i for i, p in enumerate(exp["img_paths"])
            if p.startswith("bottle/")}
    rows = read_csv(tmp_path / "out" / "scores.csv")
    assert [r["path"] for r in rows] == sorted(want)
    for r in rows:
        assert float(r["score"]) == pytest.approx(exp["pr_sp"][want[r["path"]]], abs=5e-6)
    maps = np.load(tmp_path / "out" / "maps.npz")
    idx = [want[p] for p in maps["paths"]]
    np.testing.assert_allclose(maps["anomaly_maps"].astype(np.float32), exp["anomaly_maps"][idx],
                               atol=4e-3)  # float16 storage


def test_outputs_with_thresholds_and_unreadable_file(capsys, tmp_path, folder):
    thr = tmp_path / "thresholds.json"
    thr.write_text(json.dumps({"mode": "zero_shot",
                               "per_category": {"bottle": {"pixel": 2.0, "image": 0.9992}}}))
    save = tmp_path / "out"
    code, _, err = run(capsys, folder, save, "--thresholds", str(thr))
    assert code == 0, err
    assert "warning" in err and "broken.png" in err  # reported, not fatal
    assert "notes.txt" in err  # every file is scored or named in a warning

    names = sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".jpg"))
    scored = [n for n in names if n != "broken.png"]
    with open(save / "scores.csv", newline="") as f:
        assert f.readline().strip() == "path,score,anomalous"
    rows = read_csv(save / "scores.csv")
    assert [r["path"] for r in rows] == scored
    assert all(r["anomalous"] in ("0", "1") for r in rows)
    assert all((float(r["score"]) >= 0.9992) == (r["anomalous"] == "1") for r in rows)

    data = json.loads((save / "scores.json").read_text())
    assert data["mode"] == "zero_shot" and data["n_scored"] == len(scored)
    assert data["n_files"] == len(list(folder.iterdir()))
    assert data["thresholds"]["image"] == 0.9992 and data["thresholds"]["pixel"] == 2.0
    assert [s["path"] for s in data["skipped"]] == ["broken.png", "notes.txt"]
    log = (save / "log.txt").read_text()
    assert "broken.png" in log and "notes.txt" in log  # the warnings are in the log too
    for rec in data["images"]:
        assert set(rec) >= {"path", "score", "map_max", "text_score", "anomalous", "mask",
                            "heatmap"}
        assert (save / rec["heatmap"]).is_file()
        assert rec["score"] == pytest.approx(rec["text_score"])  # zero-shot: the text score
        mask = Image.open(save / rec["mask"])
        with Image.open(folder / rec["path"]) as src:
            assert mask.size == src.size  # masks at the original image size
        m = np.asarray(mask)
        assert set(np.unique(m)) <= {0, 255}
        assert (m.max() == 255) == (rec["map_max"] >= 2.0)
    heat = sorted(p.name for p in (save / "heatmaps").iterdir())
    assert heat == sorted(Path(n).with_suffix(".png").name for n in scored)
    with Image.open(folder / scored[0]) as src:
        w, h = src.size
    size = Image.open(save / "heatmaps" / Path(scored[0]).with_suffix(".png").name).size
    f = max(1.0, MIN_SIDE / max(w, h))  # full size, small images enlarged to stay legible
    pw, ph = round(w * f), round(h * f)
    # image|overlay|mask|colour bar under a strip of panel names
    assert ph + 10 < size[1] < ph + 60 and 3 * pw < size[0] < 4 * pw, (size, pw, ph)


def test_no_threshold_no_labels(capsys, tmp_path, folder):
    save = tmp_path / "out"
    code, _, err = run(capsys, folder, save, "--no_heatmaps")
    assert code == 0, err
    with open(save / "scores.csv", newline="") as f:
        assert f.readline().strip() == "path,score"
    assert not (save / "masks").exists() and not (save / "heatmaps").exists()
    assert "anomalous" not in json.loads((save / "scores.json").read_text())["images"][0]


def test_few_shot_released_score(capsys, tmp_path, folder):
    save = tmp_path / "out"
    code, _, err = run(capsys, folder, save, "--reference_dir", str(BOTTLE / "train" / "good"),
                       "--image_threshold", "0.5", "--no_heatmaps", "--image_score", "released")
    assert code == 0, err
    data = json.loads((save / "scores.json").read_text())
    assert data["mode"] == "few_shot" and data["image_score"] == "released"
    assert data["references"] == sorted(p.name for p in (BOTTLE / "train" / "good").iterdir())
    mx = np.array([r["map_max"] for r in data["images"]])
    norm = (mx - mx.min()) / (mx.max() - mx.min())  # min-max over the scored folder
    for r, n in zip(data["images"], norm):
        assert r["score"] == pytest.approx(0.5 * (r["text_score"] + n), abs=1e-9)
        assert r["anomalous"] == (r["score"] >= 0.5)


def test_per_image_score_does_not_depend_on_the_folder(capsys, tmp_path):
    """The default few-shot score: a folder of one image and of many give it the same bits."""
    many = tmp_path / "many"
    shutil.copytree(BOTTLE / "test", many)
    one = tmp_path / "one"
    one.mkdir()
    pick = sorted(many.rglob("*.png"))[-1]
    shutil.copy(pick, one / pick.name)
    refs = ["--reference_dir", str(BOTTLE / "train" / "good"), "--no_heatmaps"]
    assert run(capsys, many, tmp_path / "a", "--recursive", *refs)[0] == 0
    assert run(capsys, one, tmp_path / "b", *refs)[0] == 0
    a = json.loads((tmp_path / "a" / "scores.json").read_text())
    b = json.loads((tmp_path / "b" / "scores.json").read_text())
    assert a["image_score"] == "per_image" and a["normal_level"] == b["normal_level"] > 0
    rec = next(r for r in a["images"] if r["path"].endswith(f"/{pick.name}")
               and pick.parent.name in r["path"])
    # scored alone (a batch of 1) or among 6: other matrix-multiply kernels on some CPUs, so
    # float32 rounding apart (measured up to 6e-8); the normal level above comes from the same
    # reference batches in both runs and is bit-equal
    assert b["images"][0]["score"] == pytest.approx(rec["score"], abs=1e-6)
    mu = a["normal_level"]
    for r in a["images"]:
        s = min(max((r["map_max"] - mu) / mu, 0.0), 1.0)
        assert r["score"] == pytest.approx(0.5 * (r["text_score"] + s), abs=1e-12)


def test_recursive_skips_own_output(capsys, tmp_path, folder):
    (folder / "sub").mkdir()
    shutil.copy(folder / "extra.jpg", folder / "sub" / "extra.jpg")
    shutil.copy(folder / "extra.jpg", folder / "extra.png")  # same stem, other extension
    save = folder / "results"  # inside the scanned folder
    for _ in range(2):  # the second run must not score the first run's heatmaps
        code, _, err = run(capsys, folder, save, "--recursive")
        assert code == 0, err
        paths = [r["path"] for r in read_csv(save / "scores.csv")]
        assert "sub/extra.jpg" in paths and not any(p.startswith("results/") for p in paths)
    assert (save / "heatmaps" / "sub" / "extra.png").is_file()
    assert {p.name for p in (save / "heatmaps").glob("extra*")} == {"extra.png", "extra.jpg.png"}
    data = json.loads((save / "scores.json").read_text())
    assert {r["path"] for r in data["images"]} >= {"extra.png", "extra.jpg", "sub/extra.jpg"}


@pytest.mark.parametrize("case", ["missing", "empty", "only_broken", "bad_category"])
def test_user_errors_exit_2(capsys, tmp_path, case):
    d = tmp_path / "imgs"
    extra = []
    if case != "missing":
        d.mkdir()
    if case == "only_broken":
        (d / "a.png").write_bytes(b"junk")
    if case == "bad_category":
        shutil.copy(BOTTLE / "test" / "good" / "000.png", d / "a.png")
        thr = tmp_path / "t.json"
        thr.write_text(json.dumps({"per_category": {"grid": {"pixel": 1, "image": 0.5}}}))
        extra = ["--thresholds", str(thr)]
    code, _, err = run(capsys, d, tmp_path / "out", *extra)
    assert code == 2
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    expect = {"missing": "not found", "empty": "no images", "only_broken": "could be read",
              "bad_category": "'bottle'"}[case]
    assert expect in lines[0]


def test_thresholds_from_test_py(capsys, tmp_path):
    """The thresholds.json test.py writes is read as is."""
    spec = importlib.util.spec_from_file_location("aprilgan_testpy", REPO / "test.py")
    testpy = sys.modules.setdefault("aprilgan_testpy", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(testpy)
    ev = tmp_path / "eval"
    assert testpy.main(["--mode", "zero_shot", "--dataset", "mvtec", "--data_path",
                        str(GOLDEN / "data" / "mvtec"), "--save_path", str(ev), "--categories",
                        "bottle", "--no_mvtec_aupro", *MODEL]) == 0
    thr = json.loads((ev / "thresholds.json").read_text())["per_category"]["bottle"]
    code, _, err = run(capsys, BOTTLE / "test", tmp_path / "out", "--recursive",
                       "--thresholds", str(ev / "thresholds.json"), "--no_heatmaps")
    assert code == 0, err
    data = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert data["thresholds"]["image"] == pytest.approx(thr["image"])
    assert data["thresholds"]["pixel"] == pytest.approx(thr["pixel"])
    assert len(list((tmp_path / "out" / "masks").rglob("*.png"))) == data["n_scored"] == 6


def test_resume_after_a_kill_loses_and_repeats_nothing(capsys, tmp_path, folder, monkeypatch):
    from engine.predict import scorers
    args = ("--batch_size", "2")
    assert run(capsys, folder, tmp_path / "whole", *args)[0] == 0
    real, seen = scorers.TorchScorer.batches, []

    def killed(self, *a, **k):
        for b in real(self, *a, **k):
            seen.append(len(b["path"]))
            if len(seen) == 3:
                raise KeyboardInterrupt  # the process dies with this batch in flight
            yield b
    monkeypatch.setattr(scorers.TorchScorer, "batches", killed)
    save = tmp_path / "part"
    code, _, err = run(capsys, folder, save, *args)
    assert code == 130 and "interrupted" in err
    assert not (save / "scores.csv").exists()  # nothing half-written
    staged = list(save.glob(".staging-*/records-r0.jsonl"))
    assert len(staged) == 1 and len(staged[0].read_text().splitlines()) >= 4
    monkeypatch.setattr(scorers.TorchScorer, "batches", real)
    # other settings, or a run by a version that did not record one of today's settings:
    # refused with the reason, and the staged records stay for the right command
    code, _, err = run(capsys, folder, save, *args, "--resume", "--pixel_threshold", "0.5")
    assert code == 2 and "used other settings (differs in: pixel_threshold)" in err, err
    progress = staged[0].parent / "progress.json"
    saved = progress.read_text()
    older = json.loads(saved)
    del older["fingerprint"]["cpu_linear"]
    progress.write_text(json.dumps(older))
    code, _, err = run(capsys, folder, save, *args, "--resume")
    assert code == 2 and "made by an older version (it records no cpu_linear)" in err, err
    progress.write_text(saved)
    code, out, err = run(capsys, folder, save, *args, "--resume")
    assert code == 0, err
    assert "resuming" in out
    assert (save / "scores.csv").read_text() == (tmp_path / "whole" / "scores.csv").read_text()
    a = json.loads((save / "scores.json").read_text())
    b = json.loads((tmp_path / "whole" / "scores.json").read_text())
    assert a["images"] == b["images"] and a["skipped"] == b["skipped"]
    assert not list(save.glob(".staging-*")) and (save / "report.html").is_file()


def test_heatmaps_share_one_scale(capsys, tmp_path, folder):
    """One colour scale per run: the same map value is the same colour in every heatmap."""
    from utils.visualize import ColorScale, fixed_scale, render_overlay
    save = tmp_path / "out"
    assert run(capsys, folder, save, "--pixel_threshold", "1.5")[0] == 0
    data = json.loads((save / "scores.json").read_text())
    assert data["heatmap_scale"] == {"vmin": 0.0, "vmax": 3.0,
                                     "source": "pixel threshold 1.5 at mid-scale"}
    assert fixed_scale(4).vmax == 4.0 and fixed_scale(4, 4).vmax == 12.0
    assert fixed_scale(4, 4, normal_level=2.5).vmax == 5.0
    gray = Image.new("RGB", (40, 30), (128, 128, 128))
    scale = ColorScale(0.0, 4.0, "test")
    normal = np.full((8, 8), 0.6, np.float32)  # a normal part: low everywhere
    anomalous = normal.copy()
    anomalous[2:5, 2:5] = 3.6  # a hot defect
    _, a = render_overlay(gray, normal, scale)
    _, b = render_overlay(gray, anomalous, scale)
    assert a.shape == (30, 40, 3)  # at the image's resolution, not the map's
    np.testing.assert_array_equal(a[-1, -1], b[-1, -1])  # same value, same colour
    assert a[..., 2].mean() > a[..., 0].mean()  # the normal part is drawn cool (blue)
    hot = b[8:14, 10:16]
    assert hot[..., 0].mean() > hot[..., 2].mean()  # the defect hot (red)


def test_predict_few_shot_maps_equal_the_golden_run(tmp_path, capsys):
    """predict.py with the golden run's two reference images gives the golden few-shot maps."""
    exp_path = VIT.expected_npz("mvtec", "few_shot")
    require(exp_path, VIT.refs("mvtec"))
    refs = json.loads(VIT.refs("mvtec").read_text())["bottle"]
    ref_dir = tmp_path / "refs"
    ref_dir.mkdir()
    for p in dict.fromkeys(refs):  # duplicates do not change a nearest-neighbour maximum
        shutil.copy(VIT.data("mvtec") / p, ref_dir / p.replace("/", "_"))
    save = tmp_path / "out"
    code = predict.main(["--image_dir", str(VIT.data("mvtec") / "bottle" / "test"), "--recursive",
                         "--object_name", "bottle", "--save_path", str(save),
                         "--reference_dir", str(ref_dir), "--save_maps", "--maps_dtype", "float32",
                         "--no_heatmaps", *VIT.model_args(84)])
    assert code == 0, capsys.readouterr().err
    maps = np.load(save / "maps.npz")
    assert maps["anomaly_maps"].dtype == np.float32
    exp = load_predictions(exp_path)
    idx = [exp["index"][f"bottle/test/{p}"] for p in maps["paths"]]
    np.testing.assert_allclose(maps["anomaly_maps"], exp["anomaly_maps"][idx], rtol=0, atol=1e-4)
