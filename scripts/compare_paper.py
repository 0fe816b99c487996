"""Put our zero-/few-shot results beside the paper's per-category tables, with the difference.

    python scripts/compare_paper.py --results results            # after the test_*.sh scripts
    python scripts/compare_paper.py --results results --out results/comparison

Reads, for dataset D in {mvtec, visa}:
  * ``RESULTS/D_zero_shot/metrics.json`` (test.py zero-shot),
  * ``RESULTS/D_few_shot/summary.json`` (test.py with several k and seeds: mean and std over
    seeds per k), or a single few-shot ``RESULTS/D_few_shot/metrics.json``,
and the paper's tables ``scripts/paper_tables/D_{0,1,2,4}shot.csv`` (percent; ``_std`` over 5
seeds). Writes ``OUT.md`` (one table per dataset and setting; each cell "ours / paper (ours -
paper)") and ``OUT.csv`` (long format: dataset, setting, category, metric, ours, ours_std,
paper, paper_std, diff, comparable), all in percent; ``comparable`` is "no" on a mean row
taken over fewer categories than the paper's. Missing results are listed, not fatal.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from datasets.sets import CATEGORIES
from metrics import METRIC_KEYS as METRICS

DATASETS = {"mvtec": "MVTec AD", "visa": "VisA"}
# The paper's mean rows are over all categories of a dataset, also where a paper CSV lists
# only some categories' rows.
FULL = {ds: set(cats) for ds, cats in CATEGORIES.items()}
SETTINGS = ("0shot", "1shot", "2shot", "4shot")


def read_paper(path: Path) -> dict[str, dict[str, tuple[float, float | None]]]:
    """{category: {metric: (value, std or None)}} from a paper table CSV (percent)."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out[row["category"]] = {
                m: (float(row[m]), float(row[f"{m}_std"]) if row.get(f"{m}_std") else None)
                for m in METRICS}
    return out


def read_ours(results: Path, dataset: str, setting: str):
    """{category (+ 'mean'): {metric: (value %, std % or None)}}, or (None, reason)."""
    if setting == "0shot":
        path = results / f"{dataset}_zero_shot" / "metrics.json"
        if not path.is_file():
            return None, f"{path} not found"
        m = json.loads(path.read_text())
        rows = {**m["per_category"], "mean": m["mean"]}
        return {c: {k: (100 * v[k], None) for k in METRICS} for c, v in rows.items()}, str(path)
    k = int(setting[0])
    base = results / f"{dataset}_few_shot"
    summary = base / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text()).get(f"k{k}")
        if s is None:
            return None, f"{summary} has no k={k} runs"
        rows = s["metrics"]
        n = s.get("n_runs", "?")
        one = n == 1  # no spread to show over a single seed
        return ({c: {x: (100 * v[x]["mean"], None if one else 100 * v[x]["std"])
                     for x in METRICS} for c, v in rows.items()},
                f"{summary} (k={k}, {n} seed{'' if one else 's'})")
    single = base / "metrics.json"
    if single.is_file():
        m = json.loads(single.read_text())
        if m.get("k_shot") == k:
            rows = {**m["per_category"], "mean": m["mean"]}
            return ({c: {x: (100 * v[x], None) for x in METRICS} for c, v in rows.items()},
                    f"{single} (k={k}, one seed)")
    return None, f"no k={k} results in {base}"


def fmt(v: float | None, std: float | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    def r(x: float) -> str:
        return f"{round(x, 1) + 0.0:.1f}"  # no "-0.0"
    return r(v) + (f"±{r(std)}" if std is not None else "")


def compare(results: Path, paper_dir: Path) -> tuple[str, list[list], list[str]]:
    """Markdown text, CSV rows and notes for every dataset and setting found."""
    md = ["# APRIL-GAN: our results vs the paper", "",
          "Each cell: ours / paper (ours − paper), in percent. Few-shot: mean±std over seeds. "
          "Paper values from `scripts/paper_tables/`.", ""]
    head = ["| setting | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    overview: list[str] = []
    rows = [["dataset", "setting", "category", "metric", "ours", "ours_std", "paper",
             "paper_std", "diff", "comparable"]]
    sections, notes = [], []
    for ds, title in DATASETS.items():
        for setting in SETTINGS:
            paper_path = paper_dir / f"{ds}_{setting}.csv"
            ours, src = read_ours(results, ds, setting)
            if ours is None:
                notes.append(f"{title} {setting}: {src}")
                continue
            paper = read_paper(paper_path) if paper_path.is_file() else {}
            cats = [c for c in paper if c != "mean" and c in ours]
            cats += [c for c in ours if c != "mean" and c not in paper]
            sec = [f"## {title}, {setting.replace('shot', '-shot')}", "", f"Ours: `{src}`.", ""]
            extra = [c for c in ours if c != "mean" and c not in paper]
            ours_cats = {c for c in ours if c != "mean"}
            comparable = ours_cats == FULL[ds]
            if not comparable:
                absent = sorted(FULL[ds] - ours_cats)
                sec += [f"Note: our mean is over {len(ours_cats)} categories"
                        + (f" (missing {', '.join(absent)})" if absent else "")
                        + f", the paper's over all {len(FULL[ds])}: the means are not "
                        "comparable.", ""]
            if extra and paper:
                sec += [f"Note: `{paper_path.name}` has no rows for {', '.join(extra)} "
                        "(only the mean row covers them).", ""]
            if not paper:
                sec += [f"Note: no paper table {paper_path}.", ""]
            sec += ["| category | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
            for c in cats + ["mean"]:
                cells = []
                for m in METRICS:
                    o, os_ = ours.get(c, {}).get(m, (None, None))
                    p, ps = paper.get(c, {}).get(m, (None, None))
                    d = o - p if o is not None and p is not None else None
                    cells.append(f"{fmt(o, os_)} / {fmt(p, ps)}"
                                 + (f" ({d:+.1f})" if d is not None else ""))
                    rows.append([ds, setting, c, m, _num(o), _num(os_), _num(p), _num(ps),
                                 _num(d), "yes" if comparable or c != "mean" else "no"])
                label = f"**{c}**" if c == "mean" else c
                sec.append(f"| {label} | " + " | ".join(cells) + " |")
                if c == "mean":
                    star = "" if comparable else "*"
                    overview.append(f"| {title} {setting}{star} | " + " | ".join(cells) + " |")
            sections += sec + [""]
    if overview:
        md += ["## Mean over categories", ""] + head + overview + [""]
        if any("*" in o.split("|")[1] for o in overview):
            md += ["\\* our results do not cover all the dataset's categories: the means are "
                   "not comparable.", ""]
    md += sections
    if notes:
        md += ["## Not found", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(md), rows, notes


def _num(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/compare_paper.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=REPO / "results",
                   help="folder with {mvtec,visa}_{zero,few}_shot/ (default: <repo>/results)")
    p.add_argument("--paper_dir", type=Path, default=REPO / "scripts" / "paper_tables",
                   help="paper table CSVs (default: scripts/paper_tables)")
    p.add_argument("--out", type=Path, default=None,
                   help="output stem: writes OUT.md and OUT.csv (default: RESULTS/comparison)")
    a = p.parse_args(argv)
    text, rows, notes = compare(a.results, a.paper_dir)
    if len(rows) == 1:
        print(f"error: no results to compare in {a.results} ({'; '.join(notes)})", file=sys.stderr)
        return 2
    out = a.out or a.results / "comparison"
    out.parent.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = Path(f"{out}.md"), Path(f"{out}.csv")
    md_path.write_text(text)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    csv_path.write_text(buf.getvalue())
    print(text)
    print(f"wrote {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
