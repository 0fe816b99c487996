"""``report.html`` of a prompt study: the header every report has (the random-model warning,
model, checkpoint, dataset), the ranking, each variant's change against the baseline as bar
charts, and a per-variant, per-category table of the changes coloured by sign and size.

The page fits a 1280 px window: the ranking's "change" column wraps, and the change table has
one row per variant and one column per category. With many variants the chart shows the
:data:`CHART_EACH` best and the :data:`CHART_EACH` worst (the tables list all), so that every
bar and name stays legible."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from metrics import METRIC_KEYS

from .common import fresh_files_dir, info_rows, render_page
from .plots import _figure, _save

CHART_KEYS = ("auroc_px", "auroc_sp", "pro", "ap_sp")
CHART_EACH = 15  # variants drawn from each end of the ranking when there are more than 2x this
ROW_IN = 0.25  # inches per bar row (24 px at 96 dpi): room for a 9 pt name
GAP = "…"  # the chart's row between the best and the worst variants


def chart_rows(order: list[dict[str, Any]], each: int = CHART_EACH) -> tuple[list[dict], int]:
    """The ranked rows the chart draws and how many it leaves out: all when there are at most
    ``2 * each``, else the ``each`` best and the ``each`` worst."""
    if len(order) <= 2 * each:
        return list(order), 0
    return list(order[:each]) + list(order[-each:]), len(order) - 2 * each


def _bars(order: list[dict[str, Any]], path: Path) -> tuple[int, int, list[str], int]:
    """Horizontal bars of each variant's change (points) per metric, best-ranked on top; returns
    the PNG's size, the names drawn (top to bottom) and the number left out."""
    shown, left_out = chart_rows(order)
    names = [r["name"] for r in shown]
    labels = names[:CHART_EACH] + [f"{GAP} {left_out} more {GAP}"] + names[CHART_EACH:] \
        if left_out else names
    deltas = [r["delta"] for r in shown[:CHART_EACH]] + [{}] + [r["delta"] for r in
                                                             shown[CHART_EACH:]] \
        if left_out else [r["delta"] for r in shown]
    fig = _figure(2.6 * len(CHART_KEYS), 0.9 + ROW_IN * len(labels))
    axes = fig.subplots(1, len(CHART_KEYS), sharey=True)
    ys = list(range(len(labels)))[::-1]  # the first label on top
    for ax, key in zip(axes, CHART_KEYS):
        vals = [d.get(key, math.nan) for d in deltas]
        vals = [0.0 if not math.isfinite(v) else v for v in vals]
        ax.barh(ys, vals, height=0.7, color=["#1e7a3c" if v >= 0 else "#b3261e" for v in vals])
        ax.axvline(0, color="#111111", lw=0.8)
        ax.set_title(f"{key} (points)", fontsize=10)
        ax.tick_params(labelsize=8)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels(labels, fontsize=9)
    axes[0].set_ylim(-0.6, len(labels) - 0.4)
    fig.tight_layout()
    w, h = _save(fig, path)
    return w, h, names, left_out


def _shade(delta: float | None) -> str:
    """A background colour for a change in points: green up, red down, stronger when larger."""
    if delta is None or not math.isfinite(delta) or abs(delta) < 0.05:
        return "transparent"
    a = min(1.0, abs(delta) / 5.0) * 0.6 + 0.1
    return f"rgba(30, 122, 60, {a:.2f})" if delta > 0 else f"rgba(179, 38, 30, {a:.2f})"


def _alt(names: list[str], left_out: int) -> str:
    """The chart's text equivalent: which variants it draws."""
    if not left_out:
        return "change of each variant against the baseline, per metric: " + ", ".join(names)
    return (f"change against the baseline, per metric, of the {CHART_EACH} best variants ("
            + ", ".join(names[:CHART_EACH]) + f") and the {CHART_EACH} worst ("
            + ", ".join(names[CHART_EACH:]) + ")")


def write_study_report(out_dir: Path, title: str, rows: list[dict[str, Any]],
                       order: list[dict[str, Any]], rank_by: str,
                       info: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/report.html`` from ``engine.evaluate.prompt_study.results`` rows.

    Args:
        out_dir: the study's folder (the chart goes to ``report_files/deltas.png``).
        title: the page title.
        rows: the variants, the baseline first; ``order``: the same rows, ranked.
        rank_by: the metrics ('+'-joined) that rank them; the change table shows, per variant
            and category, the change of their mean.
        info: the header's run facts (``warning``: the random-model note; model, checkpoint,
            dataset, ...); ``None`` values are left out.
    """
    files = fresh_files_dir(out_dir)
    w, h, drawn, left_out = _bars(order, files / "deltas.png")
    keys = rank_by.split("+")
    base = rows[0]["per_category"]
    cats = list(base)
    heat = []
    for r in order:
        cells = []
        for c in cats:
            m, b = r["per_category"].get(c, {}), base.get(c, {})
            vals = [100 * (_f(m.get(k)) - _f(b.get(k))) for k in keys]
            d = sum(vals) / len(vals)
            text = "—" if not math.isfinite(d) else "0.0" if abs(d) < 0.05 else f"{d:+.1f}"
            cells.append({"text": text, "bg": _shade(d)})
        heat.append({"name": r["name"], "cells": cells})
    ranking = [{"rank": i, "name": r["name"], "change": r["change"],
                "value": "nan" if not math.isfinite(r["rank"]) else f"{100 * r['rank']:.1f}",
                "delta": f"{r['rank_delta']:+.1f}" if math.isfinite(r["rank_delta"]) else "—",
                "means": ["nan" if not math.isfinite(_f(r["mean"].get(k)))
                          else f"{100 * r['mean'][k]:.1f}" for k in METRIC_KEYS]}
               for i, r in enumerate(order, 1)]
    head = {**(info or {}), "ranked by": rank_by, "variants": len(rows), "categories": len(cats)}
    return render_page("study.html", Path(out_dir) / "report.html", title=title,
                       info=info_rows(head), ranking=ranking, columns=list(METRIC_KEYS),
                       chart={"src": f"{files.name}/deltas.png", "w": w, "h": h,
                              "alt": _alt(drawn, left_out), "left_out": left_out,
                              "each": CHART_EACH, "n": len(order)},
                       categories=cats, heat=heat, rank_by=rank_by)


def _f(v: Any) -> float:
    """A metric value as a float (``None``, strict JSON's undefined, as NaN)."""
    return math.nan if v is None else float(v)
