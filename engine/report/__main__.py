"""``python -m engine.report protocol RESULTS``: write ``RESULTS/index.html`` linking every
``report.html`` below RESULTS and the paper comparison (``RESULTS/comparison.csv`` of
``scripts/compare_paper.py``), for ``scripts/reproduce_all.sh`` to call at its end."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .indexes import discover_reports, write_protocol_index


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, write the protocol index, print its path; 0 on success, 2 on a bad folder."""
    p = argparse.ArgumentParser(prog="python -m engine.report", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    proto = sub.add_parser("protocol", help="write RESULTS/index.html")
    proto.add_argument("results", type=Path, help="the protocol's results folder")
    proto.add_argument("--comparison", type=Path, default=None,
                       help="comparison.md of compare_paper.py (default: RESULTS/comparison.md)")
    proto.add_argument("--title", default="APRIL-GAN: protocol results")
    a = p.parse_args(argv)
    if not a.results.is_dir():
        print(f"error: {a.results} is not a folder", file=sys.stderr)
        return 2
    md = a.comparison or a.results / "comparison.md"
    path = write_protocol_index(a.results, md, discover_reports(a.results), title=a.title)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
