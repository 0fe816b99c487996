"""Result files of an evaluation: metrics.json, the paper-style table (Markdown, CSV), thresholds.

``metrics.json`` = ``{"per_category": {cat: {metric: float}}, "mean": {metric: float},
"vand": {...}, ...run info}``, unrounded fractions in [0, 1]. Tables are in percent with one
decimal, columns auroc_px, f1_px, ap_px, pro, auroc_sp, f1_sp, ap_sp (METHOD §7).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from metrics import METRIC_KEYS, format_table, mean_metrics, vand_summary
from metrics.report import THRESHOLD_KEYS
from utils.io import atomic_write_json, atomic_write_text, csv_text
from utils.log import plural


def pct(v: float) -> str:
    """A fraction as a percentage with one decimal (``–`` when undefined, never ``-0.0``)."""
    if v is None or v != v:
        return "–"
    text = f"{100 * v:.1f}"
    return "0.0" if text == "-0.0" else text


def _shown(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Values that would print as -0.0 become 0.0 (for the printed tables only)."""
    return {c: {k: 0.0 if isinstance(v, float) and pct(v) == "0.0" else v for k, v in m.items()}
            for c, m in table.items()}


SP_KEYS = ("auroc_sp", "f1_sp", "ap_sp")


def write_metrics(out: Path, per_category: dict[str, dict[str, float]], extra: dict,
                  title: str = "", echo: bool = True, log: logging.Logger | None = None,
                  per_image_sp: dict[str, dict[str, float]] | None = None,
                  undefined: dict[str, dict[str, str]] | None = None,
                  definition: dict | None = None) -> dict:
    """Write metrics.json, metrics.md, metrics.csv and thresholds.json into ``out``.

    ``per_image_sp`` ({cat: {"auroc", "ap", "f1", "threshold"}}, with ``--image_score both``):
    the image-level metrics of the per-image score, written beside the released ones
    (``metrics.json`` key ``per_image_score``, a second table, ``thresholds.json`` key
    ``image_per_image``).

    ``definition`` (``engine.core.thresholds.definition``): what the thresholds are thresholds of,
    recorded in ``thresholds.json`` so that predict.py and export.py can check it.

    ``metrics.json`` is strict JSON: an undefined value (e.g. AUROC of a category whose test
    images are all normal) is ``null``, and ``undefined`` says why, per category and metric.
    """
    thresholds = {c: {"pixel": m.get("threshold_px"), "image": m.get("threshold_sp")}
                  for c, m in per_category.items()}
    scores = {c: {k: v for k, v in m.items() if k not in THRESHOLD_KEYS}
              for c, m in per_category.items()}
    mean = _quiet_mean(scores)
    result = {"per_category": scores, "mean": mean, "vand": vand_summary(scores), **extra}
    why = {c: {k: r for k, r in u.items() if k not in THRESHOLD_KEYS}
           for c, u in (undefined or {}).items()}
    why = {c: u for c, u in why.items() if u}
    for k, v in mean.items():
        if not np.isfinite(v):
            why.setdefault("mean", {})[k] = "undefined in every category"
    skipped = mean_note(scores, why)
    if why:
        result["undefined"] = why
    table = format_table(_shown(scores), _shown({"mean": mean})["mean"])
    if per_image_sp is not None:
        sp = {c: {"auroc_sp": m["auroc"], "f1_sp": m["f1"], "ap_sp": m["ap"]}
              for c, m in per_image_sp.items()}
        sp_mean = _quiet_mean(sp)
        result["per_image_score"] = {"per_category": sp, "mean": sp_mean}
        for c, m in per_image_sp.items():
            thresholds[c]["image_per_image"] = m["threshold"]
        table += ("\n\nImage metrics of the per-image score (--image_score per_image):\n\n"
                  + format_table(_shown(sp), _shown({"mean": sp_mean})["mean"], keys=SP_KEYS))
    atomic_write_json(out / "metrics.json", result)
    atomic_write_json(out / "thresholds.json", {
        "note": "F1-max thresholds on the final image score and on the anomaly map, per category",
        **extra, **(definition or {}), "per_category": thresholds})
    atomic_write_text(out / "metrics.md", (f"# {title}\n\n" if title else "") + table + "\n")
    rows = [["objects", *METRIC_KEYS]] + [
        [c, *(pct(m[k]) for k in METRIC_KEYS)] for c, m in {**scores, "mean": mean}.items()]
    atomic_write_text(out / "metrics.csv", csv_text(rows))
    if echo:
        say = log.info if log else print
        say("\n" + (f"{title}\n" if title else "") + table)
        if skipped:
            say(skipped)
    return result


def _quiet_mean(per_category: dict[str, dict[str, float]]) -> dict[str, float]:
    """``mean_metrics`` without its warning per skipped value: :func:`mean_note` says it once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return mean_metrics(per_category)


def mean_note(per_category: dict[str, dict[str, float]],
              why: dict[str, dict[str, str]] | None = None) -> str | None:
    """One line on the metrics the mean row leaves out (undefined in some or all categories)
    and why, or ``None`` when every value is defined.

    ``why``: ``{category: {metric: reason}}`` (metrics.json's ``undefined``)."""
    why = why or {}
    groups: dict[tuple[str, ...], list[str]] = {}  # the categories left out -> their metrics
    for key in dict.fromkeys(k for m in per_category.values() for k in m):
        bad = tuple(c for c, m in per_category.items() if key in m and not np.isfinite(m[key]))
        if bad and key not in THRESHOLD_KEYS:
            groups.setdefault(bad, []).append(key)
    if not groups:
        return None
    n = len(per_category)
    said = []
    for bad, names in groups.items():
        reasons = "; ".join(dict.fromkeys(why.get(c, {}).get(k) for c in bad for k in names
                                          if why.get(c, {}).get(k)))
        text = f"{', '.join(names)} undefined in " + (
            "every category" if len(bad) == n else ", ".join(bad)) + (
            f" ({reasons})" if reasons else "")
        said.append(text if len(bad) == n else f"{text}: the mean of the other {n - len(bad)}")
    return "mean row: " + "; ".join(said)


def summarize_runs(results: list[dict]) -> dict:
    """Mean and std (over runs, ddof=0) of every metric, per category and for the mean row."""
    cats = list(results[0]["per_category"]) + ["mean"]
    out = {}
    for c in cats:
        rows = [r["mean"] if c == "mean" else r["per_category"][c] for r in results]
        out[c] = {k: {"mean": float(np.mean([x[k] for x in rows])),
                      "std": float(np.std([x[k] for x in rows]))} for k in METRIC_KEYS}
    return out


def write_summary(save: Path, results: dict, log: logging.Logger | None = None) -> dict:
    """Per k: mean ± std over seeds in the paper's layout (Tables 6-8), as MD/CSV/JSON."""
    by_k: dict[int, list[dict]] = {}
    for (k, _seed), res in results.items():
        by_k.setdefault(k, []).append(res)
    summary = {}
    for k, runs in sorted(by_k.items()):
        s = summary[f"k{k}"] = {"n_runs": len(runs), "seeds": [r.get("seed") for r in runs],
                                "metrics": summarize_runs(runs)}
        header = ["objects", *METRIC_KEYS]
        md = [f"# {runs[0].get('dataset', '')} {k}-shot, mean ± std over {plural(len(runs), 'seed')}", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        rows = [["objects", *(x for m in METRIC_KEYS for x in (m, m + "_std"))]]
        for c, m in s["metrics"].items():
            md.append("| " + " | ".join(
                [c] + [f"{pct(m[x]['mean'])}±{pct(m[x]['std'])}" for x in METRIC_KEYS]) + " |")
            rows.append([c] + [pct(m[x][y]) for x in METRIC_KEYS for y in ("mean", "std")])
        atomic_write_text(save / f"summary_k{k}.md", "\n".join(md) + "\n")
        atomic_write_text(save / f"summary_k{k}.csv", csv_text(rows))
        (log.info if log else print)("\n" + "\n".join(md))
    atomic_write_json(save / "summary.json", summary)
    return summary
