"""The watch folder's results and its ledger: each image scored exactly once across restarts.

``OUT/ledger.jsonl`` is the record of what is done. Its first line holds the settings the
results were made with; then one line per image, in the order they were scored: ``path``,
``size`` and ``mtime_ns`` (the file as read), and either its results (``score``,
``text_score``, ``map_max``, ``anomalous``, ``heatmap``, ``mask``, ``regions``) or the ``error``
that kept it from being scored. An image's heatmap and mask are written first, then its line
is appended and synced to disk: that append is the commit. A kill before it leaves no line, so
the image is scored again after a restart (its files rewritten with the same content); a line
cut by a kill has no final newline and is dropped (and cut off the file) at the restart, with
the same effect. A complete line is never scored again.

``scores.csv`` (``path,score[,anomalous]``), ``regions.csv`` (``path,region,x0,...``, with a
pixel threshold) and ``skipped.csv`` (``path,error``) are views of the ledger, in predict.py's
formats: rewritten atomically from it at every start (so a row a kill lost, or half wrote, is
made whole), then appended to as images are scored; ``skipped.csv`` is rewritten at each error.
A file recorded with an error is tried again when its size or time changes (it was still being
written); a scored file never is.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from errors import ConfigError
from utils.io import atomic_write_text, csv_text

from engine.predict.regions import REGION_COLUMNS

LEDGER = "ledger.jsonl"


def _cell(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


class Ledger:
    """The ledger and the CSV views of one results folder (see the module docstring).

    Args:
        out: the results folder (made when missing).
        settings: what the scores depend on; a folder written with other settings is refused.
        image_threshold, pixel_threshold: whether ``anomalous`` and ``regions.csv`` exist.
    """

    def __init__(self, out: Path, settings: dict, image_threshold: bool, pixel_threshold: bool):
        self.out, self.path = out, out / LEDGER
        self.has_verdict, self.has_regions = image_threshold, pixel_threshold
        out.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}
        self.names: set[str] = set()
        self._read(settings)
        self.rebuild()
        self._ledger = open(self.path, "a", encoding="utf-8")
        self._scores = open(out / "scores.csv", "a", encoding="utf-8", newline="")
        self._regions = open(out / "regions.csv", "a", encoding="utf-8", newline="") \
            if pixel_threshold else None

    def _read(self, settings: dict) -> None:
        """Load the complete lines; cut a torn last line off; check the settings line."""
        settings = json.loads(json.dumps(settings))  # as it reads back from JSON
        if not self.path.is_file() or self.path.stat().st_size == 0:
            atomic_write_text(self.path, json.dumps({"ledger": 1, "settings": settings}) + "\n")
            return
        raw = self.path.read_bytes()
        complete = raw[:raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):  # a line cut by a kill: the image is scored again
            with open(self.path, "r+b") as f:
                f.truncate(len(complete))
                os.fsync(f.fileno())
        lines = complete.decode("utf-8").splitlines()
        try:
            head = json.loads(lines[0])["settings"]
        except (IndexError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{self.path} is not a serve.py ledger; pass another --save_path") \
                from None
        if head != settings:
            diff = sorted(k for k in set(head) | set(settings) if head.get(k) != settings.get(k))
            raise ConfigError(f"{self.out} holds results made with other settings (differs in: "
                              f"{', '.join(diff)}); pass another --save_path, or the settings "
                              "it was made with")
        for line in lines[1:]:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            self.records.pop(rec["path"], None)  # the last record of a path counts, in order
            self.records[rec["path"]] = rec
            if rec.get("name"):
                self.names.add(rec["name"])

    # ------------------------------------------------------------------ views
    def _score_row(self, rec: dict) -> list:
        return [rec["path"], f"{rec['score']:.6f}"] + (
            [int(rec["anomalous"])] if self.has_verdict else [])

    def _region_rows(self, rec: dict) -> list[list]:
        return [[rec["path"], *(_cell(g[c]) for c in REGION_COLUMNS)]
                for g in rec.get("regions", [])]

    def scored(self) -> list[dict]:
        return [r for r in self.records.values() if "error" not in r]

    def rebuild(self) -> None:
        """scores.csv, regions.csv and skipped.csv from the ledger, each written atomically."""
        head = ["path", "score"] + (["anomalous"] if self.has_verdict else [])
        atomic_write_text(self.out / "scores.csv",
                          csv_text([head] + [self._score_row(r) for r in self.scored()]))
        if self.has_regions:
            rows = [["path", *REGION_COLUMNS]]
            for r in self.scored():
                rows += self._region_rows(r)
            atomic_write_text(self.out / "regions.csv", csv_text(rows))
        self._write_skipped()

    def _write_skipped(self) -> None:
        rows = [["path", "error"]] + [[r["path"], r["error"]] for r in self.records.values()
                                      if "error" in r]
        atomic_write_text(self.out / "skipped.csv", csv_text(rows))

    # ------------------------------------------------------------------ queries and commits
    def done(self, rel: str, stat: tuple[int, int]) -> bool:
        """Whether ``rel`` needs no (new) attempt: scored, or refused as it is now."""
        rec = self.records.get(rel)
        if rec is None:
            return False
        return "error" not in rec or (rec["size"], rec["mtime_ns"]) == tuple(stat)

    def name_for(self, rel: str) -> str:
        """The PNG name of ``rel``'s heatmap and mask: predict.py's (``a/b.png`` for
        ``a/b.jpg``), else ``a/b.jpg.png``, else numbered; never another image's."""
        rec = self.records.get(rel)
        if rec and rec.get("name"):
            return rec["name"]
        for name in (Path(rel).with_suffix(".png").as_posix(), rel + ".png"):
            if name not in self.names:
                return name
        k = 2
        while f"{rel}.{k}.png" in self.names:
            k += 1
        return f"{rel}.{k}.png"

    def add(self, rec: dict) -> None:
        """Commit one image: its ledger line (synced), then its CSV rows."""
        line = json.dumps(rec, allow_nan=False) + "\n"
        self._ledger.write(line)
        self._ledger.flush()
        os.fsync(self._ledger.fileno())
        was_error = "error" in self.records.get(rec["path"], {})
        self.records.pop(rec["path"], None)
        self.records[rec["path"]] = rec
        if rec.get("name"):
            self.names.add(rec["name"])
        if "error" in rec:
            self._write_skipped()
            return
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self._score_row(rec))
        self._scores.write(buf.getvalue())
        self._scores.flush()
        if self._regions is not None:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(self._region_rows(rec))
            self._regions.write(buf.getvalue())
            self._regions.flush()
        if was_error:  # scored after all: no longer skipped
            self._write_skipped()

    def close(self) -> None:
        for f in (self._ledger, self._scores, self._regions):
            if f is not None:
                f.close()
