"""Shared pieces of the HTML reports: the template environment, number formatting, file names.

Every page is one self-contained HTML5 file: inline CSS and a small inline script (table
sorting), no network; pictures are files in a sibling ``report_files/`` folder referenced by
relative URLs. Pages are rendered with Jinja2 (autoescaped) from ``templates/`` and written
atomically with :func:`utils.io.atomic_write_text`.
"""
from __future__ import annotations

import math
import os
import re
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from utils.io import atomic_write_text

TEMPLATES = Path(__file__).resolve().parent / "templates"
FILES_DIR = "report_files"  # thumbnails and plots, beside report.html
REPORT_NAME = "report.html"
UNDEFINED = "—"  # shown for NaN / missing values


@lru_cache(maxsize=1)
def _environment():
    """The Jinja2 environment (autoescaping, strict undefined), built once."""
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.globals["inline_css"] = Markup((TEMPLATES / "report.css").read_text(encoding="utf-8"))
    env.globals["inline_js"] = Markup((TEMPLATES / "report.js").read_text(encoding="utf-8"))
    env.filters["pct"] = pct
    env.filters["num"] = num
    env.filters["sortkey"] = sortkey
    env.filters["plural"] = plural
    env.filters["url"] = url
    return env


def render_page(template: str, path: Path, **context: Any) -> Path:
    """Render ``templates/<template>`` with ``context`` and write it atomically to ``path``."""
    html = _environment().get_template(template).render(**context)
    return atomic_write_text(path, html)


def is_number(v: Any) -> bool:
    """True for a finite int/float (not bool, not NaN/inf)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def pct(v: Any) -> str:
    """A fraction as a percentage with one decimal, as metrics.md prints it (never ``-0.0``);
    ``—`` for NaN or a missing value."""
    if not is_number(v):
        return UNDEFINED
    text = f"{100 * float(v):.1f}"
    return "0.0" if text == "-0.0" else text


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 file"``, ``"2 files"`` (``many`` for an irregular plural)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def num(v: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (``—`` for NaN / missing)."""
    return f"{float(v):.{digits}g}" if is_number(v) else UNDEFINED


def sortkey(v: Any) -> str:
    """The ``data-v`` attribute of a sortable cell: the number, or empty (sorted last)."""
    return repr(float(v)) if is_number(v) else ""


def slug(name: str, index: int) -> str:
    """A file- and id-safe name for the ``index``-th item called ``name`` (unique by index)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "item"
    return f"{index:02d}_{clean[:60]}"


def url(path: str) -> str:
    """A relative file path (``/``-separated) as a URL: every character but letters, digits,
    ``/`` and ``_.-~`` percent-encoded (UTF-8), so that ``#``, ``%``, ``?``, spaces and
    non-ASCII names reach the file and not a fragment, a query or another name."""
    return quote(str(path), safe="/")


def href(target: Path, base: Path) -> str:
    """The relative URL of file ``target`` from folder ``base`` (percent-encoded, ``/``)."""
    rel = os.path.relpath(Path(target).resolve(), Path(base).resolve())
    return url(Path(rel).as_posix())


def fresh_files_dir(out_dir: Path) -> Path:
    """Empty ``out_dir/report_files`` (left over from an earlier report) and return it."""
    files = Path(out_dir) / FILES_DIR
    if files.is_dir():
        shutil.rmtree(files)
    files.mkdir(parents=True)
    return files


FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"


def random_model_note(pretrained: str | None, config_path: str | None = None) -> str | None:
    """The warning a page made with a random test model carries at its top, else None.

    A model counts as a random test model when its weights file is named ``*random*`` or its
    weights or model config lie in the repository's ``tests/fixtures`` (the tiny models the
    demo and the tests use).
    """
    for p in (pretrained, config_path):
        if not p or not isinstance(p, str):
            continue
        path = Path(p).expanduser()
        inside = path.is_file() and FIXTURES in path.resolve().parents
        if inside or (p == pretrained and path.is_file() and "random" in path.name.lower()):
            return (f"Made with a random test model ({path.name}): the scores, maps and "
                    "metrics on this page are meaningless; only the files and the plumbing are "
                    "real.")
    return None


def info_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, text)`` rows of a run-info dict for the page header (``None`` values left out)."""
    rows = []
    for key, value in info.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(x) for x in value)
        elif isinstance(value, float):
            value = num(value, 6)
        rows.append((str(key), str(value)))
    return rows
