"""``report.html`` of a prompt study: the ranking, each variant's change against the baseline as
bar charts, and a per-category table of the changes coloured by sign and size."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from metrics import METRIC_KEYS

from .common import fresh_files_dir, info_rows, render_page
from .plots import _figure, _save

CHART_KEYS = ("auroc_px", "auroc_sp", "pro", "ap_sp")


def _bars(rows: list[dict[str, Any]], path: Path) -> tuple[int, int]:
    """Horizontal bars of each variant's change (points) per metric, best-ranked on top."""
    names = [r["name"] for r in rows][::-1]
    fig = _figure(2.6 * len(CHART_KEYS), 0.9 + 0.22 * len(rows))
    axes = fig.subplots(1, len(CHART_KEYS), sharey=True)
    for ax, key in zip(axes, CHART_KEYS):
        vals = [r["delta"].get(key, float("nan")) for r in rows][::-1]
        vals = [0.0 if not math.isfinite(v) else v for v in vals]
        ax.barh(range(len(names)), vals, color=["#1e7a3c" if v >= 0 else "#b3261e" for v in vals])
        ax.axvline(0, color="#111111", lw=0.8)
        ax.set_title(f"{key} (points)", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels(names, fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _shade(delta: float | None) -> str:
    """A background colour for a change in points: green up, red down, stronger when larger."""
    if delta is None or not math.isfinite(delta) or abs(delta) < 0.05:
        return "transparent"
    a = min(1.0, abs(delta) / 5.0) * 0.6 + 0.1
    return f"rgba(30, 122, 60, {a:.2f})" if delta > 0 else f"rgba(179, 38, 30, {a:.2f})"


def write_study_report(out_dir: Path, title: str, rows: list[dict[str, Any]],
                       order: list[dict[str, Any]], cfg) -> Path:
    """Write ``out_dir/report.html`` from ``engine.prompt_study.results`` rows (``order``:
    ranked). The heat table shows, per category and variant, the change of the rank value."""
    files = fresh_files_dir(out_dir)
    w, h = _bars(order, files / "deltas.png")
    keys = cfg.rank_by.split("+")
    base = rows[0]["per_category"]
    cats = list(base)
    heat = []
    for c in cats:
        cells = []
        for r in order:
            m, b = r["per_category"].get(c, {}), base.get(c, {})
            vals = [100 * (m.get(k, math.nan) - b.get(k, math.nan)) for k in keys]
            d = sum(vals) / len(vals)
            cells.append({"text": "—" if not math.isfinite(d) else f"{d:+.1f}", "bg": _shade(d)})
        heat.append({"category": c, "cells": cells})
    ranking = [{"rank": i, "name": r["name"], "change": r["change"],
                "value": "nan" if not math.isfinite(r["rank"]) else f"{100 * r['rank']:.1f}",
                "delta": f"{r['rank_delta']:+.1f}" if math.isfinite(r["rank_delta"]) else "—",
                "means": ["nan" if not math.isfinite(r["mean"].get(k, math.nan))
                          else f"{100 * r['mean'][k]:.1f}" for k in METRIC_KEYS]}
               for i, r in enumerate(order, 1)]
    info = {"dataset": cfg.dataset, "mode": cfg.mode, "ranked by": cfg.rank_by,
            "variants": len(rows), "categories": len(cats)}
    return render_page("study.html", Path(out_dir) / "report.html", title=title,
                       info=info_rows(info), ranking=ranking, columns=list(METRIC_KEYS),
                       chart={"src": f"{files.name}/deltas.png", "w": w, "h": h},
                       names=[r["name"] for r in order], heat=heat, rank_by=cfg.rank_by)
