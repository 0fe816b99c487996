r"""Throughput and latency of serve.py at concurrency 1, 4 and 16, against predict.py's cost per
image measured in the same run.

A serve.py process is started on 127.0.0.1 (a free port; never any other address) with the
model, ``--max_batch`` and ``--max_wait_ms`` given; after ``--warmup`` requests, each level sends
``--requests`` POST /score requests (the images of the fixture's bottle category in turn, the
heatmap made and kept as for a URL), from C client threads each sending its next request when
its last one is answered. Reported per level: images/s (requests / wall time), p50 and p99
latency (ms, from sending to the answer), the mean micro-batch and any refused requests. Then
predict.py scores a folder of ``--requests`` copies of the same images with the same model and
``--batch_size`` = ``--max_batch``, as a process of its own: its seconds per image for the whole
command (start-up included) and for the scoring alone (its own "scored N files in X s" line).
Everything is bounded: a fixed number of requests with a 120 s timeout each, and
``--time_limit`` seconds for the whole run. The load average before and after is recorded.

    python scripts/benchmark_serve.py --quick                 # the tiny test model (default)
    python scripts/benchmark_serve.py --onnx exports/screw.onnx --requests 64 --json serve.json
    python scripts/benchmark_serve.py --model_flags "--checkpoint_path exps/visa.pth \
        --object_name screw" --max_batch 4
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "fixtures" / "golden"
BOTTLE = GOLDEN / "data" / "mvtec" / "bottle"
M = GOLDEN / "models"
TINY = ["--model", "tiny-vit", "--config_path", str(M / "tiny-vit.json"), "--pretrained",
        str(M / "tiny-vit-random.pt"), "--image_size", "84", "--features_list", "2", "4", "6", "8",
        "--checkpoint_path", str(M / "linear-random.pth"), "--object_name", "bottle",
        "--device", "cpu"]
LEVELS = (1, 4, 16)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the tiny test model, 48 requests per "
                   "level (the default model anyway)")
    p.add_argument("--onnx", default=None, help="benchmark this export instead of torch")
    p.add_argument("--model_flags", default=None, help="model flags for both serve.py and "
                   "predict.py instead of the tiny model's (one quoted string)")
    p.add_argument("--requests", type=int, default=None, help="requests per level, and images "
                   "predict.py scores [default: 96; --quick: 48]")
    p.add_argument("--warmup", type=int, default=4, help="untimed requests first [default: 4]")
    p.add_argument("--max_batch", type=int, default=8, help="serve.py --max_batch and "
                   "predict.py --batch_size [default: 8]")
    p.add_argument("--max_wait_ms", type=float, default=10.0, help="serve.py --max_wait_ms "
                   "[default: 10]")
    p.add_argument("--time_limit", type=float, default=900.0, help="seconds for the whole run "
                   "[default: 900]")
    p.add_argument("--json", default=None, help="write the results here too")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter of the serve.py and predict.py processes [default: this one]")
    a = p.parse_args(argv)
    a.requests = a.requests or (48 if a.quick else 96)
    if a.requests < 1 or a.max_batch < 1:
        p.error("--requests and --max_batch take a whole number >= 1")
    return a


def model_flags(a: argparse.Namespace) -> list[str]:
    if a.onnx:
        return ["--onnx", a.onnx]
    return shlex.split(a.model_flags) if a.model_flags else list(TINY)


def start_server(flags: list[str], a: argparse.Namespace, work: Path) -> tuple[subprocess.Popen, str]:
    """serve.py on 127.0.0.1 in a process group of its own; (process, base URL)."""
    proc = subprocess.Popen(
        [a.python, str(REPO / "serve.py"), *flags, "--host", "127.0.0.1", "--port", "0",
         "--max_batch", str(a.max_batch), "--max_wait_ms", str(a.max_wait_ms),
         "--queue_size", "1024", "--work_dir", str(work / "serve")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url, lines = [], []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            found = re.search(r" on (http://127\.0\.0\.1:\d+)/", line)
            if found and not url:
                url.append(found.group(1))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 300
    while not url and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not url:
        stop(proc)
        sys.exit("serve.py did not start:\n" + "".join(lines)[-3000:])
    return proc, url[0]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def level(url: str, files: list[Path], n: int, clients: int, deadline: float) -> dict:
    """``n`` requests from ``clients`` threads; throughput, latency percentiles, refusals."""
    import httpx

    data = [(f.name, f.read_bytes()) for f in files]
    counter, lock, lat, refused = iter(range(n)), threading.Lock(), [], []
    with httpx.Client(base_url=url, timeout=120.0, trust_env=False,
                      limits=httpx.Limits(max_connections=clients + 2)) as c:
        before = c.get("/health").json()

        def worker() -> None:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                name, body = data[i % len(data)]
                t0 = time.perf_counter()
                r = c.post("/score", files={"image": (name, body, "image/png")})
                dt = time.perf_counter() - t0
                with lock:
                    (lat if r.status_code == 200 else refused).append(dt)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            for f in [pool.submit(worker) for _ in range(clients)]:
                f.result()
        wall = time.perf_counter() - t0
        after = c.get("/health").json()
    q0, q1 = (next(iter(h["models"].values()))["queue"] for h in (before, after))
    batches = q1["batches"] - q0["batches"]
    ms = np.array(lat) * 1000
    return {"concurrency": clients, "requests": len(lat) + len(refused), "ok": len(lat),
            "refused": len(refused), "seconds": wall, "images_per_s": len(lat) / wall,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
            "mean_batch": (q1["images"] - q0["images"]) / batches if batches else None}


def predict_cost(flags: list[str], files: list[Path], n: int, a, work: Path) -> dict:
    """predict.py on ``n`` copies of ``files`` in a process of its own: s per image."""
    folder = work / "predict_in"
    folder.mkdir()
    for i in range(n):
        shutil.copy(files[i % len(files)], folder / f"{i:05d}_{files[i % len(files)].name}")
    t0 = time.perf_counter()
    r = subprocess.run([a.python, str(REPO / "predict.py"), *flags, "--image_dir",
                        str(folder), "--save_path", str(work / "predict_out"), "--no_report",
                        "--batch_size", str(a.max_batch)], cwd=REPO, capture_output=True,
                       text=True, timeout=max(60.0, a.time_limit))
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"predict.py failed:\n{r.stderr[-3000:]}")
    found = re.search(r"scored (\d+) of \d+ files in ([\d.]+) s", r.stdout + r.stderr)
    scoring = float(found.group(2)) if found else None
    return {"images": n, "command_seconds": wall, "s_per_image_command": wall / n,
            "scoring_seconds": scoring, "s_per_image_scoring": scoring / n if scoring else None,
            "images_per_s_scoring": n / scoring if scoring else None}


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    flags = model_flags(a)
    files = sorted((BOTTLE / "test").glob("*/*.png")) + sorted((BOTTLE / "train" / "good").glob("*.png"))
    deadline = time.monotonic() + a.time_limit
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="aprilgan-bench-serve-"))
    try:
        proc, url = start_server(flags, a, work)
        try:
            level(url, files, a.warmup, 1, deadline)
            rows = [level(url, files, a.requests, c, deadline) for c in LEVELS]
        finally:
            stop(proc)
        pred = predict_cost(flags, files, a.requests, a, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"model": "tiny (test fixture)" if flags == TINY else " ".join(flags),
              "max_batch": a.max_batch, "max_wait_ms": a.max_wait_ms, "levels": rows,
              "predict": pred, "cpu": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
              "date": time.strftime("%Y-%m-%d %H:%M")}
    print(f"serve.py, {result['model']}, max batch {a.max_batch}, max wait {a.max_wait_ms:g} ms "
          f"(load average {load_before[0]:.1f} before, {result['load_after'][0]:.1f} after)")
    print("| concurrency | images/s | p50 ms | p99 ms | mean batch | refused |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['mean_batch'] or 0:.2f} | {r['refused']} |")
    print(f"predict.py --batch_size {a.max_batch} on {pred['images']} images: "
          f"{pred['s_per_image_command'] * 1000:.1f} ms per image for the whole command, "
          + (f"{pred['s_per_image_scoring'] * 1000:.1f} ms per image scoring "
             f"({pred['images_per_s_scoring']:.1f} images/s)" if pred["scoring_seconds"] else ""))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
