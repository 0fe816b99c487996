"""serve.py's parts without a server: the micro-batcher (batches, waits, a full queue, faults),
the decoding of uploads (as open_image decodes files; 415/422; the pixel limit), the settings
it refuses, the heatmap store (the last N, no client-given names), the watch folder's ledger
(a torn line, rows a kill lost, other settings) and the names it ignores."""
from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
from conftest import GOLDEN
from PIL import Image

from datasets.transforms import open_image
from errors import ConfigError
from utils.cli import parse_config

from engine.config import ServeConfig
from engine.serve.serve_batch import MicroBatcher, QueueFull
from engine.serve.serving import HeatmapStore, UploadError, decode_image
from engine.serve.watch import ignored
from engine.serve.watch_ledger import Ledger

BOTTLE = GOLDEN / "data" / "mvtec" / "bottle"


# --------------------------------------------------------------------------- the batcher
def test_batches_fill_up_to_max_batch_and_answer_each_item_in_order():
    seen, gate = [], threading.Event()

    def run(items):
        gate.wait(30)  # the first batch holds the worker while the others queue up
        seen.append(list(items))
        return [x * 10 for x in items]

    b = MicroBatcher(run, max_batch=3, max_wait=3.0, capacity=10)
    try:
        futs = []
        for x in range(7):
            b.reserve()
            futs.append(b.submit(x))
        assert b.stats()["pending"] == 7
        gate.set()
        assert [f.result(30) for f in futs] == [x * 10 for x in range(7)]
    finally:
        b.close()
    assert seen == [[0, 1, 2], [3, 4, 5], [6]]  # full batches, each item once, in order
    assert b.stats()["pending"] == 0 and b.stats()["images"] == 7


def test_a_lone_item_runs_after_max_wait_not_before():
    times = []
    b = MicroBatcher(lambda items: times.append(time.monotonic()) or list(items), max_batch=4,
                     max_wait=0.3, capacity=4)
    try:
        t0 = time.monotonic()
        b.reserve()
        assert b.submit("a").result(30) == "a"
        assert times[0] - t0 >= 0.29  # it waited for company
    finally:
        b.close()


def test_a_full_queue_refuses_with_a_retry_time_and_frees_places():
    gate = threading.Event()
    b = MicroBatcher(lambda items: gate.wait(30) and list(items), max_batch=1, max_wait=0,
                     capacity=2)
    try:
        b.reserve()
        first = b.submit(1)
        b.reserve()
        with pytest.raises(QueueFull) as e:
            b.reserve()
        assert e.value.retry_after >= 1 and "the queue holds 2" in str(e.value)
        b.release()  # a refused upload gives its place back
        b.reserve()
        second = b.submit(2)
        gate.set()
        assert first.result(30) == 1 and second.result(30) == 2
        b.reserve()  # places are free again once through
        b.release()
    finally:
        gate.set()
        b.close()


def test_a_failing_batch_fails_its_items_and_the_worker_goes_on():
    calls = []

    def run(items):
        calls.append(items)
        if "bad" in items:
            raise ValueError("broken batch")
        return list(items)

    b = MicroBatcher(run, max_batch=1, max_wait=0, capacity=4)
    try:
        b.reserve()
        with pytest.raises(ValueError, match="broken batch"):
            b.submit("bad").result(30)
        b.reserve()
        assert b.submit("good").result(30) == "good"
    finally:
        b.close()


# --------------------------------------------------------------------------- uploads
def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_uploads_decode_exactly_as_open_image_reads_files(tmp_path):
    rng = np.random.default_rng(7)
    cases = {"rgb.png": Image.open(BOTTLE / "test" / "good" / "000.png"),
             "gray16.png": Image.fromarray(rng.integers(0, 65535, (40, 30), dtype=np.uint16)),
             "gray.jpg": Image.fromarray(rng.integers(0, 255, (33, 47), dtype=np.uint8))}
    for name, img in cases.items():
        path = tmp_path / name
        img.save(path)
        a, b = decode_image(path.read_bytes()), open_image(path)
        assert a.mode == b.mode and a.size == b.size, name
        assert np.array_equal(np.asarray(a), np.asarray(b)), name


@pytest.mark.parametrize("case", ["text", "empty", "truncated", "bomb"])
def test_bad_uploads_are_415_or_422_naming_the_problem(case, monkeypatch):
    data = _png(Image.new("RGB", (300, 200), (10, 20, 30)))
    if case == "text":
        data = b"hello, not an image"
    elif case == "empty":
        data = b""
    elif case == "truncated":
        data = data[: len(data) // 2]
    else:  # more pixels than the limit: refused from the header, nothing decoded
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
        monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded a bomb"))
    with pytest.raises(UploadError) as e:
        decode_image(data, "the upload 'x.png'")
    want = {"text": (415, "not an image format"), "empty": (422, "is empty"),
            "truncated": (422, "cannot be decoded"), "bomb": (422, "60,000 pixels")}[case]
    assert (e.value.status, want[1] in e.value.message) == (want[0], True), e.value.message


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize("argv,words", [
    (["--onnx", "a.onnx", "--image_score", "released"], "released is min-max"),
    (["--onnx", "a.onnx", "b.onnx", "--object_name", "x"], "--object_name applies to one"),
    (["--onnx", "a.onnx", "b.onnx", "--image_threshold", "0.5"], "--image_threshold applies"),
    (["--onnx", "a.onnx", "--watch", "in"], "--watch needs --save_path"),
    (["--onnx", "a.onnx", "--no_http"], "--no_http leaves nothing"),
    (["--onnx", "a.onnx", "--save_path", "out"], "--save_path is the --watch"),
    (["--onnx", "a.onnx", "--watch", "in", "--save_path", "in"], "is or holds the --watch"),
    (["--onnx", "a.onnx", "--model", "ViT-B-16"], "drop --model"),
    (["--object_name", "x"], "--checkpoint_path is required"),
])
def test_settings_it_refuses_in_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(ServeConfig, argv, "serve.py", "x")
    err = capsys.readouterr().err
    assert e.value.code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_max_batch_is_the_batch_size_and_the_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("APRILGAN_API_KEY", "s3cret")
    cfg = parse_config(ServeConfig, ["--onnx", "a.onnx", "--max_batch", "3"], "serve.py", "x")
    assert cfg.batch_size == 3 and cfg.api_key == "s3cret" and cfg.host == "127.0.0.1"
    p = cfg.predict_config(onnx="a.onnx")
    assert p.onnx == "a.onnx" and p.batch_size == 3 and p.no_report


# --------------------------------------------------------------------------- heatmaps
def test_the_store_keeps_the_last_n_and_serves_only_its_own_ids(tmp_path):
    store = HeatmapStore(tmp_path / "h", keep=3)
    ids = [store.add(_png(Image.new("RGB", (4, 4), (i, 0, 0)))) for i in range(5)]
    assert sorted(p.stem for p in (tmp_path / "h").iterdir()) == sorted(ids[2:])
    assert store.path(ids[0]) is None and store.path(ids[4]) == tmp_path / "h" / f"{ids[4]}.png"
    for bad in ("../../etc/passwd", ids[4] + "/..", ids[4].upper(), "", "a" * 32):
        assert store.path(bad) is None
    again = HeatmapStore(tmp_path / "h", keep=3)  # a restart: the old ids are gone
    assert not list((tmp_path / "h").iterdir()) and again.path(ids[4]) is None


# --------------------------------------------------------------------------- the ledger
SETTINGS = {"object_name": "bottle", "image_threshold": 0.5, "pixel_threshold": 1.0}


def _rec(path: str, score: float) -> dict:
    return {"path": path, "size": 10, "mtime_ns": 5, "name": path + ".png", "score": score,
            "anomalous": score >= 0.5, "regions": [{"region": 1, "x0": 0, "y0": 0, "x1": 2,
                                                    "y1": 2, "area_px": 4, "area_fraction": 0.5,
                                                    "max_score": 1.5, "mean_score": 1.25}]}


def test_a_torn_line_is_dropped_and_lost_rows_come_back(tmp_path):
    led = Ledger(tmp_path, SETTINGS, True, True)
    led.add(_rec("a.png", 0.25))
    led.add(_rec("b.png", 0.75))
    led.close()
    (tmp_path / "scores.csv").write_text("path,score,anomalous\na.png,0.25")  # a kill mid-row
    with open(tmp_path / "ledger.jsonl", "a") as f:
        f.write(json.dumps(_rec("c.png", 0.9))[:30])  # a kill mid-line: c is not done
    led = Ledger(tmp_path, SETTINGS, True, True)
    assert led.done("a.png", (10, 5)) and led.done("b.png", (1, 1)) and not led.done("c.png", (10, 5))
    assert (tmp_path / "scores.csv").read_text() == \
        "path,score,anomalous\na.png,0.250000,0\nb.png,0.750000,1\n"
    assert (tmp_path / "ledger.jsonl").read_bytes().endswith(b"\n")  # the torn tail is cut
    led.add(_rec("c.png", 0.9))
    led.close()
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[1:] == ["a.png,0.250000,0", "b.png,0.750000,1", "c.png,0.900000,1"]
    regions = (tmp_path / "regions.csv").read_text().splitlines()
    assert regions[0].startswith("path,region,x0") and len(regions) == 4
    assert regions[3] == "c.png,1,0,0,2,2,4,0.5,1.5,1.25"


def test_an_error_is_retried_only_when_the_file_changes_and_other_settings_are_refused(tmp_path):
    led = Ledger(tmp_path, SETTINGS, True, False)
    led.add({"path": "x.png", "size": 3, "mtime_ns": 9, "error": "cut short"})
    assert led.done("x.png", (3, 9)) and not led.done("x.png", (4, 9))
    assert "x.png,cut short" in (tmp_path / "skipped.csv").read_text()
    led.add(_rec("x.png", 0.1) | {"size": 4, "mtime_ns": 9})
    assert "x.png" not in (tmp_path / "skipped.csv").read_text()
    assert led.name_for("y.png") == "y.png.png" or led.name_for("y.png") == "y.png"
    led.names.add("z.png")
    assert led.name_for("z.jpg") == "z.jpg.png"  # never another image's name
    led.close()
    with pytest.raises(ConfigError, match="differs in: image_threshold"):
        Ledger(tmp_path, {**SETTINGS, "image_threshold": 0.6}, True, False)


def test_hidden_and_temporary_names_are_ignored():
    for name in (".x.png", "sub/.hidden/a.png", "~lock.png", "a.png~", "a.png.tmp", "a.PART",
                 "b.crdownload", "c.png.partial", "d.swp"):
        assert ignored(name), name
    for name in ("a.png", "sub/b.jpg", "part.tmp.png", "x.bmp"):
        assert not ignored(name), name
