"""The run log: console lines plus ``log.txt``, with ISO timestamps (2026-12-01 21:20:13).

Information goes to stdout, warnings and errors to stderr, both through ``tqdm.write`` so a
progress bar is never broken by a log line.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

LOGGER = "aprilgan"


class _ConsoleHandler(logging.Handler):
    """Writes records below WARNING to stdout and the others to stderr, around progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            tqdm.write(self.format(record), file=stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(save_path: Path | None = None, quiet: bool = False) -> logging.Logger:
    """Console logging, plus ``<save_path>/log.txt`` (appended) when given; ``quiet`` keeps
    only warnings and errors (the other ranks of a torchrun)."""
    log = logging.getLogger(LOGGER)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    for h in log.handlers:  # close the log.txt of an earlier run in this process
        h.close()
    log.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    h = _ConsoleHandler()
    h.setFormatter(fmt)
    log.addHandler(h)
    if save_path is not None:
        save_path.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(save_path / "log.txt", encoding="utf-8")
        fh.setFormatter(fmt)
        log.addHandler(fh)
    log.propagate = False
    return log


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 epoch``, ``3 epochs``; ``many`` for irregular plurals (``categories``)."""
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"
