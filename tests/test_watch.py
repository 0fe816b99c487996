"""serve.py --watch DIR --save_path OUT as a real process: every image in DIR and every one
that appears later is scored exactly once, across a kill -9 and a restart, into the files
predict.py writes (scores bit for bit at --max_batch 1, the same regions, heatmaps and masks);
hidden files and temporary names are never read; a file still being written is read only once
it is complete, with file events (and the HTTP service beside) and by scanning alone."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
from PIL import Image
from test_serve import BOTTLE, MODEL, REFS, client, post, predicted, serving

THR = ["--image_threshold", "0.9992", "--pixel_threshold", "2.0"]
SOURCES = sorted((BOTTLE / "test").glob("*/*.png")) + sorted(REFS.glob("*.png"))
WATCHING = r"watching .* for 'bottle'"


def watch_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return [*MODEL, "--object_name", "bottle", *THR, "--max_batch", "1", "--watch", str(folder),
            "--save_path", str(out), "--settle_s", "0.3", "--poll_s", "0.5", *extra]


def ledger(out: Path) -> list[dict]:
    if not (out / "ledger.jsonl").is_file():
        return []
    lines = (out / "ledger.jsonl").read_text().splitlines()[1:]
    return [json.loads(line) for line in lines if line.strip()]


def wait_until(what, timeout: float = 240.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def add_images(folder: Path, first: int, n: int) -> list[str]:
    names = []
    for i in range(first, first + n):
        names.append(f"img_{i:03d}.png")
        shutil.copy(SOURCES[i % len(SOURCES)], folder / names[-1])
    return names


def same_as_predict(out: Path, names: list[str], tmp: Path) -> None:
    """OUT holds, for exactly ``names``, what predict.py --batch_size 1 writes for them."""
    ref_in = tmp / "ref_in"
    ref_in.mkdir()
    for n in names:
        shutil.copy(out.parent / "in" / n, ref_in / n)
    want = predicted(ref_in, tmp / "ref_out", *MODEL, "--object_name", "bottle", *THR,
                     "--batch_size", "1")
    got = rows(out / "scores.csv")
    assert got[0] == ["path", "score", "anomalous"]
    assert sorted(r[0] for r in got[1:]) == sorted(names)  # each exactly once
    recs = {r["path"]: r for r in ledger(out) if "error" not in r}
    assert len([r for r in ledger(out) if "error" not in r]) == len(names) == len(recs)
    for n in names:
        assert recs[n]["score"] == want[n]["score"], n  # bit for bit
        assert recs[n]["anomalous"] == want[n]["anomalous"]
        for kind in ("heatmap", "mask"):
            a, b = (np.asarray(Image.open(d / r[kind])) for d, r in
                    ((out, recs[n]), (tmp / "ref_out", want[n])))
            assert a.shape == b.shape and np.array_equal(a, b), (n, kind)
    predict_rows = rows(tmp / "ref_out" / "regions.csv")
    assert sorted(rows(out / "regions.csv")[1:]) == sorted(predict_rows[1:])
    assert rows(out / "regions.csv")[0] == predict_rows[0]
    by_path = {r[0]: r for r in rows(tmp / "ref_out" / "scores.csv")[1:]}
    assert sorted(got[1:]) == sorted(by_path[n] for n in names)  # the same rows, formatted


def test_every_image_once_across_a_kill_and_a_restart(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    names = add_images(folder, 0, 24)  # one at a time (--max_batch 1): killed after 6
    (folder / ".hidden.png").write_bytes((folder / names[0]).read_bytes())
    (folder / "next.png.part").write_bytes((folder / names[1]).read_bytes())
    (folder / "~lock.png").write_bytes((folder / names[2]).read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    shutil.copy(SOURCES[0], folder / "sub" / "deep.png")  # no --recursive: not read
    with serving(watch_args(folder, out, "--no_http"), ready=WATCHING) as s:
        wait_until(lambda: len(ledger(out)) >= 6)
        os.killpg(s.proc.pid, signal.SIGKILL)  # mid-run, no clean-up
        assert s.proc.wait(30) == -signal.SIGKILL
    done = len(ledger(out))
    assert 6 <= done < 25, done  # killed with images left
    names += add_images(folder, 24, 4)  # arrive while it is down
    (folder / "late.png.tmp").write_bytes((folder / names[3]).read_bytes())
    with serving(watch_args(folder, out, "--no_http"), ready=WATCHING) as s:
        os.rename(folder / "late.png.tmp", folder / "late.png")  # delivered by a rename
        names.append("late.png")
        names += add_images(folder, 28, 3)  # arrive while it runs
        wait_until(lambda: len(rows(out / "scores.csv")) == len(names) + 1)
        time.sleep(1.0)  # two more scans: nothing else may be scored
        code = s.stop()
    assert code == 0 and "already scored there" in s.log, s.log
    assert [r["path"] for r in ledger(out)].count("notes.txt") == 1
    assert rows(out / "skipped.csv")[1][0] == "notes.txt"
    paths = [r["path"] for r in ledger(out)]
    assert len(paths) == len(set(paths)) == len(names) + 1  # nothing repeated, notes.txt once
    same_as_predict(out, names, tmp_path)


def _half_written(folder: Path, name: str):
    """``name`` opened for writing with half its bytes; returns (file, the rest)."""
    data = SOURCES[5].read_bytes()
    f = open(folder / name, "wb")
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    return f, data[len(data) // 2:]


def test_a_file_being_written_waits_for_its_close_with_the_service_beside(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    names = add_images(folder, 0, 2)
    with serving(watch_args(folder, out)) as s:
        wait_until(lambda: len(ledger(out)) == 2)
        f, rest = _half_written(folder, "slow.png")
        try:
            time.sleep(2.0)  # six settle times with the file open and unchanged
            assert [r["path"] for r in ledger(out)] == names  # not read, not refused
        finally:
            f.write(rest)
            f.close()
        rec = wait_until(lambda: [r for r in ledger(out) if r["path"] == "slow.png"])
        with client(s) as c:  # the HTTP service runs beside the watch
            r = post(c, folder / "slow.png")
            assert r.status_code == 200 and r.json()["score"] == rec[0]["score"]
        assert len(ledger(out)) == 3 and "error" not in rec[0]
    same_as_predict(out, names + ["slow.png"], tmp_path)


def test_scanning_alone_reads_a_slow_file_again_until_it_is_whole(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    names = add_images(folder, 0, 2)
    with serving(watch_args(folder, out, "--no_http", "--watch_polling"), ready=WATCHING) as s:
        assert "a scan every 0.5 s" in s.log and "file events" not in s.log
        wait_until(lambda: len(ledger(out)) == 2)
        f, rest = _half_written(folder, "slow.png")
        time.sleep(2.0)  # long enough to be read cut short: refused, kept for a change
        f.write(rest)
        f.close()
        wait_until(lambda: "slow.png" in [r[0] for r in rows(out / "scores.csv")[1:]])
        (folder / "notes.txt").write_text("not an image")
        wait_until(lambda: any(r["path"] == "notes.txt" for r in ledger(out)))
        time.sleep(1.0)  # two more scans: slow.png is not scored again
    scored = [r for r in ledger(out) if r["path"] == "slow.png" and "error" not in r]
    assert len(scored) == 1
    assert [r[0] for r in rows(out / "skipped.csv")[1:]] == ["notes.txt"]
    same_as_predict(out, names + ["slow.png"], tmp_path)
