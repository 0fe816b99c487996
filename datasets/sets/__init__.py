"""Builders of the field's other benchmark sets (industrial and medical) from their raw releases.

``SETS[name]`` holds each builder and what the README states about it (split, object word,
licence, source, archive). ``python -m datasets.prepare NAME ROOT`` runs one.
"""
from . import industrial, medical  # noqa: F401 - registers the builders
from .registry import SETS, SetInfo, register

SET_NAMES = tuple(SETS)

__all__ = ["SETS", "SET_NAMES", "SetInfo", "register"]
