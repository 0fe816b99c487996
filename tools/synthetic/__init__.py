"""Deterministic synthetic anomaly datasets in the MVTec AD and VisA layouts (test and demo data).

Not part of the runtime: the tests, the demo and the tiny reproduction use it to make data they
can check. ``python -m tools.synthetic --help`` writes one layout from the command line.
"""
from .cli import main
from .defects import CATEGORIES, DEFECTS, Category
from .layouts import VISA_CSV_HEADER, generate_mvtec, generate_visa

__all__ = ["CATEGORIES", "Category", "DEFECTS", "VISA_CSV_HEADER", "generate_mvtec", "generate_visa", "main"]
