"""serve.py as a real server on a loopback port, driven by an HTTP client: its scores are
predict.py's bit for bit with --max_batch 1 (torch few-shot, and two exports, zero- and
few-shot, on one process); 401, 413, 415 and 422 as JSON naming the problem; a bad image among
good ones under 16 concurrent requests; heatmap URLs that serve only the service's own files;
the page in headless Chromium (upload, result, threshold slider, drop).

Every server binds 127.0.0.1 on a free port in a process group of its own and is stopped when
its fixture ends, whatever happened (SIGTERM, then SIGKILL)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import GOLDEN, REPO, VIT
from PIL import Image
from session_processes import session_warm_python

BOTTLE = GOLDEN / "data" / "mvtec" / "bottle"
REFS = BOTTLE / "train" / "good"
MODEL = [a for a in VIT.model_args(84) if a not in ("--num_workers", "0")]
KEY = "test-key-5b1c"
THRESHOLDS = ["--image_threshold", "0.5", "--pixel_threshold", "1.5"]


# --------------------------------------------------------------------------- helpers
class Server:
    """``python serve.py ARGS --host 127.0.0.1 --port 0`` until ``stop``; ``url`` once it
    serves (read from its log line), ``log`` what it printed."""

    def __init__(self, args: list[str], env: dict | None = None, wait: float = 300.0,
                 ready: str = r" on http://127\.0\.0\.1:(\d+)/"):
        threads = str(torch.get_num_threads())  # the tests' predict.py runs in this process
        # serve.py in a process of its own, started by the session's fork server (no torch
        # import to wait for); a signal to the client reaches serve.py, a SIGKILL kills it
        warm = session_warm_python()
        self.proc = subprocess.Popen(
            [warm.ready(), str(REPO / "serve.py"), *map(str, args), "--host", "127.0.0.1",
             "--port", "0"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
            env=warm.env(None, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=threads, **(env or {})))
        self.lines: list[str] = []
        self.url, self.ready = None, False
        seen = threading.Event()

        def read() -> None:
            for line in self.proc.stdout:
                self.lines.append(line)
                found = re.search(ready, line)
                if found and not self.ready:
                    self.ready = True
                    if found.groups():
                        self.url = f"http://127.0.0.1:{found.group(1)}"
                    seen.set()
            seen.set()

        threading.Thread(target=read, daemon=True).start()
        seen.wait(wait)
        if not self.ready:
            self.stop()
            raise AssertionError(f"serve.py did not start:\n{self.log}")

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        """SIGTERM to its process group (SIGKILL after 30 s); its exit status."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        return self.proc.returncode


@contextmanager
def serving(args: list[str], env: dict | None = None, **kw):
    server = Server(args, env, **kw)
    try:
        yield server
    finally:
        server.stop()


def client(server: Server, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=120.0, trust_env=False,
                        headers={"Authorization": f"Bearer {key}"} if key else {},
                        limits=httpx.Limits(max_connections=32))


def post(c: httpx.Client, path: Path | str, data: bytes | None = None, **form) -> httpx.Response:
    """POST /score with the file ``path`` (or ``data`` under its name) as ``image``."""
    body = Path(path).read_bytes() if data is None else data
    return c.post("/score", files={"image": (Path(path).name, body, "application/octet-stream")},
                  data=form)


def images(folder: Path) -> Path:
    """The bottle test images, a JPEG, a 16-bit and an 8-bit gray image (seeded)."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in sorted((BOTTLE / "test").glob("*/*.png")):
        shutil.copy(p, folder / f"{p.parent.name}_{p.name}")
    rng = np.random.default_rng(11)
    Image.open(REFS / "000.png").convert("RGB").save(folder / "extra.jpg", quality=90)
    Image.fromarray(rng.integers(0, 65535, (70, 90), dtype=np.uint16)).save(folder / "gray16.png")
    Image.fromarray(rng.integers(0, 255, (64, 48), dtype=np.uint8)).save(folder / "gray8.png")
    return folder


def predicted(image_dir: Path, save: Path, *args: str) -> dict:
    """predict.py in this process; its scores.json images by path."""
    import predict

    assert predict.main(["--image_dir", str(image_dir), "--save_path", str(save), "--no_report",
                         *map(str, args)]) == 0
    return {r["path"]: r for r in json.loads((save / "scores.json").read_text())["images"]}


def export(out: Path, name: str, *extra: str) -> Path:
    """export.py of the tiny ViT for object ``name`` (torchscript exporter, no check)."""
    import export as exp

    assert exp.main(["--output", str(out), "--object_name", name, *VIT.model_args(84),
                     "--exporter", "torchscript", "--no_verify", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """(zero-shot export of 'bottle', few-shot export of 'screw'), each with thresholds."""
    root = tmp_path_factory.mktemp("exports")
    return (export(root / "bottle.onnx", "bottle", "--image_threshold", "0.9992",
                   "--pixel_threshold", "2.0"),
            export(root / "screw.onnx", "screw", "--reference_dir", str(REFS), *THRESHOLDS))


def same_result(got: dict, want: dict) -> None:
    """A service answer equals predict.py's record of the image bit for bit."""
    assert got["score"] == want["score"], (got["score"], want["score"])
    assert (got["text_score"], got["map_max"]) == (want["text_score"], want["map_max"])
    assert got["anomalous"] == want["anomalous"]
    assert got["regions"] == want.get("regions", [])


# --------------------------------------------------------------------------- torch, exact
def test_torch_few_shot_scores_are_predicts_bit_for_bit(tmp_path):
    folder = images(tmp_path / "images")
    refs = ["--reference_dir", str(REFS)]
    want = predicted(folder, tmp_path / "predict", "--object_name", "bottle", *MODEL, *refs,
                     *THRESHOLDS, "--batch_size", "1")
    with serving([*MODEL, "--object_name", "bottle", *refs, *THRESHOLDS, "--max_batch", "1"]) as s:
        with client(s) as c:
            health = c.get("/health").json()
            assert health["threads"] == torch.get_num_threads() and health["runtime"] == "torch"
            m = health["models"]["bottle"]
            assert (m["mode"], m["image_score"], m["model"]) == ("few_shot", "per_image", "tiny-vit")
            assert m["thresholds"] == {"image": 0.5, "pixel": 1.5, "source": "command line"}
            for name in sorted(want):
                r = post(c, folder / name)
                assert r.status_code == 200, r.text
                same_result(r.json(), want[name])
                assert r.json()["normal_level"] == m["normal_level"] > 0
            assert any(w["anomalous"] for w in want.values()) and \
                not all(w["anomalous"] for w in want.values())
        code = s.stop()
    assert code == 0 and "stopped" in s.log, s.log


# --------------------------------------------------------------------------- two exports
@pytest.fixture(scope="module")
def two(exports, tmp_path_factory):
    """One server of both exports, --max_batch 1, an API key, uploads up to 0.2 MB; and
    predict.py --onnx --batch_size 1's records of the same images."""
    tmp = tmp_path_factory.mktemp("two")
    folder = images(tmp / "images")
    want = {obj: predicted(folder, tmp / obj, "--onnx", str(f), "--batch_size", "1")
            for obj, f in zip(("bottle", "screw"), exports)}
    (tmp / "tmpdir").mkdir()
    args = ["--onnx", *map(str, exports), "--max_batch", "1", "--api_key", KEY,
            "--max_upload_mb", "0.2", "--keep_heatmaps", "8", "--work_dir", tmp / "work"]
    env = {"TMPDIR": str(tmp / "tmpdir"), "APRILGAN_MAX_IMAGE_PIXELS": "300000"}
    with serving(args, env) as s:
        s.tmp_files = sorted((tmp / "tmpdir").rglob("*"))  # what the libraries left at start
        yield s, folder, want


def test_two_exports_score_as_predict_onnx(two):
    server, folder, want = two
    with client(server, KEY) as c:
        health = c.get("/health").json()
        assert health["objects"] == ["bottle", "screw"] and health["runtime"] == "onnxruntime"
        assert health["models"]["bottle"]["thresholds"]["source"].endswith("bottle.onnx (sidecar)")
        assert health["models"]["screw"]["mode"] == "few_shot"
        for obj in ("bottle", "screw"):
            for name in sorted(want[obj]):
                r = post(c, folder / name, object_name=obj)
                assert r.status_code == 200, r.text
                assert r.json()["object_name"] == obj
                same_result(r.json(), want[obj][name])
        r = post(c, folder / "gray16.png")
        assert r.status_code == 422 and "send object_name, one of bottle, screw" in r.json()["error"]
        r = post(c, folder / "gray16.png", object_name="nut")
        assert r.status_code == 422 and "'nut' is not served" in r.json()["error"]


def test_refusals_are_json_naming_the_problem(two):
    server, folder, _ = two
    good = folder / "good_000.png"
    with client(server) as anonymous:
        for path in ("/health", "/heatmaps/" + "0" * 32 + ".png"):
            r = anonymous.get(path)
            assert r.status_code == 401 and "Bearer" in r.json()["error"], path
        r = post(anonymous, good, object_name="bottle")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/").status_code == 200  # the page itself asks for the key
    with client(server, "wrong-key") as c:
        assert post(c, good, object_name="bottle").status_code == 401
    with client(server, KEY) as c:
        big = np.random.default_rng(3).integers(0, 255, (400, 400, 3), dtype=np.uint8)
        path = folder.parent / "big.png"
        Image.fromarray(big).save(path)  # about 480 kB of noise: over 0.2 MB
        r = post(c, path, object_name="bottle")  # refused from its Content-Length
        assert r.status_code == 413 and "0.2 MB (--max_upload_mb)" in r.json()["error"]
        assert r.json()["error"].startswith("the request is 0.4")
        chunks = (bytes(50_000) for _ in range(20))  # no Content-Length: cut off while read
        r = c.post("/score", content=chunks,
                   headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413 and r.json()["error"].startswith("the request is over")
        Image.fromarray(big[:265, :265]).save(path)  # about 211 kB: the image part is over
        assert 200_000 < path.stat().st_size < 260_000
        r = post(c, path, object_name="bottle")
        assert r.status_code == 413 and r.json()["error"].startswith("the image is 0.21 MB")
        r = post(c, "notes.txt", b"a text file, not an image", object_name="bottle")
        assert r.status_code == 415 and "not an image format" in r.json()["error"]
        assert "'notes.txt'" in r.json()["error"]
        cut = good.read_bytes()[:300]
        r = post(c, "cut.png", cut, object_name="bottle")
        assert r.status_code == 422 and "cannot be decoded" in r.json()["error"]
        Image.new("RGB", (800, 600), (90, 90, 90)).save(path)  # 480,000 pixels, a small file
        r = post(c, path, object_name="bottle")
        assert r.status_code == 422 and "480,000 pixels, above the limit of 300,000" in \
            r.json()["error"]
        r = c.post("/score", content=good.read_bytes(), headers={"content-type": "image/png"})
        assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
        r = c.post("/score", files={"picture": ("a.png", good.read_bytes())})
        assert r.status_code == 422 and "no 'image' field" in r.json()["error"]
        r = post(c, good, object_name="bottle", heatmap="svg")
        assert r.status_code == 422 and "url, inline, none" in r.json()["error"]
        assert c.get("/nothing").json() == {"error": "Not Found", "status": 404}


def test_heatmap_urls_serve_only_the_services_own_files(two):
    server, folder, want = two
    with client(server, KEY) as c:
        r = post(c, folder / "broken_large_000.png", object_name="bottle").json()
        assert re.fullmatch(r"/heatmaps/[0-9a-f]{32}\.png", r["heatmap_url"])
        got = c.get(r["heatmap_url"])
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        with Image.open(__import__("io").BytesIO(got.content)) as im:
            assert im.size == (256, 256)  # the 96 px image drawn at least 256 px
        inline = post(c, folder / "broken_large_000.png", object_name="bottle",
                      heatmap="inline").json()
        assert "heatmap_url" not in inline and len(inline["heatmap_png_base64"]) > 1000
        assert "heatmap_url" not in post(c, folder / "gray8.png", object_name="bottle",
                                         heatmap="none").json()
        for bad in ("..%2F..%2Fetc%2Fpasswd", "..%2Fserve.py", "x" * 32 + ".png",
                    "%2E%2E%2F" + r["heatmap_url"][10:]):
            assert c.get("/heatmaps/" + bad).status_code == 404, bad
        for _ in range(8):  # --keep_heatmaps 8: the first one is gone
            post(c, folder / "gray8.png", object_name="bottle")
        assert c.get(r["heatmap_url"]).status_code == 404
    # nothing a client sent was written anywhere but the service's own folder
    work = folder.parent / "work"
    kept = [p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file()]
    assert len(kept) == 8 and all(re.fullmatch(r"heatmaps/[0-9a-f]{32}\.png", k) for k in kept)
    assert sorted((folder.parent / "tmpdir").rglob("*")) == server.tmp_files


def test_a_bad_image_among_16_concurrent_good_ones(two):
    server, folder, want = two
    names = sorted(want["bottle"])
    jobs = [(names[i % len(names)], None) for i in range(13)] + [
        ("bad.png", b"\x89PNG\r\n\x1a\n garbage"), ("bad.txt", b"plain text"),
        ("cut.jpg", (folder / "extra.jpg").read_bytes()[:500])]
    order = np.random.default_rng(5).permutation(len(jobs))
    with client(server, KEY) as c:
        def one(i):
            name, data = jobs[i]
            return name, post(c, folder / name if data is None else name, data,
                              object_name="bottle")

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, order))
        for name, r in answers:
            if name in want["bottle"]:
                assert r.status_code == 200, r.text
                same_result(r.json(), want["bottle"][name])
            else:
                assert r.status_code in (415, 422) and r.json()["error"], (name, r.text)
        assert c.get("/health").json()["models"]["bottle"]["queue"]["pending"] == 0
        assert post(c, folder / names[0], object_name="bottle").status_code == 200
