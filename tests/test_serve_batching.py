"""serve.py under load, a real server on a loopback port: micro-batched requests (--max_batch
4) score within the stated tolerance of predict.py (1e-5; the verdict is predict.py's but for a
score that close to the threshold) and really share forward passes; a full queue answers 503
with Retry-After and serves again once it drains."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from test_serve import client, exports, images, post, predicted, serving  # noqa: F401

from engine.serve.serving import SCORE_TOLERANCE


def test_sixteen_concurrent_requests_are_batched_within_the_tolerance(exports, tmp_path):
    folder = images(tmp_path / "images")
    want = {obj: predicted(folder, tmp_path / obj, "--onnx", str(f))  # --batch_size 8
            for obj, f in zip(("bottle", "screw"), exports)}
    names = sorted(want["bottle"])
    jobs = [(obj, names[i % len(names)]) for i in range(8) for obj in ("bottle", "screw")]
    with serving(["--onnx", *map(str, exports), "--max_batch", "4", "--max_wait_ms", "200"]) as s:
        with client(s) as c:
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda j: (j, post(c, folder / j[1], object_name=j[0])),
                                        jobs))
            health = c.get("/health").json()
    assert health["score_tolerance"] == SCORE_TOLERANCE == 1e-5
    for (obj, name), r in answers:
        assert r.status_code == 200, r.text
        got, rec = r.json(), want[obj][name]
        assert abs(got["score"] - rec["score"]) <= SCORE_TOLERANCE, (obj, name)
        thr = got["image_threshold"]
        if abs(rec["score"] - thr) > SCORE_TOLERANCE:
            assert got["anomalous"] == rec["anomalous"], (obj, name)
        assert abs(got["map_max"] - rec["map_max"]) <= 1e-4
    queues = [health["models"][o]["queue"] for o in ("bottle", "screw")]
    assert sum(q["images"] for q in queues) == 16 and all(q["pending"] == 0 for q in queues)
    assert any(q["batches"] < q["images"] for q in queues), queues  # passes were shared
    assert max(r.json()["batch"] for _, r in answers) > 1


def test_a_full_queue_answers_503_with_retry_after(exports, tmp_path):
    """Two images held by a batch that waits 4 s for a third fill a queue of 2: the next
    request is refused at once; the two are scored; then the service takes requests again."""
    folder = images(tmp_path / "images")
    good = folder / "good_000.png"
    args = ["--onnx", str(exports[0]), "--queue_size", "2", "--max_batch", "3",
            "--max_wait_ms", "4000"]
    with serving(args) as s, client(s) as c, ThreadPoolExecutor(2) as pool:
        held = [pool.submit(post, c, good) for _ in range(2)]
        deadline = time.monotonic() + 60
        while c.get("/health").json()["models"]["bottle"]["queue"]["pending"] < 2:
            assert time.monotonic() < deadline, "the two requests never queued"
            time.sleep(0.05)
        r = post(c, good)
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert "the queue holds 2" in r.json()["error"] and r.json()["status"] == 503
        first = [h.result(120) for h in held]
        assert [x.status_code for x in first] == [200, 200]
        assert [x.json()["batch"] for x in first] == [2, 2]  # one pass after the wait
        assert np.isclose(first[0].json()["score"], first[1].json()["score"], rtol=0, atol=SCORE_TOLERANCE)
        assert post(c, good, heatmap="none").status_code == 200


def test_the_benchmark_reports_three_concurrencies_and_predicts_cost(tmp_path, warm_python):
    import importlib.util
    import json

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("benchmark_serve",
                                                  REPO / "scripts" / "benchmark_serve.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "serve.json"
    assert bench.main(["--quick", "--requests", "6", "--warmup", "1", "--max_batch", "2",
                       "--json", str(out), "--python", warm_python.ready()]) == 0
    result = json.loads(out.read_text())
    assert [r["concurrency"] for r in result["levels"]] == [1, 4, 16]
    for r in result["levels"]:
        assert r["ok"] == 6 and r["refused"] == 0 and r["images_per_s"] > 0
        assert 0 < r["p50_ms"] <= r["p99_ms"]
    assert result["predict"]["images"] == 6 and result["predict"]["s_per_image_scoring"] > 0
    assert len(result["load_before"]) == 3


def test_one_thresholds_file_for_several_exports_gives_each_its_entry(exports, tmp_path):
    """--thresholds with two exports: each object takes its own entry (over its sidecar's);
    an object the file lacks is one error line naming it."""
    import json

    import pytest

    from errors import DatasetError
    from utils.cli import parse_config
    from utils.log import setup_logging

    from engine.config import ServeConfig
    from engine.serve.serving import Service

    thr = tmp_path / "thresholds.json"
    thr.write_text(json.dumps({"per_category": {"bottle": {"image": 0.25, "pixel": 1.25},
                                                "screw": {"image": 0.75, "pixel": 2.75}}}))
    argv = ["--onnx", *map(str, exports), "--thresholds", str(thr), "--work_dir",
            str(tmp_path / "w")]
    service = Service(parse_config(ServeConfig, argv, "serve.py", "x"), setup_logging())
    try:
        got = {n: m["thresholds"] for n, m in service.health()["models"].items()}
    finally:
        service.close()
    assert {n: (t["image"], t["pixel"]) for n, t in got.items()} == \
        {"bottle": (0.25, 1.25), "screw": (0.75, 2.75)}
    assert all(t["source"] == f"{thr.resolve()} [{n}]" for n, t in got.items())
    thr.write_text(json.dumps({"per_category": {"bottle": {"image": 0.25, "pixel": 1.25}}}))
    with pytest.raises(DatasetError, match="no thresholds for 'screw'"):
        Service(parse_config(ServeConfig, argv, "serve.py", "x"), setup_logging())
