"""Result sets that are whole (``engine.plumbing.result_set``): the lock of a folder in use (this
host, another host, an unreadable lock), staging and one commit, and what a failed or
interrupted run leaves behind."""
from __future__ import annotations

import json
import os

import pytest

from errors import DatasetError, RunLockedError

from engine.plumbing.result_set import FAILED_LOG, JOURNAL, LOCK, ResultSet, recorded


def test_a_training_run_that_fails_in_a_new_folder_leaves_no_folder(tmp_path):
    """train.py writes log.txt straight into --save_path: a failure before any checkpoint
    removes it with the folders the run created."""
    save = tmp_path / "new" / "run"
    with pytest.raises(DatasetError):
        with ResultSet(save, {"n": 1}, staged=False):
            (save / "log.txt").write_text("checking 12 images\n")
            raise DatasetError("mask of 003.png does not match its image")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("exc, status, error", [
    (DatasetError("loss is not finite at step 7"), "failed", "loss is not finite at step 7"),
    (KeyboardInterrupt(), "interrupted", "interrupted")])
def test_a_training_run_that_fails_after_a_checkpoint_records_why(tmp_path, exc, status, error):
    """The checkpoints stay (for --resume) and run.json says how the run ended."""
    save = tmp_path / "run"
    with pytest.raises(type(exc)):
        with ResultSet(save, {"epochs": 3}, staged=False):
            (save / "epoch_1.pth").write_bytes(b"weights")
            raise exc
    run = json.loads((save / "run.json").read_text())
    assert (run["status"], run["files"], run["config"]) == (status, [], {"epochs": 3})
    assert error in run["error"]
    assert (save / "epoch_1.pth").read_bytes() == b"weights" and not (save / LOCK).exists()


@pytest.mark.parametrize("lock", ["folder", "empty"])
def test_a_lock_that_cannot_be_read_still_means_the_folder_is_in_use(tmp_path, lock):
    """A ``.lock`` that cannot be read (a folder) or is empty (a run killed between creating
    and writing it) is somebody's lock: a clear RunLockedError, not a traceback; the lock is
    left as it was."""
    save = tmp_path / "res"
    save.mkdir()
    if lock == "folder":
        (save / LOCK).mkdir()
    else:
        (save / LOCK).write_text("")
    before = None if lock == "folder" else (save / LOCK).read_text()
    with pytest.raises(RunLockedError, match=r"is in use by another run \(pid \? on "):
        with ResultSet(save, {"n": 1}):
            pass
    assert (save / LOCK).is_dir() if lock == "folder" else (save / LOCK).read_text() == before


def test_a_training_run_that_commits_stays_complete(tmp_path):
    """train.py (not staged): after commit() and a clean exit run.json says complete."""
    save = tmp_path / "run"
    with ResultSet(save, {"epochs": 1}, staged=False) as rs:
        (save / "epoch_1.pth").write_bytes(b"weights")
        rs.commit({"epochs_done": 1})
    run = json.loads((save / "run.json").read_text())
    assert (run["status"], run["epochs_done"]) == ("complete", 1) and "error" not in run
    assert {p.name for p in save.iterdir()} == {"epoch_1.pth", "run.json"}


@pytest.mark.parametrize("records", [False, True])
def test_a_streaming_run_that_fails_keeps_its_staging_only_with_records(tmp_path, records):
    """predict.py (a fingerprint): with records written, the staging folder stays for --resume;
    before the first record it goes and the folder that was there gets log.failed.txt."""
    save = tmp_path / "res"
    save.mkdir()
    with pytest.raises(DatasetError):
        with ResultSet(save, {"n": 1}, fingerprint={"images": 3}) as rs:
            if records:
                (rs.dir / "records.jsonl").write_text('{"path": "a.png"}\n')
            raise DatasetError("cannot read b.png")
    staging = [p.name for p in save.glob(".staging-*")]
    assert len(staging) == (1 if records else 0)
    assert (save / FAILED_LOG).exists() == (not records)
    if not records:
        assert "error: cannot read b.png" in (save / FAILED_LOG).read_text()


def test_a_training_run_that_fails_in_an_existing_folder_records_why(tmp_path):
    """A folder that was there before the run stays, with a run.json that says it failed."""
    save = tmp_path / "run"
    save.mkdir()
    with pytest.raises(DatasetError):
        with ResultSet(save, {"epochs": 3}, staged=False):
            raise DatasetError("no images in train/good")
    run = json.loads((save / "run.json").read_text())
    assert run["status"] == "failed" and "no images in train/good" in run["error"]
    assert {p.name for p in save.iterdir()} == {"run.json"}


def test_a_result_set_is_replaced_as_a_whole(tmp_path):
    save = tmp_path / "res"
    with ResultSet(save, {"n": 1}) as rs:
        for name in ("metrics.json", "predictions.npz"):
            (rs.dir / name).write_text("old")
        rs.commit()
    with ResultSet(save, {"n": 2}) as rs:
        (rs.dir / "metrics.json").write_text("new")
        (save / "metrics.json").read_text() == "old"  # untouched until the commit
        rs.commit()
    assert (save / "metrics.json").read_text() == "new"
    assert not (save / "predictions.npz").exists()  # the old set's file went with it
    # a commit killed half-way (journal written, one file moved) is finished at the next start
    with ResultSet(save, {"n": 3}) as rs:
        (rs.dir / "metrics.json").write_text("third")
        (rs.dir / "thresholds.json").write_text("third")
        rs._write_run_json("complete", ["metrics.json", "thresholds.json"], None)
        plan = {"staging": rs.dir.name, "remove": [], "move": ["metrics.json", "thresholds.json",
                                                               "run.json"]}
        (save / JOURNAL).write_text(json.dumps(plan))
        os.replace(rs.dir / "metrics.json", save / "metrics.json")
        rs.committed = True  # the process dies here: no cleanup
        (save / LOCK).unlink()
    with ResultSet(save, {"n": 4}):
        assert (save / "thresholds.json").read_text() == "third"
        assert json.loads((save / "run.json").read_text())["config"] == {"n": 3}
        assert not (save / JOURNAL).exists()


def test_a_failed_run_leaves_no_new_folder_and_no_empty_log(tmp_path):
    """A run that fails before any result leaves no folder it created; beside an earlier set it
    leaves log.failed.txt holding the error and the command, which the next set removes."""
    from errors import DatasetError
    from utils.log import setup_logging

    from engine.plumbing.result_set import FAILED_LOG

    save = tmp_path / "new" / "res"
    with pytest.raises(DatasetError):
        with ResultSet(save, {"n": 1}) as rs:
            setup_logging(rs.dir)  # log.txt opened, nothing written yet
            raise DatasetError("no images in my_dir")
    assert not (tmp_path / "new").exists()
    with ResultSet(save, {"n": 2}) as rs:  # an earlier set, then a failure beside it
        (rs.dir / "metrics.json").write_text("{}")
        rs.commit()
    with pytest.raises(DatasetError):
        with ResultSet(save, {"n": 3}) as rs:
            setup_logging(rs.dir).info("scoring 3 files")
            raise DatasetError("no images in my_dir")
    text = (save / FAILED_LOG).read_text()
    assert "error: no images in my_dir" in text and "command: " in text
    assert "scoring 3 files" in text
    assert {p.name for p in save.iterdir()} == {"metrics.json", "run.json", FAILED_LOG}
    with ResultSet(save, {"n": 4}) as rs:
        (rs.dir / "metrics.json").write_text("{}")
        rs.commit()
    assert not (save / FAILED_LOG).exists()  # an earlier attempt's log is not part of this set
    assert json.loads((save / "run.json").read_text())["files"] == ["metrics.json"]
    setup_logging(None)


@pytest.mark.parametrize("pid", ["dead", "mine", "missing"])
def test_a_lock_of_another_host_is_never_taken_over(tmp_path, pid):
    """On a shared disk the pid of a run on another machine says nothing about this one."""
    from errors import RunLockedError

    save = tmp_path / "res"
    save.mkdir()
    other = {"host": "not-" + os.uname().nodename, "started": "2026-01-01T00:00:00"}
    if pid != "missing":
        other["pid"] = 2 ** 22 + 12345 if pid == "dead" else os.getpid()
    (save / LOCK).write_text(json.dumps(other))
    with pytest.raises(RunLockedError, match=other["host"]):
        with ResultSet(save, {"n": 1}):
            pass
    assert json.loads((save / LOCK).read_text()) == other  # left exactly as it was


def test_a_lock_on_this_host_is_taken_over_only_when_its_process_is_gone(tmp_path):
    from errors import RunLockedError

    save = tmp_path / "res"
    save.mkdir()
    host = os.uname().nodename
    (save / LOCK).write_text(json.dumps({"host": host, "pid": os.getpid()}))  # alive: refused
    with pytest.raises(RunLockedError, match="in use by another run"):
        with ResultSet(save, {"n": 1}):
            pass
    (save / LOCK).write_text(json.dumps({"host": host, "pid": 2 ** 22 + 12345}))  # gone
    with ResultSet(save, {"n": 2}) as rs:
        assert json.loads((save / LOCK).read_text())["pid"] == os.getpid()
        rs.commit()
    assert not (save / LOCK).exists()


def test_recorded_counts_each_scored_image_once_and_reads_past_what_it_cannot(tmp_path):
    """records-r0.jsonl is a folder (cannot be read); r1 holds a.png twice, b.png unreadable,
    a record without a path, a JSON list and a line cut by a kill; r2 holds c.png: 2 images."""
    (tmp_path / "records-r0.jsonl").mkdir()
    (tmp_path / "records-r1.jsonl").write_text("\n".join([
        json.dumps({"path": "a.png", "text_score": 0.1}),
        json.dumps({"path": "b.png", "error": "cannot identify image file"}),
        json.dumps({"text_score": 0.3}), "[1, 2]",
        json.dumps({"path": "a.png", "text_score": 0.1}), '{"path": "d.pn']))
    (tmp_path / "records-r2.jsonl").write_text(json.dumps({"path": "c.png"}) + "\n")
    assert recorded(tmp_path) == 2
    assert recorded(tmp_path / "absent") == 0
