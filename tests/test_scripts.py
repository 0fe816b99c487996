"""The scripts/ entry points: bash syntax and --help, the commands the reproduction scripts
build (released defaults, paths from any folder), data preparation on small fixture archives
(checksums, corrupt archives, offline), the paper comparison, and the offline demo end to end."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
ENTRY = ["demo.sh", "gpu_check.sh", "prepare_data.sh", "reproduce_all.sh", "reproduce_tiny.sh",
         "test_benchmarks.sh", "test_few_shot.sh", "test_zero_shot.sh", "train_mvtec.sh", "train_visa.sh"]
METRICS = ("auroc_px", "f1_px", "ap_px", "pro", "auroc_sp", "f1_sp", "ap_sp")


def bash(script: str, *args: str, cwd: Path, timeout: float = 600, env: dict | None = None):
    """``env=warm_python.env()``: its python commands start in the tests' fork server."""
    return subprocess.run(["bash", str(SCRIPTS / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"aprilgan_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- bash scripts
@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_bash_syntax(script):
    r = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    head = (SCRIPTS / script).read_text().splitlines()
    if script in ENTRY:
        assert head[0] == "#!/usr/bin/env bash"
        assert any("set -euo pipefail" in l for l in head)


@pytest.mark.parametrize("script", ENTRY)
def test_help(script, tmp_path):
    r = bash(script, "--help", cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower()
    assert not list(tmp_path.iterdir())  # --help writes nothing


def test_entry_scripts_state_runtime_once():
    """Each script's header says where its expected time is stated: the README (then it gives
    no figure of its own, so the two cannot disagree), or its own header, marked ESTIMATED."""
    for script in ENTRY:
        header = "\n".join(l for l in (SCRIPTS / script).read_text().splitlines()[:25]
                            if l.startswith("#"))
        assert "Expected" in header, script
        if "README" in header:
            assert not re.search(r"\d+\s*[-–]\s*\d+\s*(s|min|h)\b", header), script
        else:
            assert "ESTIMATED" in header, script


def test_reproduce_all_commands(tmp_path):
    """Released defaults, relative paths resolved against the caller's folder."""
    r = bash("reproduce_all.sh", "--dry_run", "--data", "mydata", "--results", "res", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cmds = [l[2:] for l in r.stderr.splitlines() if l.startswith("+ ")]
    train = [c for c in cmds if " train.py " in c]
    tests = [c for c in cmds if " test.py " in c]
    assert len(train) == 2 and len(tests) == 4 and any("compare_paper.py" in c for c in cmds)
    released = "--model ViT-L-14-336 --pretrained openai --image_size 518 --features_list 6 12 18 24"
    assert all(released in c for c in train + tests)
    assert f"--train_data_path {tmp_path}/mydata/mvtec" in train[0] and "--epoch 3" in train[0]
    assert "--aug_rate 0.2" in train[0]
    assert f"--train_data_path {tmp_path}/mydata/visa" in train[1] and "--epoch 15" in train[1]
    few = [c for c in tests if "few_shot" in c]
    assert len(few) == 2
    assert all("--k_shot 1 2 4 --seed 1 2 3 4 5" in c for c in few)
    assert all(f"--save_path {tmp_path}/res/" in c for c in tests)
    mv = [c for c in tests if "--dataset mvtec" in c]
    assert all("train_on_visa/epoch_15.pth" in c for c in mv)  # cross-dataset weights
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_overrides_reach_python(tmp_path):
    r = bash("test_few_shot.sh", "--dry_run", "--datasets", "visa", "--model", "tiny-vit",
             "--config_path", "cfg/tiny-vit.json", "--pretrained", "w.pt", "--image_size", "84",
             "--features_list", "2", "4", "6", "8", "--few_shot_features", "2 4", "--seeds", "7",
             "--released", "--", "--num_workers", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (cmd,) = [l for l in r.stderr.splitlines() if l.startswith("+ ")]
    for part in ("--model tiny-vit", f"--config_path {tmp_path}/cfg/tiny-vit.json",
                 f"--pretrained {tmp_path}/w.pt", "--features_list 2 4 6 8",
                 "--few_shot_features 2 4", "--seed 7", "--num_workers 0",
                 "exps/pretrained/mvtec_pretrained.pth"):
        assert part in cmd, part
    bad = bash("train_mvtec.sh", "--bogus", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr


def test_missing_checkpoint_is_one_line(tmp_path):
    (tmp_path / "visa").mkdir()
    (tmp_path / "visa" / "meta.json").write_text("{}")
    r = bash("test_zero_shot.sh", "--datasets", "visa", "--visa_data", "visa",
             "--visa_checkpoint", "nope.pth", cwd=tmp_path)
    assert r.returncode == 2 and "nope.pth not found" in r.stderr


# --------------------------------------------------------------------------- data preparation
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> Path:
    """Fixture archives shaped like the real ones: categories (and split_csv/) at the root."""
    sys.path.insert(0, str(REPO))
    from tools.synthetic import generate_mvtec, generate_visa
    base = tmp_path_factory.mktemp("arch")
    m = generate_mvtec(base / "src_m", ["bottle", "grid"], 2, 1, 2, 32, seed=3)
    v = generate_visa(base / "src_v", ["candle"], 2, 1, 2, (40, 30), seed=4)
    out = base / "archives"
    out.mkdir()
    with tarfile.open(out / "mvtec_anomaly_detection.tar.xz", "w:xz") as t:
        for p in sorted(m.iterdir()):
            t.add(p, arcname=p.name)
    with tarfile.open(out / "VisA_20220922.tar", "w") as t:
        for p in sorted(v.iterdir()):
            t.add(p, arcname=p.name)
    return out


@pytest.fixture()
def prepare(capsys, monkeypatch):
    """Run scripts/prepare_data.py in-process (saves the torch import of a subprocess)."""
    pd = load_script("prepare_data")

    def call(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        code = pd.main(list(args))
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)
    return call


def test_prepare_wrong_checksum_fails_clearly(archives, tmp_path, prepare):
    # The fixture archive is not the real MVTec AD: the built-in checksum must reject it.
    r = prepare("--archives", str(archives), "--out", "data", "--datasets", "mvtec", cwd=tmp_path)
    assert r.returncode != 0
    err = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(err) == 1 and "mvtec_anomaly_detection.tar.xz" in err[0]
    assert "checksum mismatch" in err[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "data" / "mvtec").exists()
    # A wrong --sha256 is reported the same way.
    r = prepare("--archives", str(archives), "--out", "data", "--datasets", "visa", "--sha256",
                "VisA_20220922.tar=" + "0" * 64, cwd=tmp_path)
    assert r.returncode != 0 and "VisA_20220922.tar" in r.stderr and "mismatch" in r.stderr


def test_prepare_from_archives(archives, tmp_path, prepare):
    sums = [f"{p.name}={_sha(p)}" for p in sorted(archives.iterdir())]
    r = prepare("--archives", str(archives), "--out", "data", "--sha256", *sums, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "sha256 ok" in r.stdout
    assert "categories missing" in r.stderr and "cable" in r.stderr  # partial data is named
    meta = json.loads((tmp_path / "data" / "mvtec" / "meta.json").read_text())
    assert list(meta["test"]) == ["bottle", "grid"] and len(meta["test"]["bottle"]) == 3
    meta = json.loads((tmp_path / "data" / "visa" / "meta.json").read_text())
    assert len(meta["train"]["candle"]) == 2 and len(meta["test"]["candle"]) == 3
    assert meta["test"]["candle"][-1]["mask_path"].startswith("candle/Data/Masks/")
    # Running again finds the prepared folders and only re-indexes them.
    r = prepare("--archives", str(archives), "--out", "data", cwd=tmp_path)
    assert r.returncode == 0 and "already extracted" in r.stdout


def test_prepare_extracted_folder_and_errors(archives, tmp_path, prepare):
    ext = tmp_path / "dl" / "VisA_20220922"
    ext.mkdir(parents=True)
    with tarfile.open(archives / "VisA_20220922.tar") as t:
        t.extractall(ext, filter="data")
    r = prepare("--archives", "dl", "--out", "data", "--datasets", "visa", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data" / "visa").is_symlink() and (ext / "meta.json").is_file()

    cut = tmp_path / "cut"
    cut.mkdir()
    data = (archives / "mvtec_anomaly_detection.tar.xz").read_bytes()
    (cut / "mvtec_anomaly_detection.tar.xz").write_bytes(data[: len(data) // 2])
    r = prepare("--archives", "cut", "--out", "o", "--datasets", "mvtec", "--skip_checksum",
                cwd=tmp_path)
    assert r.returncode == 2 and "mvtec_anomaly_detection.tar.xz" in r.stderr
    assert "corrupt or incomplete" in r.stderr and not (tmp_path / "o" / "mvtec").exists()

    (tmp_path / "empty").mkdir()
    r = prepare("--archives", "empty", "--out", "o", cwd=tmp_path)
    assert r.returncode == 2 and "mvtec_anomaly_detection.tar.xz" in r.stderr
    assert "--download" in r.stderr

    vis = tmp_path / "novisa" / "visa"
    (vis / "candle" / "Data" / "Images").mkdir(parents=True)
    r = prepare("--archives", "novisa", "--out", "o", "--datasets", "visa", cwd=tmp_path)
    assert r.returncode == 2 and "1cls.csv" in r.stderr


def test_prepare_download_offline_and_file_url(archives, tmp_path, capsys):
    pd = load_script("prepare_data")
    src = pd.SOURCES["visa"]
    pd.SOURCES["visa"] = dataclasses.replace(src, url="http://127.0.0.1:9/VisA_20220922.tar")
    try:
        assert pd.main(["--download", "--out", str(tmp_path / "o"), "--datasets", "visa"]) == 2
        err = capsys.readouterr().err
        assert "cannot download" in err and "Offline?" in err
        tar = archives / "VisA_20220922.tar"
        pd.SOURCES["visa"] = dataclasses.replace(src, url=tar.as_uri(), sha256=_sha(tar))
        assert pd.main(["--download", "--out", str(tmp_path / "o"), "--datasets", "visa"]) == 0
        assert (tmp_path / "o" / "archives" / "VisA_20220922.tar").is_file()
        assert (tmp_path / "o" / "visa" / "meta.json").is_file()
    finally:
        pd.SOURCES["visa"] = src


# --------------------------------------------------------------------------- paper comparison
def test_compare_paper(tmp_path):
    paper = {}
    with open(SCRIPTS / "paper_tables" / "mvtec_0shot.csv", newline="") as f:
        for row in csv.DictReader(f):
            paper[row["category"]] = {m: float(row[m]) / 100 for m in METRICS}
    ours = {c: dict(v) for c, v in paper.items() if c != "mean"}
    ours["bottle"]["auroc_px"] += 0.01
    out = tmp_path / "results" / "mvtec_zero_shot"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"per_category": ours, "mean": paper["mean"]}))
    r = subprocess.run([sys.executable, str(SCRIPTS / "compare_paper.py"), "--results",
                        "results"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "results" / "comparison.md").read_text()
    assert "| bottle | 84.4 / 83.4 (+1.0) |" in md
    assert "not comparable" not in md.split("## MVTec AD, 0-shot")[1].split("##")[0]
    rows = list(csv.DictReader(open(tmp_path / "results" / "comparison.csv")))
    assert len(rows) == 16 * len(METRICS)
    diffs = {(r["category"], r["metric"]): float(r["diff"]) for r in rows}
    assert diffs[("bottle", "auroc_px")] == pytest.approx(1.0)
    assert diffs[("wood", "pro")] == pytest.approx(0.0)
    assert "visa_zero_shot/metrics.json not found" in md  # missing results are listed
    empty = subprocess.run([sys.executable, str(SCRIPTS / "compare_paper.py"), "--results",
                            str(tmp_path / "nothing")], capture_output=True, text=True)
    assert empty.returncode == 2 and "no results" in empty.stderr


# --------------------------------------------------------------------------- demo
def table_values(md: str) -> dict[str, list[float]]:
    """{row name: values} of the first Markdown table in ``md`` (percent; ``a±b`` -> a)."""
    rows = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] in ("objects", "") or set(cells[1]) <= set("-:"):
            continue
        rows[cells[0]] = [float(c.split("±")[0]) for c in cells[1:]]
    return rows


def assert_sane_table(md: str, categories: set[str], n_cols: int = len(METRICS)) -> None:
    rows = table_values(md)
    assert set(rows) == categories | {"mean"}, rows
    for name, values in rows.items():
        assert len(values) == n_cols and all(0.0 <= v <= 100.0 for v in values), (name, values)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, warm_python):
    """The offline demo, run once from an empty folder (default output folder ./demo_out)."""
    tmp_path = tmp_path_factory.mktemp("demo")
    t0 = time.time()
    r = bash("demo.sh", cwd=tmp_path, timeout=600, env=warm_python.env())
    return tmp_path, r, time.time() - t0


def test_demo_reports_render_in_chromium(demo):
    """Each of the demo's runs wrote a report.html that a headless browser renders."""
    from report_browser import Chromium, find_chromium
    tmp_path, r, _ = demo
    assert r.returncode == 0, r.stderr[-3000:]
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium not found (/usr/bin/chromium or chromium on PATH): install the "
                    "Debian package chromium (.ci/run does) to run the browser test")
    res = tmp_path / "demo_out" / "results"
    with Chromium(binary) as browser:
        for rel in ("visa_zero_shot", "visa_few_shot/k1_seed1", "predict_candle"):
            page = browser.open(res / rel / "report.html", 1280, 900)
            png = page.shoot()
            assert png.startswith(b"\x89PNG") and len(png) > 20_000, rel  # not a blank page
            assert page.broken_images() == 0, rel
            browser.collect_errors(page)
            assert page.errors == [], (rel, page.errors)


def test_demo_end_to_end(demo, warm_python):
    tmp_path, r, elapsed = demo
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "MEANINGLESS" in r.stdout and "Demo finished" in r.stdout
    res = tmp_path / "demo_out" / "results"
    for f in ("visa_zero_shot/metrics.json", "visa_zero_shot/thresholds.json",
              "visa_few_shot/summary_k1.md", "visa_few_shot/summary_k2.md",
              "visa_few_shot/k1_seed1/references.json", "predict_candle/scores.csv",
              "predict_candle/scores.json"):
        assert (res / f).is_file(), f
    assert list((res / "visa_zero_shot" / "overlays").rglob("*.png"))
    assert list((res / "predict_candle" / "heatmaps").rglob("*.png"))
    assert list((res / "predict_candle" / "masks").rglob("*.png"))
    m = json.loads((res / "visa_zero_shot" / "metrics.json").read_text())
    assert set(m["per_category"]) == {"candle", "pcb1"}
    assert "| mean" in r.stdout  # the tables are printed
    # the tables parse and hold finite percentages that match metrics.json
    cats = {"candle", "pcb1"}
    md = (res / "visa_zero_shot" / "metrics.md").read_text()
    assert_sane_table(md, cats)
    assert table_values(md)["mean"][0] == pytest.approx(100 * m["mean"]["auroc_px"], abs=0.051)
    for k in (1, 2):
        assert_sane_table((res / "visa_few_shot" / f"summary_k{k}.md").read_text(), cats)
    scores = list(csv.DictReader(open(res / "predict_candle" / "scores.csv")))
    assert scores and all(0.0 <= float(r["score"]) <= 1.0 for r in scores)
    # every run wrote a valid, self-contained report.html
    from report_html import assert_files_exist, parse_page
    for rel in ("visa_zero_shot", "visa_few_shot", "visa_few_shot/k1_seed1", "predict_candle"):
        page = res / rel / "report.html"
        assert_files_exist(page, parse_page(page))
    print(f"demo took {elapsed:.1f} s")

    # the README's offline predict.py example runs on the demo's outputs, as written
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- predict-offline-example -->", 1)[1].split("```bash\n", 1)[1]
    command = block.split("```", 1)[0]
    command = command.replace("python predict.py", f"{warm_python.ready()} {REPO / 'predict.py'}")
    command = command.replace("tests/fixtures/", f"{REPO / 'tests' / 'fixtures'}/")
    p = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env=warm_python.env())
    assert p.returncode == 0, p.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "demo_out" / "results" / "my_candles" / "scores.csv")))
    assert rows and set(rows[0]) == {"path", "score", "anomalous"}


@pytest.mark.skipif(os.environ.get("APRILGAN_SKIP_SLOW") == "1", reason="APRILGAN_SKIP_SLOW=1")
def test_reproduce_tiny_protocol(tmp_path, warm_python):
    """The whole reproduce_all.sh protocol on the tiny model (1 k, 1 seed to stay fast)."""
    r = bash("reproduce_tiny.sh", "--out", "rt", "--k_shot", "1", "--seeds", "1", cwd=tmp_path,
             env=warm_python.env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = tmp_path / "rt" / "results"
    assert (tmp_path / "rt" / "exps" / "train_on_mvtec" / "epoch_1.pth").is_file()
    assert (tmp_path / "rt" / "exps" / "train_on_visa" / "epoch_1.pth").is_file()
    for ds in ("mvtec", "visa"):
        assert (res / f"{ds}_zero_shot" / "metrics.json").is_file()
        assert json.loads((res / f"{ds}_few_shot" / "metrics.json").read_text())["k_shot"] == 1
    md = (res / "comparison.md").read_text()
    assert "MVTec AD, 1-shot" in md and "VisA, 0-shot" in md
    for ds, cats in (("mvtec", {"bottle", "grid"}), ("visa", {"candle", "pcb1"})):
        assert_sane_table((res / f"{ds}_zero_shot" / "metrics.md").read_text(), cats)
    rows = list(csv.DictReader(open(res / "comparison.csv")))
    ours = [float(r["ours"]) for r in rows if r["ours"] not in ("", "nan")]
    assert ours and all(0.0 <= v <= 100.0 for v in ours)
    index = (res / "index.html").read_text()
    assert "mvtec_zero_shot/report.html" in index and "visa_few_shot" in index
    timings = (res / "timings.txt").read_text()
    assert re.search(r"train_mvtec: \d+ s \(backbone [\d.]+ s for \d+ images, metrics", timings)
    # by the few-shot step every test image is in the stores (trainings and zero-shot filled
    # them): only the reference images go through the backbone
    refs = set()
    for ds in ("mvtec", "visa"):
        refs |= {(ds, p) for v in json.loads((res / f"{ds}_few_shot" / "references.json")
                                             .read_text()).values() for p in v}
    assert re.search(rf"test_few_shot: \d+ s \(backbone [\d.]+ s for {len(refs)} images", timings)
    assert (tmp_path / "rt" / "exps" / "feature_store" / "mvtec" / "manifest.json").is_file()


def test_gpu_check_without_cuda_stops_at_once(tmp_path, warm_python):
    """Without a CUDA device gpu_check.sh says so in one line, exits 1 and writes nothing."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    out = tmp_path / "gpu"
    r = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out)],
                       capture_output=True, text=True, timeout=120, env=warm_python.env())
    assert r.returncode == 1
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no CUDA device" in r.stderr
    assert not out.exists()
