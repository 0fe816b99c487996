"""Result sets that are whole: a lock, a staging folder, one commit, a ``run.json``.

A run of test.py or predict.py writes every result file into ``<save>/.staging-<id>/`` and,
at the end, moves them into ``<save>`` together: the files of the previous result set (listed
in its ``run.json``) are removed and the new ones moved in, following a journal
(``<save>/.commit.json``), so a commit killed half-way is finished at the next start and a
folder never mixes two runs. ``<save>/.lock`` (pid and host) makes a second run into the same
folder fail at once; a lock whose process is gone, and staging folders it left, are cleaned at
the next start. ``run.json`` records the command, the config, the versions, start and end time,
the status and the files of the set. train.py takes the lock and writes ``run.json`` too, but
its checkpoints go straight into ``<save>`` (each one atomic) so that ``--resume`` finds them
after a kill.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import socket
import sys
import uuid
from pathlib import Path
from typing import IO, Any

from errors import ConfigError, EnvironmentFault, Interrupted, RunLockedError, one_line, os_fault
from utils.io import atomic_write_json, atomic_write_text

LOCK, JOURNAL, RUN_JSON, PROGRESS = ".lock", ".commit.json", "run.json", "progress.json"
FAILED_LOG = "log.failed.txt"


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "open_clip", "numpy"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


def check_output_folder(save: Path, flag: str = "--save_path") -> None:
    """ConfigError/EnvironmentFault now when ``save`` cannot hold results (a file, unwritable)."""
    if save.exists() and not save.is_dir():
        raise ConfigError(f"{flag} {save} is a file, not a folder: pass a folder")
    try:
        save.mkdir(parents=True, exist_ok=True)
        probe = save / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise os_fault(e, save) from e


def check_free_space(folder: Path, need: int, what: str) -> None:
    """EnvironmentFault now when ``folder``'s disk has less than ``need`` bytes free."""
    free = shutil.disk_usage(folder).free
    if need > 0.98 * free:
        raise EnvironmentFault(f"{what} need about {need / 2**30:.2f} GiB but only "
                               f"{free / 2**30:.2f} GiB is free under {folder}: free space or "
                               "pick another --save_path")


class ResultSet:
    """``with ResultSet(save, config) as rs:`` write into ``rs.dir``; ``rs.commit()`` at the end.

    Args:
        save: the output folder (``--save_path``).
        config: the resolved settings (recorded in run.json).
        staged: False for train.py (files go straight into ``save``; lock and run.json only).
    """

    def __init__(self, save: str | Path, config: dict, staged: bool = True, dist=None,
                 fingerprint: dict | None = None, resume: bool = False, restart: bool = False):
        self.save = Path(save)
        self.config, self.staged = config, staged
        self.dist = dist  # engine.plumbing.distributed.Dist: rank 0 locks, stages and commits
        # a streaming run (predict.py) records its settings; with resume it continues the
        # staging folder a killed run with the same settings left; without resume or restart
        # such a folder is refused (restart discards it)
        self.fingerprint, self.resume, self.resumed = fingerprint, resume, False
        self.restart = restart
        self.id = f"{dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        self.dir = self.save / f".staging-{self.id}" if staged else self.save
        self.started = _now()
        self.committed = False

    @property
    def main(self) -> bool:
        return self.dist is None or self.dist.main

    # ------------------------------------------------------------------ lock and clean-up
    def __enter__(self) -> "ResultSet":
        if not self.main:  # other ranks write into rank 0's staging folder
            self.dir = Path(self.dist.broadcast(None))
            return self
        self.created = _missing_folders(self.save)  # removed again if the run fails early
        check_output_folder(self.save)
        self._lock()
        try:
            self._recover()
            if self.staged and not self.resumed:
                self.dir.mkdir()
                if self.fingerprint is not None:
                    atomic_write_json(self.dir / PROGRESS, {"fingerprint": self.fingerprint})
        except BaseException:
            self._unlock()
            if self.dist is not None and self.dist.enabled:
                self.dist.broadcast(None)
            raise
        if self.dist is not None:
            self.dist.broadcast(str(self.dir))
        return self

    def _resumable(self) -> Path | None:
        """The staging folder of a killed run with the same settings (``--resume``)."""
        found = []
        for p in self.save.glob(".staging-*"):
            try:
                old = json.loads((p / PROGRESS).read_text())["fingerprint"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if old == self.fingerprint:
                found.append(p)
            else:
                new = self.fingerprint or {}
                unknown = sorted(set(new) - set(old))  # settings the killed run's version lacked
                if unknown:
                    raise ConfigError(
                        f"--resume: the interrupted run in {p} was made by an older version "
                        f"(it records no {', '.join(unknown)}); pass --restart instead of "
                        "--resume to start again")
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise ConfigError(f"--resume: the interrupted run in {p} used other settings "
                                  f"(differs in: {', '.join(diff)}); rerun it with those, or "
                                  "pass --restart instead of --resume to start again")
        return max(found, key=lambda p: p.stat().st_mtime) if found else None

    def _lock(self) -> None:
        path = self.save / LOCK
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": self.started,
              "command": " ".join(sys.argv)}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    other = json.loads(path.read_text())
                except (OSError, ValueError):
                    other = {}
                if other.get("host") == socket.gethostname() and not _alive(int(other.get("pid", -1))):
                    path.unlink(missing_ok=True)  # left by a run that was killed
                    continue
                raise RunLockedError(
                    f"{self.save} is in use by another run (pid {other.get('pid', '?')} on "
                    f"{other.get('host', '?')}, started {other.get('started', '?')}); wait for it, "
                    f"pick another --save_path, or delete {path} if that run is gone") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return
        raise RunLockedError(f"cannot take the lock {path}; delete it if no run is using {self.save}")

    def _unlock(self) -> None:
        (self.save / LOCK).unlink(missing_ok=True)

    def _recover(self) -> None:
        """Finish a commit that was killed half-way; drop staging folders of killed runs."""
        journal = self.save / JOURNAL
        if journal.is_file():
            try:
                plan = json.loads(journal.read_text())
                self._apply(plan)
            except (OSError, ValueError):
                pass
            journal.unlink(missing_ok=True)
        if self.resume:
            keep = self._resumable()
            if keep is not None:
                self.dir, self.resumed = keep, True
        elif self.fingerprint is not None and not self.restart:
            self._refuse_interrupted()
        for p in self.save.glob(".staging-*"):
            if not (self.resumed and p == self.dir):
                shutil.rmtree(p, ignore_errors=True)
        for p in self.save.glob(".trash-*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.save.glob(".*.tmp"):  # atomic writes that a kill interrupted
            p.unlink(missing_ok=True)

    def _refuse_interrupted(self) -> None:
        """ConfigError when an interrupted streaming run left scored images here: a run
        without --resume would throw them away unasked."""
        for p in sorted(self.save.glob(".staging-*")):
            n = recorded(p)
            if n:
                raise ConfigError(
                    f"{self.save} holds an interrupted run with {n} image(s) scored ({p.name}): "
                    "rerun the same command with --resume to continue it, or with --restart to "
                    "discard it and start again")

    # ------------------------------------------------------------------ commit
    def path(self, name: str) -> Path:
        return self.dir / name

    def commit(self, extra: dict | None = None) -> None:
        """Move the staged files into place as one set (old set removed), with run.json."""
        if not self.main:
            self.committed = True
            return
        (self.dir / PROGRESS).unlink(missing_ok=True)
        new = sorted(p.name for p in self.dir.iterdir()) if self.staged else []
        self._write_run_json("complete", new, extra)
        if not self.staged:
            self.committed = True
            return
        old = self._old_files()
        (self.save / FAILED_LOG).unlink(missing_ok=True)  # an earlier attempt's: not of this set
        plan = {"staging": self.dir.name, "remove": sorted(set(old) - set(new) - {RUN_JSON}),
                "move": new + [RUN_JSON]}
        atomic_write_json(self.save / JOURNAL, plan)
        self._apply(plan)
        (self.save / JOURNAL).unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.committed = True

    def _old_files(self) -> list[str]:
        try:
            return list(json.loads((self.save / RUN_JSON).read_text()).get("files", []))
        except (OSError, ValueError, AttributeError):
            return []

    def _apply(self, plan: dict) -> None:
        staging = self.save / plan["staging"]
        trash = self.save / f".trash-{self.id}"
        for name in plan["remove"]:
            target = self.save / name
            if target.is_dir() and not target.is_symlink():
                trash.mkdir(exist_ok=True)
                os.replace(target, trash / name)
            else:
                target.unlink(missing_ok=True)
        for name in plan["move"]:
            src, dst = staging / name, self.save / name
            if not src.exists():
                continue  # moved before the kill
            if dst.is_dir() and not dst.is_symlink():
                trash.mkdir(exist_ok=True)
                os.replace(dst, trash / f"{name}.{uuid.uuid4().hex[:6]}")
            os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)

    def _write_run_json(self, status: str, files: list[str], extra: dict | None) -> None:
        info: dict[str, Any] = {
            "status": status, "command": [sys.executable, *sys.argv], "started": self.started,
            "ended": _now(), "versions": versions(), "config": self.config,
            "files": files, **(extra or {})}
        target = self.dir / RUN_JSON
        atomic_write_text(target, json.dumps(info, indent=2, default=str) + "\n")

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.main:
            return
        try:
            if not self.committed:
                self._failed(exc_type, exc)
        finally:
            self._unlock()
            if not self.committed:
                self._remove_if_empty()

    def _failed(self, exc_type, exc) -> None:
        """After a failure: keep what --resume needs, else leave no partial result behind.

        A staged run's failure log (``log.failed.txt``: the error, the command and the log so
        far) is kept in a folder that existed before the run (beside an earlier result set, which
        stays whole; the next complete set removes it); a folder this run created is removed.
        """
        stopped = exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, Interrupted))
        error = "interrupted" if exc_type is KeyboardInterrupt else (
            one_line(exc) if exc is not None else "the run ended without committing its results")
        if self.staged and self.fingerprint is not None and any(
                f.stat().st_size for f in self.dir.glob("records*.jsonl")):
            return  # partial results kept for --resume (a later run without it cleans them)
        if self.staged:
            log = self.dir / "log.txt"
            text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
            shutil.rmtree(self.dir, ignore_errors=True)
            if not getattr(self, "created", None):  # a folder that was there: say why it failed
                atomic_write_text(self.save / FAILED_LOG, failure_text(error, text))
            return
        if getattr(self, "created", None) and not self._leftovers():
            return  # nothing written into the new folder: it goes
        self._write_run_json("interrupted" if stopped else "failed", [], {"error": error})

    def _leftovers(self) -> set[str]:
        """What is in ``save`` besides the lock, run.json and log.txt."""
        return set(os.listdir(self.save)) - {LOCK, RUN_JSON, "log.txt"}

    def _remove_if_empty(self) -> None:
        """Remove the folders this run created when nothing of it is left worth keeping."""
        created = getattr(self, "created", [])
        if not created or not self.save.is_dir() or self._leftovers():
            return
        for name in (RUN_JSON, "log.txt"):
            (self.save / name).unlink(missing_ok=True)
        for folder in created:  # deepest first; a folder something else wrote into stays
            try:
                folder.rmdir()
            except OSError:
                break


def _missing_folders(save: Path) -> list[Path]:
    """``save`` and those of its parents that do not exist yet, deepest first."""
    out, p = [], save.absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def open_records(path: Path) -> IO[str]:
    """``path`` opened for appending records. A last line that a kill cut (no newline at the
    end) is dropped first: the next record would otherwise be glued to it and be lost too.
    The image it named is then not among the records, so a resumed run scores it again."""
    if path.is_file():
        with open(path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
    return open(path, "a", encoding="utf-8")


def recorded(staging: Path) -> int:
    """How many images the records of a streaming run's staging folder hold scored: the
    distinct ``path`` of the lines of its ``records*.jsonl`` (a resumed run records a batch it
    scores again a second time), less those whose last record is an ``error`` (a file that
    could not be read) and lines that do not parse (cut by a kill); 0 when there are none."""
    last: dict[str, bool] = {}
    for f in sorted(staging.glob("records*.jsonl")):
        try:
            lines = f.read_bytes().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                rec = json.loads(line)
                last[rec["path"]] = "error" not in rec
            except (ValueError, KeyError, TypeError):
                continue
    return sum(last.values())


def failure_text(error: str, log: str) -> str:
    """The content of ``log.failed.txt``: when, the error, the command, then the run's log."""
    head = (f"failed: {_now()}\nerror: {error}\ncommand: {' '.join([sys.executable, *sys.argv])}\n")
    return head + ("\n" + log if log.strip() else "")
