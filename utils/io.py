"""Atomic file writes: write to a temporary file in the same folder, then ``os.replace``.

A crash mid-write leaves the previous file (or none), never a half-written one.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from errors import DatasetError, UserError


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(file_object)`` on a temp file beside ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def strict(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (JSON ``null``)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, np.generic):
        return strict(obj.item())
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON atomically: undefined (NaN/inf) values are
    ``null`` (never the non-standard ``NaN`` that strict readers reject)."""
    return atomic_write_text(path, json.dumps(strict(obj), indent=2, allow_nan=False) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save`` atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write(path, lambda f: f.write(buf.getbuffer()))


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (about 3 s for 1.7 GB)."""
    import hashlib

    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def csv_text(rows: list[list]) -> str:
    """Rows as CSV text (``\n`` line ends)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def read_json(path: str | Path, what: str = "JSON file", expect: type | None = dict,
              error: type[UserError] = DatasetError, hint: str = "") -> Any:
    """Read a UTF-8 JSON file; every fault is ``error`` naming the file (and ``hint``).

    Args:
        path: the file.
        what: how the message names it, e.g. "thresholds file".
        expect: the required top-level type (None: any).
        error: the user-error type to raise.
        hint: appended to the message, e.g. "rebuild it with datasets.prepare".
    """
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    if not path.is_file():
        raise error(f"{what} not found: {path}{tail}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text (byte {e.start}){tail}") from e
    except json.JSONDecodeError as e:
        raise error(f"{what} {path} is not valid JSON: {e}{tail}") from e
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}{tail}") from e
    if expect is not None and not isinstance(data, expect):
        raise error(f"{what} {path} must hold a JSON {'object' if expect is dict else expect.__name__}"
                    f", not {type(data).__name__}{tail}")
    return data
