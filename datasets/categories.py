"""Dataset layouts and the standard categories of MVTec AD and VisA (METHOD §8), in their order."""
from __future__ import annotations

from .sets import SET_NAMES

# folder: any dataset in the MVTec layout; then the other benchmark sets (datasets/sets/)
DATASETS = ("mvtec", "visa", "folder", *SET_NAMES)

MVTEC_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather",
                    "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood",
                    "zipper")
VISA_CATEGORIES = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1",
                   "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum")
CATEGORIES = {"mvtec": MVTEC_CATEGORIES, "visa": VISA_CATEGORIES}
