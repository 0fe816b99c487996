r"""The cross-dataset table of scripts/test_benchmarks.sh, and the list of prepared sets it runs.

    python scripts/sets_table.py list DATA_ROOT       # "NAME PATH FEW" per prepared set
    python scripts/sets_table.py table RESULTS [--checkpoint CK]
                                                      # RESULTS/benchmarks.{md,csv}, index.html

``list``: every folder under DATA_ROOT whose ``meta.json`` names a benchmark set (the builders
record it; a folder named like a set counts too), and whether a few-shot run has normal images
to draw references from (FEW = 1: few-shot runs too): train images where the set has an official
split, its normal test images where it has none. An index of a set without an official split
written under the old rule is an error naming the command that rebuilds it. ``table``: one row
per dataset and setting from each run's ``metrics.json`` mean row (percent, one decimal; "–"
where a metric is undefined, e.g. pixel metrics of an image-level set), then the mean over the
industrial and over the medical sets, each metric over the sets that define it, and a line
naming them.

Published figures: where a paper reports APRIL-GAN zero-shot on a set, ``benchmarks.md`` also
has one table per source with each cell "ours / published (ours - published)", and
``published.csv`` the same in long form (source, set, metric, ours, published, diff,
comparable, why). The figures are in ``scripts/paper_tables/sets_<source>.csv`` (percent; an empty
cell: not reported), what the source tested on each set in ``sets_<source>_tested.csv`` (its
own code's rule, and the ``test_images`` of our index that are the same images; empty: none
of ours, or not published), its training in ``PUBLISHED`` below. ``comparable`` is "yes" for a
set only when all hold: the projections were trained as the source trained them (the dataset,
its labelled test split, read from the ``--checkpoint``'s recorded config, or ``--trained_on``
for a checkpoint that records none), with the model and size we assume the source ran (the
released setting: ``engine.config``'s defaults, which neither source states); the run tested
the images the source tested (its ``metrics.json`` records them); and the run is zero-shot, as
the published figures are. Otherwise it says which fails.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from datasets.sets import DATASETS, SETS
from datasets.sets.index_format import read_index
from errors import DatasetError, one_line
from metrics import METRIC_KEYS
from utils.io import atomic_write_text, csv_text

from engine.config import ModelConfig

DASH = "–"
TABLES = REPO / "scripts" / "paper_tables"
RELEASED = {f.name: f.default for f in fields(ModelConfig) if f.name in ("model", "image_size")}
MODEL_NOTE = (f"{RELEASED['model']} at {RELEASED['image_size']} px is our assumption (the "
              "released setting, engine/config/'s defaults): neither source states the model "
              "or size it ran APRIL-GAN at")


@dataclass(frozen=True)
class Published:
    """APRIL-GAN's zero-shot figures on the benchmark sets as one paper reports them."""
    key: str            # scripts/paper_tables/sets_<key>.csv and sets_<key>_tested.csv
    citation: str
    training: str       # how the source says APRIL-GAN was trained there, and its metrics
    trained_on: str | None  # the --dataset (labelled test split) a checkpoint must be trained
                            # on to compare with these figures; None: never


PUBLISHED = (
    Published("anomalyclip",
              "AnomalyCLIP (Zhou et al., ICLR 2024, arXiv:2310.18961), Tables 1 and 2, column "
              "'VAND'",
              "projections trained on the MVTec AD test set, every other set zero-shot; image "
              "(AUROC, AP), pixel (AUROC, PRO); run by AnomalyCLIP's authors",
              "mvtec"),
    Published("adaclip",
              "AdaCLIP (Cao et al., ECCV 2024, arXiv:2407.15795), Tables 1 and 2, column "
              "'APRIL-GAN'",
              "retrained by AdaCLIP's authors on two sets together: the paper's text names MVTec "
              "AD with ClinicDB (VisA with ColonDB when testing those); the 'Corrections' "
              "section of the AdaCLIP README (caoyunkang/AdaCLIP) amends it: by default MVTec AD "
              "with ColonDB, and VisA with ClinicDB for the evaluations on MVTec AD and ColonDB; "
              "image and pixel (AUROC, max-F1)",
              None),
)


def prepared(data_root: Path) -> list[tuple[str, Path, bool]]:
    """(set name, folder, few-shot possible) of every prepared set under ``data_root``: few-shot
    needs normal images to draw references from (train, or test without an official split).

    Raises DatasetError for an index written under the old rule (``read_index``)."""
    out = []
    for meta_path in sorted(data_root.glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        name = meta.get("dataset") or meta_path.parent.name
        if name in SETS:
            split = read_index(meta, meta_path.parent, name).official_split
            pool = meta.get("train" if split else "test", {})
            few = all(any(not r.get("anomaly") for r in rows) for rows in pool.values())
            out.append((name, meta_path.parent, bool(pool) and few))
    return out


def _pct(v) -> str:
    return DASH if v is None or not math.isfinite(v) else f"{100 * v:.1f}"


def read_published(source: Published) -> dict[str, dict[str, float]]:
    """{set: {metric: percent}} of one source; metrics it does not report (empty) are absent."""
    out, path = {}, TABLES / f"sets_{source.key}.csv"
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            figures = {}
            for k in METRIC_KEYS:
                cell = (row.get(k) or "").strip()
                try:
                    if cell:
                        figures[k] = float(cell)
                except ValueError:
                    raise SystemExit(f"error: {path}: set {row.get('set')}, column {k}: "
                                     f"{cell!r} is not a number") from None
            out[row["set"]] = figures
    return out


def recorded_training(checkpoint: Path | None) -> dict | None:
    """What the checkpoint records of its training (train.py's config: dataset, train_split,
    train_image_dir, model, image_size); None when it records nothing (the authors' release)."""
    if checkpoint is None:
        return None
    import torch

    try:
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file: say so, compare as "unknown"
        print(f"warning: cannot read {checkpoint} ({e}); comparability unknown", file=sys.stderr)
        return None
    config = ck.get("config") if isinstance(ck, dict) else None
    return config if isinstance(config, dict) and config.get("dataset") else None


def read_tested(source: Published) -> dict[str, tuple[str, str]]:
    """{set: (what the source tested, the ``test_images`` of ours that are those images or
    "")} from ``sets_<key>_tested.csv``."""
    path = TABLES / f"sets_{source.key}_tested.csv"
    with open(path, newline="", encoding="utf-8") as f:
        return {row["set"]: (row["tested"].strip(), (row.get("ours") or "").strip())
                for row in csv.DictReader(f)}


def training_problems(src: Published, recorded: dict | None, stated: str | None,
                      checkpoint: Path | None) -> tuple[list[str], str]:
    """(why the projections were not trained as the source trained them, what holds): the
    source's dataset, on its labelled test split (not --train_split train or
    --train_image_dir), with the model and size we assume it ran (``RELEASED``). ``stated``
    (--trained_on) speaks for a checkpoint that records nothing."""
    if src.trained_on is None:
        return ["the source trained on two sets together, this project on one"], ""
    if recorded is None:
        if stated is None:
            hint = "pass --trained_on" if checkpoint else "pass --checkpoint"
            return [f"the source trained on {src.trained_on}; these projections' training set "
                    f"is unknown ({hint})"], ""
        if stated != src.trained_on:
            return [f"the source trained on {src.trained_on}, these projections on {stated} "
                    "(--trained_on)"], ""
        return [], f"projections trained on {stated} (--trained_on)"
    problems = []
    if recorded["dataset"] != src.trained_on:
        problems.append(f"trained on {recorded['dataset']}, the source on {src.trained_on}")
    if recorded.get("train_split", "test") != "test":
        problems.append(f"--train_split {recorded['train_split']} (the source trained on the "
                        "labelled test split)")
    if recorded.get("train_image_dir"):
        problems.append("--train_image_dir (the source trained on labelled defects)")
    model, size = RELEASED["model"], RELEASED["image_size"]
    if recorded.get("model") and recorded["model"] != model:
        problems.append(f"model {recorded['model']}, not {model} (the released setting, which "
                        "we assume the source ran)")
    if recorded.get("image_size") and int(recorded["image_size"]) != size:
        problems.append(f"image size {recorded['image_size']}, not {size} (the released "
                        "setting, which we assume the source ran)")
    return problems, f"projections trained on {src.trained_on}'s test split, {model} at {size} px"


def comparability(src: Published, name: str, run: dict, recorded: dict | None,
                  stated: str | None, checkpoint: Path | None) -> tuple[bool, str]:
    """(comparable, why) of our zero-shot run on set ``name`` (its ``metrics.json``) with the
    source's figure: trained as the source trained (``training_problems``), the source's test
    images (``sets_<key>_tested.csv`` against the run's recorded ``test_images``), and the
    mode (the published figures are zero-shot)."""
    problems, trained = training_problems(src, recorded, stated, checkpoint)
    tested, ours = read_tested(src).get(name, ("not stated", ""))
    ran = run.get("test_images")
    if not ours:
        problems.append(f"the source tested {tested}: not the images of our index")
    elif ran is None:
        problems.append("the run records no test images (an index written by an older "
                        "version: prepare the set again and rerun)")
    elif ran != ours:
        problems.append(f"the run tested {ran}, the source {tested}")
    if run.get("mode") != "zero_shot":
        problems.append(f"the run is {run.get('mode') or 'of an unrecorded mode'}; the "
                        "published figures are zero-shot")
    if problems:
        return False, "; ".join(problems)
    return True, f"{trained}; the source's test images ({ours})"


def published_sections(rows: list[dict], recorded: dict | None, stated: str | None,
                       checkpoint: Path | None) -> tuple[list[str], list[list]]:
    """Markdown sections and long CSV rows comparing our zero-shot means with each source."""
    ours = {r["set"]: r for r in rows if r["setting"] == "zero_shot"}
    lines, long = [], [["source", "set", "metric", "ours", "published", "diff", "comparable",
                        "why"]]
    for src in PUBLISHED:
        theirs = {k: v for k, v in read_published(src).items() if k in ours}
        if not theirs:
            continue
        metrics = [k for k in METRIC_KEYS if any(k in v for v in theirs.values())]
        lines += ["", f"## Published: {src.citation}", "",
                  f"Training: {src.training}. Model and size: {MODEL_NOTE}.", "",
                  "Zero-shot; each cell: ours / published (ours − published), percent.", "",
                  "| set | " + " | ".join(metrics) + " | comparable |",
                  "|---|" + "---|" * (len(metrics) + 1)]
        for name, figures in theirs.items():
            same, reason = comparability(src, name, ours[name]["run"], recorded, stated,
                                         checkpoint)
            cells = []
            for k in metrics:
                v, p = ours[name]["mean"].get(k), figures.get(k)
                mine = None if v is None or not math.isfinite(v) else 100 * v
                if p is None:
                    cells.append(DASH)
                    continue
                diff = None if mine is None else mine - p
                cells.append(f"{_pct(v)} / {p:.1f}" + ("" if diff is None else f" ({diff:+.1f})"))
                long.append([src.key, name, k, "" if mine is None else f"{mine:.1f}", f"{p:.1f}",
                             "" if diff is None else f"{diff:.1f}", "yes" if same else "no",
                             reason])
            why = ("yes: " if same else "no: ") + reason
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {why} |")
    return lines, long


def table(results: Path, checkpoint: Path | None = None, trained: str | None = None) -> Path:
    """Write ``benchmarks.md``, ``benchmarks.csv``, ``index.html`` (and ``published.csv``).

    ``trained``: the dataset the projections were trained on, for a checkpoint that does not
    record it (the authors' released checkpoints); a recorded one wins, with a warning when
    they disagree.
    """
    recorded = recorded_training(checkpoint)
    if recorded and trained and trained != recorded["dataset"]:
        print(f"warning: --trained_on {trained}, but {checkpoint} records training on "
              f"{recorded['dataset']}: the recorded one is used", file=sys.stderr)
    from engine.report import discover_reports, write_protocol_index

    rows = []
    for name, info in SETS.items():
        for setting in ("zero_shot", "few_shot"):
            m = results / f"{name}_{setting}" / "metrics.json"
            if m.is_file():
                run = json.loads(m.read_text(encoding="utf-8"))
                rows.append({"set": name, "kind": info.kind, "setting": setting,
                             "mean": run["mean"], "run": run})
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
    lines += ["", "Means are taken over the sets where a metric is defined:", "", *notes]
    sections, long = published_sections(rows, recorded, trained, checkpoint)
    lines += [*sections, ""]
    if len(long) > 1:
        atomic_write_text(results / "published.csv", csv_text(long))
    else:  # a rerun without published sets: no stale comparison from an earlier one
        (results / "published.csv").unlink(missing_ok=True)
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
    t = sub.add_parser("table", help="write the cross-dataset table")
    t.add_argument("results", type=Path)
    t.add_argument("--checkpoint", type=Path, default=None,
                   help="the runs' checkpoint: its training set decides which published "
                        "figures are comparable")
    t.add_argument("--trained_on", default=None, metavar="DATASET", choices=DATASETS,
                   help="the dataset the projections were trained on, for a checkpoint that "
                        "does not record it (e.g. mvtec for the authors' MVTec checkpoint)")
    a = p.parse_args(argv)
    if a.command == "list":
        if not a.root.is_dir():
            print(f"error: data root not found: {a.root}", file=sys.stderr)
            return 2
        try:
            found = prepared(a.root)
        except DatasetError as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
        for name, path, few in found:
            print(f"{name} {path} {int(few)}")
        return 0
    print(f"wrote {table(a.results, a.checkpoint, a.trained_on)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
