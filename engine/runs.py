"""The runs of one evaluation: a zero-shot run, or few-shot runs with their reference images.

A few-shot evaluation with several ``--k_shot`` and ``--seed`` values is one pass over the test
images that serves every (k, seed) run; a ``--reference_list`` is one run that replays the
listed images (k = the longest list, no seed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from datasets.anomaly_dataset import Sample
from datasets.references import check_train_split, draw_references, read_reference_list


@dataclass(frozen=True, eq=False)
class ZeroShotRun:
    """The zero-shot run: text prompts only, no reference images."""

    mode = "zero_shot"

    @property
    def label(self) -> str:
        return "zero-shot"

    def folder(self) -> str:
        return ""

    def info(self) -> dict:
        return {}


@dataclass(frozen=True, eq=False)
class FewShotRun:
    """One few-shot run: k reference images per category, drawn under ``seed`` (None: listed)."""

    k: int
    seed: int | None
    references: dict[str, list[str]] = field(repr=False)
    mode = "few_shot"

    @property
    def label(self) -> str:
        return f"k={self.k} seed={self.seed}" if self.seed is not None else f"k={self.k} (listed)"

    def folder(self) -> str:
        """Sub-folder of ``--save_path`` when several runs share one evaluation."""
        return f"k{self.k}_seed{self.seed}"

    def info(self) -> dict:
        return {"k_shot": self.k, "seed": self.seed}


Run = ZeroShotRun | FewShotRun


def plan_runs(mode: str, k_shot: Sequence[int], seeds: Sequence[int], reference_list: str | None,
              meta: dict, root: Path, test: dict[str, list[Sample]], dataset: str) -> list[Run]:
    """The runs of one test.py call (reference images drawn or read, and checked)."""
    if mode == "zero_shot":
        return [ZeroShotRun()]
    cats = list(test)
    if reference_list:
        listed = read_reference_list(reference_list, cats, root, test)
        return [FewShotRun(max(map(len, listed.values())), None, listed)]
    from datasets import make_samples
    check_train_split(meta, cats, root)
    train = make_samples(root, "train", cats, dataset, meta)
    return [FewShotRun(k, s, draw_references(train, k, s)) for k in k_shot for s in seeds]
