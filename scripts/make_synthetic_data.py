"""Write small synthetic MVTec-layout and VisA-layout datasets with their meta.json, in one go.

    python scripts/make_synthetic_data.py OUT              # OUT/mvtec, OUT/visa (+ meta.json)
    python scripts/make_synthetic_data.py OUT --mvtec_categories bottle grid screw --n_test 4

The same as ``python -m tools.synthetic {mvtec,visa} ...`` followed by
``python -m datasets.prepare {mvtec,visa} ...`` for each layout, in one process (the demo and
the tiny reproduction use it). Existing category folders are replaced.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets.sets.indexing import prepare
from tools.synthetic import CATEGORIES, generate_mvtec, generate_visa


def make(out: Path, mvtec_categories=("bottle", "grid"), visa_categories=("candle", "pcb1"),
         n_train: int = 5, n_test: int = 3, mvtec_size: int = 96, visa_size=(120, 90),
         seed: int = 0) -> tuple[Path, Path]:
    """Generate both layouts under ``out`` and index them; returns (mvtec root, visa root)."""
    m = generate_mvtec(out / "mvtec", mvtec_categories, n_train, n_test, n_test, mvtec_size,
                       seed, overwrite=True)
    v = generate_visa(out / "visa", visa_categories, n_train, n_test, n_test, visa_size,
                      seed + 1, overwrite=True)
    with contextlib.redirect_stderr(io.StringIO()):  # "standard categories not found" notices
        prepare("mvtec", m)
        prepare("visa", v)
    return m, v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/make_synthetic_data.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output folder (gets mvtec/ and visa/)")
    p.add_argument("--mvtec_categories", nargs="+", default=["bottle", "grid"],
                   choices=sorted(CATEGORIES), metavar="CAT")
    p.add_argument("--visa_categories", nargs="+", default=["candle", "pcb1"],
                   choices=sorted(CATEGORIES), metavar="CAT")
    p.add_argument("--n_train", type=int, default=5, help="normal train images per category")
    p.add_argument("--n_test", type=int, default=3,
                   help="normal and anomalous test images per category (each)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    m, v = make(a.out, a.mvtec_categories, a.visa_categories, a.n_train, a.n_test, seed=a.seed)
    print(f"synthetic MVTec layout: {m} ({', '.join(a.mvtec_categories)}), meta.json written")
    print(f"synthetic VisA layout:  {v} ({', '.join(a.visa_categories)}), meta.json written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
