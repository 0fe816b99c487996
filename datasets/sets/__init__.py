"""Every dataset this project indexes: the paper's two (MVTec AD and VisA, ``released``), any
folder in the MVTec layout (``folder``), and the field's other benchmark sets, industrial and
medical, built from their raw releases.

``SETS[name]`` holds each benchmark set's builder and what the README states about it (split,
object word, licence, source, archive); ``DATASETS`` lists every name ``--dataset`` and
``python -m datasets.prepare NAME ROOT`` accept; ``indexing.BUILDERS`` writes each one's index.
"""
from . import industrial, medical  # noqa: F401 - registers the builders
from .registry import SETS, SetInfo, register
from .released import MVTEC_CATEGORIES, VISA_CATEGORIES

SET_NAMES = tuple(SETS)
# folder: any dataset in the MVTec layout; then the other benchmark sets
DATASETS = ("mvtec", "visa", "folder", *SET_NAMES)
CATEGORIES = {"mvtec": MVTEC_CATEGORIES, "visa": VISA_CATEGORIES}

__all__ = ["CATEGORIES", "DATASETS", "MVTEC_CATEGORIES", "SETS", "SET_NAMES", "VISA_CATEGORIES",
           "SetInfo", "register"]
