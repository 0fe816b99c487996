"""serve.py ``--watch DIR --save_path OUT``: score every image in DIR and every image that
appears later, each exactly once, into OUT as predict.py writes its files.

Which files. Every file of DIR (its sub-folders with ``--recursive``) but hidden ones (``.name``),
temporary names (``~name``, ``name~``, and ``.tmp .temp .part .partial .crdownload .download
.swp .lock .filepart``) and the results and work folders. An image is known by its path relative
to DIR: once scored it is never scored again, even if the file is replaced.

When a file is read. Only once it is complete: its size and modification time have not
changed for ``--settle_s`` seconds and, where the system reports file events (inotify, through
watchdog), a file opened for writing has been closed since (one never closed is read after it
has not changed for ``max(30, 10 * settle_s)`` s). A file renamed into DIR when complete (the
safe way to deliver one) is read after ``--settle_s``. A file that changes while it is scored
is read again. Without file events (``--watch_polling``, or when watchdog cannot watch DIR)
DIR is scanned every ``--poll_s`` seconds; with them it is scanned that often too, so a missed
event only delays an image. A file that is not a readable image is recorded as skipped, and
tried again if it changes.

What is written: ``engine.serve.watch_ledger`` (the ledger that makes a restart after ``kill -9``
neither lose nor repeat an image, and the CSV files); heatmaps and masks through
``engine.predict.prediction.image_files``, exactly as predict.py writes them. Images go through the
object's micro-batcher with the HTTP requests (waiting for a place, never refused).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from datasets.transforms import open_image
from errors import DatasetError

from engine.config import ServeConfig
from engine.predict.prediction import image_files
from engine.serve.serving import Served, Service
from engine.serve.watch_ledger import Ledger

TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".swp",
                 ".lock", ".filepart")
NO_CLOSE_S = 30.0


def ignored(rel: str) -> bool:
    """Hidden files and folders, and temporary names, are never read."""
    parts = Path(rel).parts
    if not parts or any(p.startswith((".", "~")) for p in parts):
        return True
    name = parts[-1].lower()
    return name.endswith("~") or name.endswith(TEMP_SUFFIXES)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if path.is_file() else None


@dataclass
class _Seen:
    """A file not yet scored: its last (size, mtime_ns), when that last changed, and whether
    it was opened for writing and not closed since (event mode)."""

    stat: tuple[int, int]
    since: float
    writing: bool = False


def ledger_settings(served: Served) -> dict:
    """What the watch folder's scores and verdicts depend on (a restart must share it)."""
    job = served.job
    return {"object_name": served.name, "model_file": served.source,
            "definition": job.definition, "normal_level": job.scorer.normal_level,
            "reference_dir": job.cfg.reference_dir and str(Path(job.cfg.reference_dir).resolve()),
            "image_threshold": job.thresholds["image"],
            "pixel_threshold": job.thresholds["pixel"],
            "min_region_area": job.cfg.min_region_area}


class FolderWatch:
    """The watch folder of one object, scored on a thread of its own (``start``/``stop``)."""

    def __init__(self, service: Service, served: Served, cfg: ServeConfig, log: logging.Logger):
        self.service, self.served, self.cfg, self.log = service, served, cfg, log
        self.root, self.out = Path(cfg.watch).resolve(), Path(cfg.save_path).resolve()
        self.exclude = {self.out, service.work}
        thr = served.job.thresholds
        self.ledger = Ledger(self.out, ledger_settings(served), thr["image"] is not None,
                             thr["pixel"] is not None)
        job = copy.copy(served.job)  # predict.py's job writing into OUT
        job.cfg = dataclasses.replace(job.cfg, no_report=True, no_heatmaps=cfg.no_heatmaps)
        job.out, job.image_dir, job.names, job.thumbs = self.out, self.root, {}, None
        self.job = job
        self.seen: dict[str, _Seen] = {}
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.closes = False  # whether the observer reports a file's close
        self.observer = None
        self.failure: BaseException | None = None
        self.on_failure = None  # called on the watch thread when it fails (serve.py: stop)
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)

    # ------------------------------------------------------------------ life
    def start(self) -> None:
        """Watch with file events (a scan every --poll_s too), or by scanning alone."""
        how = f"a scan every {self.cfg.poll_s:g} s"
        if not self.cfg.watch_polling:
            try:
                from watchdog.observers import Observer

                self.observer = Observer()
                self.observer.schedule(_Handler(self.events), str(self.root),
                                       recursive=self.cfg.recursive)
                self.observer.start()
                self.closes = type(self.observer).__name__ == "InotifyObserver"
                how = f"file events{' (closes too)' if self.closes else ''} and {how}"
            except Exception as e:  # noqa: BLE001 - watchdog's per-platform errors
                self.log.warning(f"warning: {self.root}: file events unavailable ({e}); "
                                 f"scanning every {self.cfg.poll_s:g} s instead")
                self.observer = None
        n = len(self.ledger.scored())
        self.log.info(f"watching {self.root} for {self.served.name!r} ({how}); results in "
                      f"{self.out}" + (f", {n} image(s) already scored there" if n else ""))
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout)
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        self.ledger.close()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - reported by serve.py after it stops
            if not self._stop.is_set():
                self.failure = e
                self.log.error(f"error: the watch folder stopped: {type(e).__name__}: {e}")
                if self.on_failure is not None:
                    self.on_failure()
        finally:
            self.done.set()

    def _loop(self) -> None:
        tick = min(0.25, max(0.02, self.cfg.settle_s / 4))
        last_scan = -1e18
        while not self._stop.is_set():
            if time.monotonic() - last_scan >= self.cfg.poll_s:
                self._scan()
                last_scan = time.monotonic()
            self._drain(tick)
            ready = self._ready()
            for i in range(0, len(ready), self.cfg.max_batch):
                if self._stop.is_set():
                    return
                self._score(ready[i:i + self.cfg.max_batch])

    # ------------------------------------------------------------------ finding files
    def _rel(self, path: Path) -> str | None:
        """``path`` relative to DIR when it is a file the watch may read, else None."""
        try:
            rel = path.resolve().relative_to(self.root)
        except (OSError, ValueError):
            return None
        if any(e == path.resolve() or e in path.resolve().parents for e in self.exclude):
            return None
        if len(rel.parts) > 1 and not self.cfg.recursive:
            return None
        r = rel.as_posix()
        return None if ignored(r) else r

    def _note(self, rel: str, stat: tuple[int, int], writing: bool | None = None) -> None:
        """Record what a scan or an event saw of a file not yet scored."""
        if self.ledger.done(rel, stat):
            self.seen.pop(rel, None)
            return
        s = self.seen.get(rel)
        if s is None:
            s = self.seen[rel] = _Seen(stat, time.monotonic())
        elif s.stat != stat:
            s.stat, s.since = stat, time.monotonic()
        if writing is not None:
            s.writing = writing
            s.since = time.monotonic()

    def _scan(self) -> None:
        found: set[str] = set()
        stack = [self.root]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except OSError:
                continue
            for e in entries:
                p = Path(e.path)
                if e.is_dir(follow_symlinks=False):
                    if self.cfg.recursive and not e.name.startswith((".", "~")) and \
                            p.resolve() not in self.exclude:
                        stack.append(p)
                    continue
                rel = self._rel(p)
                st = _stat(p) if rel else None
                if st is not None:
                    found.add(rel)
                    self._note(rel, st)
        for rel in [r for r in self.seen if r not in found]:
            del self.seen[rel]

    def _drain(self, wait: float) -> None:
        """Apply the file events that arrived (waiting up to ``wait`` s for the first)."""
        try:
            kind, path = self.events.get(timeout=wait)
        except queue.Empty:
            return
        while True:
            rel = self._rel(Path(path))
            st = _stat(self.root / rel) if rel else None
            if st is not None:
                self._note(rel, st, {"write": True, "closed": False}.get(kind) if self.closes
                           else None)
            try:
                kind, path = self.events.get_nowait()
            except queue.Empty:
                return

    def _ready(self) -> list[str]:
        """The files complete by the rules of the module docstring, by name."""
        now, out = time.monotonic(), []
        for rel in sorted(self.seen):
            s = self.seen[rel]
            wait = max(NO_CLOSE_S, 10 * self.cfg.settle_s) if s.writing else self.cfg.settle_s
            if now - s.since < wait:
                continue
            st = _stat(self.root / rel)
            if st is None:
                del self.seen[rel]
            elif st != s.stat:
                s.stat, s.since = st, now
            else:
                out.append(rel)
        return out

    # ------------------------------------------------------------------ scoring
    def _score(self, rels: list[str]) -> None:
        """Score ``rels`` through the batcher, then write each one's files and commit it."""
        batcher, waiting = self.served.batcher, []
        for rel in rels:
            stat = self.seen[rel].stat
            try:
                img = open_image(self.root / rel)
                tensor = self.served.transform(img)
            except (DatasetError, OSError, ValueError) as e:
                self._refuse(rel, stat, e)
                continue
            batcher.reserve(block=True)
            waiting.append((rel, stat, batcher.submit(tensor)))
        for rel, stat, fut in waiting:
            try:
                r = fut.result()
            except (DatasetError, ValueError, ArithmeticError) as e:
                self._refuse(rel, stat, e)
                continue
            if _stat(self.root / rel) != stat:  # changed while scored: read it again
                self.seen[rel] = _Seen(_stat(self.root / rel) or stat, time.monotonic())
                continue
            name = self.job.names[rel] = self.ledger.name_for(rel)
            try:
                files = image_files(self.job, rel, r["map"])
            except DatasetError as e:  # gone or damaged since it was read
                self._refuse(rel, stat, e)
                continue
            rec = {"path": rel, "size": stat[0], "mtime_ns": stat[1], "name": name,
                   "score": r["score"], "text_score": r["text_score"], "map_max": r["map_max"]}
            thr = self.job.thresholds["image"]
            if thr is not None:
                rec["anomalous"] = bool(r["score"] >= thr)
            rec.update({k: files[k] for k in ("heatmap", "mask", "regions") if k in files})
            rec["time"] = datetime.now().astimezone().isoformat(timespec="seconds")
            self.ledger.add(rec)
            self.seen.pop(rel, None)
            verdict = "" if thr is None else (" anomalous" if rec["anomalous"] else " normal")
            self.log.info(f"watch: {rel}: score {r['score']:.4f}{verdict}")

    def _refuse(self, rel: str, stat: tuple[int, int], e: Exception) -> None:
        """Record ``rel`` as skipped (unless it changed meanwhile: then it is read again)."""
        now = _stat(self.root / rel)
        if now != stat:
            if now is None:
                self.seen.pop(rel, None)
            else:
                self.seen[rel] = _Seen(now, time.monotonic())
            return
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        self.ledger.add({"path": rel, "size": stat[0], "mtime_ns": stat[1], "error": why})
        self.seen.pop(rel, None)
        self.log.warning(f"warning: watch: {rel}: skipped: {why}")


class _Handler:
    """watchdog's callbacks as (kind, path) items: ``write`` (created or modified),
    ``closed`` (closed after writing), ``moved`` (renamed into place)."""

    def __init__(self, events: queue.SimpleQueue):
        self.events = events

    def dispatch(self, event) -> None:
        if event.is_directory:
            return
        kind = {"created": "write", "modified": "write", "closed": "closed",
                "moved": "moved"}.get(event.event_type)
        if kind is not None:
            path = event.dest_path if kind == "moved" else event.src_path
            self.events.put((kind, os.fsdecode(path)))
