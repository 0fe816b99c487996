"""Command line of the synthetic data generator: ``python -m tools.synthetic {mvtec,visa} ROOT``."""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Sequence

from .defects import CATEGORIES
from .layouts import __doc__ as LAYOUTS_DOC
from .layouts import generate_mvtec, generate_visa


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    kinds = "categories (image mode: defect types):\n" + "\n".join(
        f"  {k:8s} {'L' if c.gray else 'RGB'}: {', '.join(c.defects)}" for k, c in CATEGORIES.items())
    p = argparse.ArgumentParser(prog="python -m tools.synthetic", description=LAYOUTS_DOC, epilog=kinds,
                                formatter_class=_HelpFormatter)
    sub = p.add_subparsers(dest="layout", required=True, metavar="{mvtec,visa}")
    for layout, cats, size, good, bad in (("mvtec", "bottle grid", [96], "good", "defect"),
                                          ("visa", "candle pcb1", [120, 90], "normal", "anomaly")):
        s = sub.add_parser(layout, help=f"write the {layout} folder layout", epilog=kinds,
                           formatter_class=_HelpFormatter)
        s.add_argument("root", type=Path, help="dataset root to write into")
        s.add_argument("--categories", nargs="+", default=cats.split(), metavar="CAT", help="categories")
        s.add_argument("--seed", type=int, default=0, help="master seed")
        s.add_argument("--image-size", nargs="+", type=int, default=size, metavar="N",
                       help="one int for square images, or W H")
        s.add_argument("--n-train", type=int, default=5, help="training normals per category")
        for kind in (good, bad):
            s.add_argument(f"--n-test-{kind}", type=int, default=3, help=f"test {kind} images per category")
        s.add_argument("--overwrite", action="store_true", help="replace existing category folders")
    args = p.parse_args(argv)
    if len(args.image_size) not in (1, 2):
        p.error("--image-size takes one or two integers")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    a = parse_args(argv)
    kw = dict(categories=a.categories, n_train=a.n_train, seed=a.seed, overwrite=a.overwrite,
              image_size=a.image_size[0] if len(a.image_size) == 1 else tuple(a.image_size))
    try:
        if a.layout == "mvtec":
            root = generate_mvtec(a.root, n_test_good=a.n_test_good, n_test_defect=a.n_test_defect, **kw)
        else:
            root = generate_visa(a.root, n_test_normal=a.n_test_normal, n_test_anomaly=a.n_test_anomaly, **kw)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    for name in a.categories:
        files = [p for p in sorted((root / name).rglob("*")) if p.is_file()]
        counts = Counter(p.parent.relative_to(root / name).as_posix() for p in files)
        print(f"{root / name}: " + ", ".join(f"{k} ({v})" for k, v in sorted(counts.items())))
    if a.layout == "visa":
        print(root / "split_csv" / "1cls.csv")
    print(f"wrote synthetic {a.layout} data (seed {a.seed}) to {root}; no meta.json written")
