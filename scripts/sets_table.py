r"""The cross-dataset table of scripts/test_benchmarks.sh, and the list of prepared sets it runs.

    python scripts/sets_table.py list DATA_ROOT       # "NAME PATH FEW" per prepared set
    python scripts/sets_table.py table RESULTS        # RESULTS/benchmarks.{md,csv}, index.html

``list``: every folder under DATA_ROOT whose ``meta.json`` names a benchmark set (the builders
record it; a folder named like a set counts too), and whether it has normal training images
(FEW = 1: few-shot runs too). ``table``: one row per dataset and setting from each run's
``metrics.json`` mean row (percent, one decimal; "–" where a metric is undefined, e.g. pixel
metrics of an image-level set), then the mean over the industrial and over the medical sets,
each metric over the sets that define it, and a line naming them.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from datasets.sets import SETS  # noqa: E402
from metrics import METRIC_KEYS  # noqa: E402
from utils.io import atomic_write_text, csv_text  # noqa: E402

DASH = "–"


def prepared(data_root: Path) -> list[tuple[str, Path, bool]]:
    """(set name, folder, has normal train images) of every prepared set under ``data_root``."""
    out = []
    for meta_path in sorted(data_root.glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        name = meta.get("dataset") or meta_path.parent.name
        if name in SETS:
            few = any(meta.get("train", {}).get(c) for c in meta.get("train", {}))
            out.append((name, meta_path.parent, bool(few)))
    return out


def _pct(v) -> str:
    return DASH if v is None or not math.isfinite(v) else f"{100 * v:.1f}"


def table(results: Path) -> Path:
    """Write ``benchmarks.md``, ``benchmarks.csv`` and ``index.html`` under ``results``."""
    from engine.report import discover_reports, write_protocol_index

    rows = []
    for name, info in SETS.items():
        for setting in ("zero_shot", "few_shot"):
            m = results / f"{name}_{setting}" / "metrics.json"
            if m.is_file():
                mean = json.loads(m.read_text(encoding="utf-8"))["mean"]
                rows.append({"set": name, "kind": info.kind, "setting": setting, "mean": mean})
    if not rows:
        raise SystemExit(f"error: no <set>_zero_shot/metrics.json under {results}")
    lines = ["# APRIL-GAN on the benchmark sets", "",
             "Mean over each set's categories, in percent; – where a metric is undefined (no "
             "masks: pixel metrics; no normal test image: image metrics).", "",
             "| set | setting | " + " | ".join(METRIC_KEYS) + " |",
             "|---|---|" + "---|" * len(METRIC_KEYS)]
    csv_rows = [["set", "kind", "setting", *METRIC_KEYS]]
    for r in rows:
        cells = [_pct(r["mean"].get(k)) for k in METRIC_KEYS]
        lines.append(f"| {r['set']} | {r['setting']} | " + " | ".join(cells) + " |")
        csv_rows.append([r["set"], r["kind"], r["setting"], *cells])
    notes = []
    for kind in ("industrial", "medical"):
        for setting in ("zero_shot", "few_shot"):
            group = [r for r in rows if r["kind"] == kind and r["setting"] == setting]
            if not group:
                continue
            cells, over = [], []
            for k in METRIC_KEYS:
                have = [r for r in group if r["mean"].get(k) is not None
                        and math.isfinite(r["mean"][k])]
                cells.append(_pct(sum(r["mean"][k] for r in have) / len(have)) if have else DASH)
                over.append(f"{k} over {', '.join(r['set'] for r in have) or 'none'}")
            label = f"mean, {kind}"
            lines.append(f"| **{label}** | {setting} | " + " | ".join(cells) + " |")
            csv_rows.append([label, kind, setting, *cells])
            notes.append(f"- {label}, {setting}: " + "; ".join(over) + ".")
    lines += ["", "Means are taken over the sets where a metric is defined:", "", *notes, ""]
    atomic_write_text(results / "benchmarks.md", "\n".join(lines))
    atomic_write_text(results / "benchmarks.csv", csv_text(csv_rows))
    write_protocol_index(results, None, discover_reports(results),
                         title="APRIL-GAN: benchmark sets")
    return results / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="prepared sets under a data root").add_argument("root", type=Path)
    sub.add_parser("table", help="write the cross-dataset table").add_argument("results",
                                                                               type=Path)
    a = p.parse_args(argv)
    if a.command == "list":
        if not a.root.is_dir():
            print(f"error: data root not found: {a.root}", file=sys.stderr)
            return 2
        for name, path, few in prepared(a.root):
            print(f"{name} {path} {int(few)}")
        return 0
    print(f"wrote {table(a.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
