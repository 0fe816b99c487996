"""The runs of one evaluation: a zero-shot run, or few-shot runs with their reference images.

A few-shot evaluation with several ``--k_shot`` and ``--seed`` values is one pass over the test
images that serves every (k, seed) run; a ``--reference_list`` is one run that replays the
listed images (k = the longest list, no seed).

On a benchmark set without an official split (``datasets.sets.index_format``) every image is a
test image: zero-shot tests them all; each few-shot run draws its references from the normal
ones and leaves them out of its own test set (``FewShotRun.left_out``), so runs of different
seeds test different images. Each run records which images it tested (``info``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from datasets.anomaly_dataset import Sample
from datasets.references import check_train_split, draw_from_test, draw_references, read_reference_list
from datasets.sets.index_format import LEFT_OUT, read_index


@dataclass(frozen=True, eq=False)
class ZeroShotRun:
    """The zero-shot run: text prompts only, no reference images."""

    test_images: str | None = None  # a benchmark set's: which images were tested
    mode = "zero_shot"

    @property
    def label(self) -> str:
        return "zero-shot"

    def folder(self) -> str:
        return ""

    def info(self) -> dict:
        return {"test_images": self.test_images} if self.test_images else {}


@dataclass(frozen=True, eq=False)
class FewShotRun:
    """One few-shot run: k reference images per category, drawn under ``seed`` (None: listed)."""

    k: int
    seed: int | None
    references: dict[str, list[str]] = field(repr=False)
    test_images: str | None = None  # a benchmark set's: which images were tested
    left_out: dict[str, list[str]] | None = field(default=None, repr=False)  # {cat: [path]}:
    # the references that are test images of the set, not tested by this run (no split)
    mode = "few_shot"

    @property
    def label(self) -> str:
        return f"k={self.k} seed={self.seed}" if self.seed is not None else f"k={self.k} (listed)"

    def folder(self) -> str:
        """Sub-folder of ``--save_path`` when several runs share one evaluation."""
        return f"k{self.k}_seed{self.seed}"

    def info(self) -> dict:
        out = {"k_shot": self.k, "seed": self.seed}
        if self.test_images:
            out["test_images"] = self.test_images
        if self.left_out is not None:
            out["references_left_out"] = sum(map(len, self.left_out.values()))
        return out

    def tests(self, cls: str, path: str) -> bool:
        """Whether this run tests the image ``path`` of category ``cls``."""
        return self.left_out is None or path not in self.left_out.get(cls, ())


Run = ZeroShotRun | FewShotRun


def plan_runs(mode: str, k_shot: Sequence[int], seeds: Sequence[int], reference_list: str | None,
              meta: dict, root: Path, test: dict[str, list[Sample]], dataset: str) -> list[Run]:
    """The runs of one test.py call (reference images drawn or read, and checked).

    Raises DatasetError for an index of a set without an official split written under the
    old rule (``read_index``), with the command that rebuilds it.
    """
    index = read_index(meta, root, dataset)
    if mode == "zero_shot":
        return [ZeroShotRun(index.test_images)]
    cats, split = list(test), index.official_split
    shown = index.test_images if split else LEFT_OUT
    if reference_list:
        listed = read_reference_list(reference_list, cats, root, test, from_test=not split)
        left = None
        if not split:
            tested = {c: {s.img_path for s in test[c]} for c in cats}
            left = {c: [p for p in dict.fromkeys(v) if p in tested[c]] for c, v in listed.items()}
        return [FewShotRun(max(map(len, listed.values())), None, listed, shown, left)]
    if not split:
        runs = []
        for k in k_shot:
            for s in seeds:
                refs, left = draw_from_test(test, k, s, dataset)
                runs.append(FewShotRun(k, s, refs, shown, left))
        return runs
    from datasets import make_samples
    check_train_split(meta, cats, root)
    train = make_samples(root, "train", cats, dataset, meta)
    return [FewShotRun(k, s, draw_references(train, k, s), shown) for k in k_shot for s in seeds]
