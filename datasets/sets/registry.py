"""The registry of benchmark-set builders: one ``@register`` per raw layout, nothing else.

A builder ``build(root, out)`` turns the unpacked raw release at ROOT into the ``meta.json``
dict (``{"train": {cat: [records]}, "test": {cat: [records]}}``, records as
``datasets.prepare`` writes them, paths relative to ROOT; ``"labels": "image"`` for a set
without masks; ``"test_images"`` where the set's test images depend on the copy found). A set
without an official split puts every image into "test" and none into "train": zero-shot tests
them all, few-shot draws its references from the normal ones and leaves them out of that run
(``datasets.sets.index_format``). It only reads ROOT: a file it makes (merged or binarised masks) goes under OUT,
the folder the index is written to (ROOT itself unless the user names another). Registering it
makes its name a choice of ``python -m datasets.prepare``, ``--dataset`` of
test.py/train.py/prompt_study.py and the scripts, and a row of the README's dataset table.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class SetInfo:
    name: str
    title: str
    kind: str  # "industrial" or "medical"
    labels: str  # "pixel" (masks) or "image" (image-level labels only)
    test: str  # which images zero-shot tests
    train: str  # where few-shot draws its references from, or "none" (no normal images)
    official_split: bool  # the release's own test split (False: every image is a test image)
    objects: str  # the word(s) put into the prompts (the category names)
    licence: str
    source: str  # where the layout was learned
    archive: str | None  # the archive and its checksum, where a stable one exists
    build: Callable[[Path, Path], dict]

    @property
    def few_shot(self) -> str:
        """Which images a few-shot run tests, in the README's words."""
        if self.train.startswith("none"):
            return "none (no normal images: zero-shot only)"
        if self.official_split:
            return "the zero-shot test images"
        return "every image but the run's k references"


SETS: dict[str, SetInfo] = {}


def register(name: str, **info) -> Callable:
    """Decorator: ``@register("mpdd", title=..., kind=..., ...)`` over
    ``build(root, out) -> meta``."""
    def wrap(build: Callable[[Path, Path], dict]) -> Callable[[Path, Path], dict]:
        if name in SETS:
            raise ValueError(f"a builder named {name!r} is registered twice")
        SETS[name] = SetInfo(name=name, build=build, **info)
        return build
    return wrap
