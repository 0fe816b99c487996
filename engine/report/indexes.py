"""Index pages: several (k, seed) runs of one evaluation, and the whole paper protocol.

* :func:`write_runs_index` - ``report.html`` in a few-shot ``--save_path`` holding
  ``k{K}_seed{S}/``: the ``summary.json`` tables (mean ± std over seeds, per k) and links.
* :func:`write_protocol_index` - ``index.html`` in the protocol's results folder: links to every
  run's report and the paper comparison read from ``scripts/compare_paper.py``'s
  ``comparison.csv`` (long format: dataset, setting, category, metric, ours, ours_std, paper,
  paper_std, diff; percent), ours vs paper with the difference coloured.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from metrics import METRIC_KEYS

from .common import REPORT_NAME, href, info_rows, pct, random_model_note, render_page, sortkey

__all__ = ["discover_reports", "read_comparison", "write_protocol_index", "write_runs_index"]

DATASET_TITLES = {"mvtec": "MVTec AD", "visa": "VisA"}
SAME = 0.05  # |ours - paper| below this (in points) prints as 0.0: neither better nor worse


def _run_link(out_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    """Label and href (``None`` when the run has no report yet) of one run dict."""
    k, seed = run.get("k"), run.get("seed")
    folder = run.get("folder") or f"k{k}_seed{seed}"
    target = out_dir / folder / REPORT_NAME
    label = run.get("label") or (f"seed {seed}" if seed is not None else str(folder))
    return {"label": label, "href": href(target, out_dir) if target.is_file() else None,
            "mean": [(pct(run["mean"].get(m)), sortkey(run["mean"].get(m))) for m in METRIC_KEYS]
            if run.get("mean") else None}


def write_runs_index(out_dir: Path, title: str, runs: list[dict[str, Any]],
                     summary: dict[str, Any], info: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/report.html`` (atomically): per k the mean ± std table over seeds, each run's
    link (and its mean row when given). Returns the page's path.

    Args:
        out_dir: the evaluation's ``--save_path`` (the runs are in its sub-folders).
        title: the page title.
        runs: one dict per run: ``k``, ``seed``, optional ``folder`` (relative to ``out_dir``;
            default ``k{k}_seed{seed}``), ``label`` and ``mean`` (its metrics.json mean row).
        summary: the ``summary.json`` dict ``{"kK": {"n_runs", "seeds", "metrics": {cat:
            {metric: {"mean", "std"}}}}}`` (fractions).
        info: run facts for the header.
    """
    out_dir = Path(out_dir)
    groups = []
    for key in sorted(summary, key=lambda s: int(s[1:]) if s[1:].isdigit() else s):
        s = summary[key]
        k = int(key[1:]) if key[1:].isdigit() else key
        rows, mean_row = [], None
        for cat, m in s["metrics"].items():
            one = s.get("n_runs", len(s.get("seeds", []))) == 1  # no spread over one run
            cells = [(pct(m[x]["mean"]) + ("" if one else f" ± {pct(m[x]['std'])}"),
                      sortkey(m[x]["mean"])) if x in m else ("—", "") for x in METRIC_KEYS]
            if cat == "mean":
                mean_row = {"name": cat, "cells": cells}
            else:
                rows.append({"name": cat, "cells": cells})
        groups.append({"k": k, "n_runs": s.get("n_runs", len(s.get("seeds", []))),
                       "seeds": ", ".join(str(x) for x in s.get("seeds", [])),
                       "rows": rows, "mean_row": mean_row,
                       "runs": [_run_link(out_dir, r) for r in runs if r.get("k") == k]})
    return render_page("runs.html", out_dir / REPORT_NAME, title=title,
                       info=info_rows(info or {}), columns=list(METRIC_KEYS), groups=groups)


def _float(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def _one(x: float) -> str:
    t = f"{x:.1f}"
    return "0.0" if t == "-0.0" else t


def _cell(row: dict[str, str]) -> dict[str, Any]:
    """One comparison cell: texts for ours and the paper, the difference and its class."""
    ours, ours_std = _float(row.get("ours")), _float(row.get("ours_std"))
    paper, paper_std = _float(row.get("paper")), _float(row.get("paper_std"))
    diff = _float(row.get("diff"))

    def show(v: float | None, sd: float | None) -> str:
        return "—" if v is None else _one(v) + (f"±{_one(sd)}" if sd is not None else "")

    if diff is None:
        diff_text, cls = "", "same"
    elif abs(diff) < SAME:
        diff_text, cls = "0.0", "same"
    else:
        diff_text, cls = f"{diff:+.1f}", "better" if diff > 0 else "worse"
    return {"ours": show(ours, ours_std), "paper": show(paper, paper_std), "diff": diff_text,
            "cls": cls, "comparable": row.get("comparable", "yes") != "no"}


def read_comparison(path: Path) -> list[dict[str, Any]]:
    """``comparison.csv`` as tables: ``[{"dataset", "setting", "title", "rows": [{"category",
    "cells": {metric: cell}}]}]`` in the file's order (cells from :func:`_cell`).

    Raises:
        ValueError: when the header lacks one of the columns compare_paper.py writes.
    """
    tables: dict[tuple[str, str], dict[str, Any]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"dataset", "setting", "category", "metric", "ours", "paper", "diff"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: not a compare_paper.py CSV (no {', '.join(sorted(missing))})")
        for row in reader:
            ds, setting = row["dataset"], row["setting"]
            t = tables.setdefault((ds, setting), {
                "dataset": ds, "setting": setting, "rows": {},
                "title": f"{DATASET_TITLES.get(ds, ds)}, {setting.replace('shot', '-shot')}"})
            t["rows"].setdefault(row["category"], {})[row["metric"]] = _cell(row)
    return [{**t, "rows": [{"category": c, "cells": cells} for c, cells in t["rows"].items()]}
            for t in tables.values()]


def _random_model_warning(results_dir: Path) -> str | None:
    """The random-test-model warning when any run below ``results_dir`` used one (its
    config.json names the weights)."""
    import json

    for path in sorted(Path(results_dir).rglob("config.json")):
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(cfg, dict):
            note = random_model_note(cfg.get("pretrained"), cfg.get("config_path"))
            if note:
                return note
    return None


def discover_reports(results_dir: Path) -> list[tuple[str, Path]]:
    """Every ``report.html`` under ``results_dir`` as ``(folder relative to it, path)``, sorted."""
    results_dir = Path(results_dir)
    found = sorted(p for p in results_dir.rglob(REPORT_NAME) if p.parent != results_dir)
    return [(p.parent.relative_to(results_dir).as_posix(), p) for p in found]


def write_protocol_index(results_dir: Path, comparison_md: Path | None,
                         entries: list[tuple[str, Path]], *, title: str = "APRIL-GAN: protocol results",
                         comparison_csv: Path | None = None, name: str = "index.html") -> Path:
    """Write ``results_dir/index.html`` (atomically): links to every run's report and, when the
    comparison CSV exists, the mean-over-categories overview and one table per dataset and
    setting (ours / paper, the difference green where ours is higher, red where lower).
    Returns the page's path.

    Args:
        results_dir: the protocol's results folder.
        comparison_md: ``comparison.md`` of compare_paper.py (linked); its ``.csv`` sibling is
            the one read (``None``: no comparison section unless ``comparison_csv`` is given).
        entries: ``(label, report.html path)`` per run (relative paths are taken from
            ``results_dir``); a missing report is listed as such, not linked.
        comparison_csv: the CSV to read instead of ``comparison_md``'s sibling.
    """
    results_dir = Path(results_dir)
    links = []
    for label, path in entries:
        p = Path(path) if Path(path).is_absolute() else results_dir / path
        links.append({"label": label, "href": href(p, results_dir) if p.is_file() else None})
    csv_path = comparison_csv or (Path(comparison_md).with_suffix(".csv") if comparison_md else None)
    tables, note = [], None
    if csv_path is not None:
        if csv_path.is_file():
            tables = read_comparison(csv_path)
        else:
            note = f"{csv_path.name} not found: run scripts/compare_paper.py"
    files = [{"label": p.name, "href": href(p, results_dir)}
             for p in (comparison_md, csv_path) if p is not None and Path(p).is_file()]
    overview = [{"title": t["title"], "cells": r["cells"],
                 "comparable": all(c["comparable"] for c in r["cells"].values())}
                for t in tables for r in t["rows"] if r["category"] == "mean"]
    for t in tables:
        t["comparable"] = all(o["comparable"] for o in overview if o["title"] == t["title"])
    warning = _random_model_warning(results_dir)
    return render_page("protocol.html", results_dir / name, title=title,
                       info=[("warning", warning)] if warning else [],
                       links=links, tables=tables, overview=overview, files=files, note=note,
                       columns=list(METRIC_KEYS))
