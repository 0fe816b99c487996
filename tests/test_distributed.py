"""torchrun with 2 CPU processes (gloo, loopback, tiny model): the same results as one process,
a resumable sharded predict.py, DDP training equal to one process, and a failing rank that ends
the run instead of hanging."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GOLDEN, REPO, VIT, copy_dataset, require

BOTTLE = GOLDEN / "data" / "mvtec" / "bottle"
TIMEOUT = 300


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


WARM: dict = {}


@pytest.fixture(autouse=True)
def _warm_python(warm_python):
    """Ranks (and torchrun itself, unless a test signals its processes) start in the tests' fork
    server: real processes, without the torch import of each."""
    WARM.update(python=warm_python.ready(), env=warm_python.env(_env()))


def torchrun(script: str, *args: str, n: int = 2, cwd: Path, wait: bool = True):
    """``torchrun --nproc_per_node N SCRIPT ARGS`` (``wait=False``: started, not waited for)."""
    python = WARM["python"]
    cmd = [python, "-m", "torch.distributed.run", "--no-python",
           "--nproc_per_node", str(n), "--master_addr", "127.0.0.1", "--master_port",
           str(_port()), python, str(REPO / script), *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=WARM["env"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return subprocess.run(cmd, cwd=cwd, env=WARM["env"], capture_output=True, text=True,
                          timeout=TIMEOUT)


def single(script: str, *args: str, cwd: Path):
    """The one-process baseline, run in this process (``main(argv)``, no start-up cost) with
    one torch thread like each rank, so the two runs do the same float operations."""
    from conftest import load_repo_test_module

    import predict
    import train

    main = {"test.py": load_repo_test_module().main, "train.py": train.main,
            "predict.py": predict.main}[script]
    here, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(cwd)
    torch.set_num_threads(1)
    try:
        code = main([str(a) for a in args])
    finally:
        torch.set_num_threads(threads)
        os.chdir(here)
    return subprocess.CompletedProcess([script, *args], code, "", "")


def run_processes(marker: Path) -> dict[int, str]:
    """pid -> command line of every process whose command line names ``marker`` (a path only
    one run uses): the torchrun launcher and its ranks, found by name whatever their parent
    (the ranks of a warm torchrun are not its children)."""
    out = subprocess.run(["pgrep", "-af", re.escape(str(marker))], capture_output=True,
                         text=True).stdout
    found = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    return {int(p): c for p, c in found.items() if "pgrep" not in c}


def ranks_of(marker: Path) -> list[int]:
    return sorted(p for p, c in run_processes(marker).items() if "torch.distributed.run" not in c)


def kill_all(proc, marker: Path) -> None:
    """SIGKILL torchrun and its ranks (a killed warm process takes its command with it)."""
    for pid in [proc.pid, *run_processes(marker)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)
    time.sleep(0.5)


def _ok(r) -> None:
    assert r.returncode == 0, (r.stdout or "")[-3000:] + (r.stderr or "")[-3000:]


@pytest.fixture(scope="module", autouse=True)
def _needs_fixtures():
    require(VIT.weights, VIT.data("mvtec") / "meta.json")


@pytest.mark.parametrize("mode", ["zero_shot", "few_shot"])
def test_evaluation_with_two_processes_equals_one(tmp_path, mode):
    """Bit-equal metrics, and the gathered predictions in the one-process order: each image's
    path with its own score, label and map, with shards of unequal size (a category of 5)."""
    data = copy_dataset("mvtec", tmp_path / "data")
    meta = json.loads((data / "meta.json").read_text())
    first = next(iter(meta["test"]))
    meta["test"][first] = meta["test"][first][:-1]  # an odd count: shards of 3 and 2
    (data / "meta.json").write_text(json.dumps(meta))
    extra = ["--k_shot", "1", "2", "--seed", "1", "2"] if mode == "few_shot" else []
    args = VIT.args("mvtec", tmp_path / "X", mode, "--no_report", "--save_predictions", *extra)
    args[args.index("--data_path") + 1] = str(data)
    one = [a if a != str(tmp_path / "X") else str(tmp_path / "one") for a in args]
    two = [a if a != str(tmp_path / "X") else str(tmp_path / "two") for a in args]
    _ok(single("test.py", *one, cwd=tmp_path))
    _ok(torchrun("test.py", *two, cwd=tmp_path))
    runs = ["k1_seed1", "k1_seed2", "k2_seed1", "k2_seed2"] if mode == "few_shot" else ["."]
    for r in runs:
        a = json.loads((tmp_path / "one" / r / "metrics.json").read_text())
        b = json.loads((tmp_path / "two" / r / "metrics.json").read_text())
        assert a == b  # bit-equal on the CPU with gloo
        pa, pb = (np.load(tmp_path / d / r / "predictions.npz") for d in ("one", "two"))
        expected = [e["img_path"] for c in meta["test"].values() for e in c]
        assert list(pa["img_paths"]) == list(pb["img_paths"]) == expected
        for key in ("cls_names", "gt_sp", "pr_sp", "anomaly_maps"):
            np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)
    assert not (tmp_path / "two" / ".lock").exists()


def _predict_args(image_dir: Path, save: Path) -> list[str]:
    return ["--image_dir", str(image_dir), "--recursive", "--object_name", "bottle",
            "--save_path", str(save), "--reference_dir", str(BOTTLE / "train" / "good"),
            "--batch_size", "2", "--no_report", *VIT.model_args(84)]


@pytest.fixture
def big_folder(tmp_path) -> Path:
    """48 images (the bottle test images, copied), so a run can be killed part-way."""
    d = tmp_path / "many"
    d.mkdir()
    src = sorted((BOTTLE / "test").rglob("*.png"))
    for i in range(48):
        shutil.copy(src[i % len(src)], d / f"{i:04d}.png")
    return d


def test_sharded_predict_equals_one_process_and_resumes_after_a_kill(tmp_path, big_folder):
    _ok(single("predict.py", *_predict_args(big_folder, tmp_path / "one"), cwd=tmp_path))
    save = tmp_path / "two"
    proc = torchrun("predict.py", *_predict_args(big_folder, save), cwd=tmp_path, wait=False)
    t0 = time.time()
    while time.time() - t0 < TIMEOUT:  # kill the whole run once some records are on disk
        lines = sum(len(f.read_text().splitlines()) for f in save.glob(".staging-*/records-r*"))
        if lines >= 8 or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    kill_all(proc, save)
    assert not (save / "scores.csv").exists()
    left = sorted(str(p.relative_to(save)) for p in save.rglob("*") if "heatmaps" not in p.parts)
    assert any(p.endswith("progress.json") for p in left), left
    r = torchrun("predict.py", *_predict_args(big_folder, save), "--resume", cwd=tmp_path)
    _ok(r)
    assert "resuming" in r.stdout + r.stderr
    assert (save / "scores.csv").read_text() == (tmp_path / "one" / "scores.csv").read_text()
    rows = (save / "scores.csv").read_text().splitlines()[1:]
    assert len(rows) == len({r.split(",")[0] for r in rows}) == 48  # none lost, none twice


def test_a_failing_rank_ends_the_run(tmp_path, big_folder):
    proc = torchrun("predict.py", *_predict_args(big_folder, tmp_path / "out"), cwd=tmp_path,
                    wait=False)
    t0 = time.time()
    while time.time() - t0 < TIMEOUT and not list((tmp_path / "out").glob(".staging-*/records-r1*")):
        time.sleep(0.2)
    ranks = ranks_of(tmp_path / "out")
    assert len(ranks) == 2, run_processes(tmp_path / "out")
    os.kill(ranks[-1], signal.SIGKILL)  # one rank dies
    t1 = time.time()
    code = proc.wait(timeout=120)
    assert code != 0 and time.time() - t1 < 120


def _train_args(*extra: str, batch_size: int = 4) -> list[str]:
    """train.py on the fixture's MVTec data with the tiny ViT (batch 4: 2 per rank with 2)."""
    return ["--dataset", "mvtec", "--train_data_path", str(VIT.data("mvtec")), "--model",
            VIT.model_name, "--config_path", str(VIT.config), "--pretrained", str(VIT.weights),
            "--image_size", "84", "--features_list", *map(str, VIT.stages), "--device", "cpu",
            *extra, "--batch_size", str(batch_size)]


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["trainable_linearlayer"]


def _gap(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_ddp_training_equals_one_process(tmp_path):
    base = _train_args("--aug_rate", "0.5")

    def ckpt(folder: str, epoch: int) -> dict:
        return _weights(tmp_path / folder / f"epoch_{epoch}.pth")

    init = ["--epoch", "2", "--init_checkpoint", str(VIT.checkpoint)]
    _ok(single("train.py", *base, *init, "--save_path", str(tmp_path / "one"), cwd=tmp_path))
    _ok(torchrun("train.py", *base, *init, "--save_path", str(tmp_path / "two"), cwd=tmp_path))
    for epoch in (1, 2):  # the same global batches, sample order and mosaics
        assert _gap(ckpt("one", epoch), ckpt("two", epoch)) <= 1e-6
    # resume across world sizes: the 2-process run continued by 1 process = 1 process alone
    for folder in ("one", "two"):
        _ok(single("train.py", *base, "--epoch", "3", "--save_path", str(tmp_path / folder),
                   "--resume", str(tmp_path / folder / "epoch_2.pth"), cwd=tmp_path))
    assert _gap(ckpt("one", 3), ckpt("two", 3)) <= 1e-6


def test_a_global_batch_that_does_not_split_is_refused(tmp_path, capsys, monkeypatch):
    """--batch_size 3 over 2 processes: one error line (checked in one process that sees the
    world size torchrun would give it, before any collective call)."""
    import train

    from engine.plumbing import distributed

    monkeypatch.setattr(distributed, "current", lambda: distributed.Dist(0, 2, 0))
    code = train.main(_train_args("--epoch", "1", batch_size=3) + ["--save_path",
                                                                   str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and "--batch_size 3" in err and "2 processes" in err
    assert not list((tmp_path / "bad").glob("epoch_*.pth"))


def test_ddp_normal_only_training_equals_one_process(tmp_path):
    """Synthesized anomalies are drawn per (seed, epoch, index): sharding does not change them."""
    base = _train_args("--train_split", "train", "--synthesize_anomalies", "0.5", "--epoch", "1",
                       "--init_checkpoint", str(VIT.checkpoint))
    _ok(single("train.py", *base, "--save_path", str(tmp_path / "one"), cwd=tmp_path))
    _ok(torchrun("train.py", *base, "--save_path", str(tmp_path / "two"), cwd=tmp_path))
    one, two = (_weights(tmp_path / f / "epoch_1.pth") for f in ("one", "two"))
    assert _gap(one, two) <= 1e-6
    assert _gap(one, _weights(VIT.checkpoint)) > 1e-4  # it trained
