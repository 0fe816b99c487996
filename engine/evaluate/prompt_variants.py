"""The prompt sets a study compares: the baseline, given folders, and automatic ablations.

A variant is ``(name, PromptSet, folder or None, change)``. The baseline is ``--prompt_dir``
(default: the shipped prompts). ``--variants DIR ...`` adds one variant per folder (named by
the folder), in the ``prompts/`` format, with its own ``overrides.json``. ``--ablate states``
adds one variant per state left out of the baseline (normal and abnormal), ``--ablate
templates`` one per template left out; a group with a single line is not ablated (it would be
empty). ``write_prompt_dir`` writes any variant as a ready ``--prompt_dir`` folder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from errors import ConfigError, DatasetError
from utils.io import atomic_write_text

if TYPE_CHECKING:  # prompts imports torch: not needed for --help
    from prompts import PromptSet

FILES = (("normal_states", "normal_states.txt"), ("abnormal_states", "abnormal_states.txt"),
         ("templates", "templates.txt"))


@dataclass(frozen=True)
class Variant:
    name: str
    prompts: PromptSet
    prompt_dir: str | None  # the folder it was read from (None: made by an ablation)
    change: str  # what differs from the baseline, in words


def describe_change(base: PromptSet, other: PromptSet) -> str:
    """What ``other`` adds and drops against ``base``, per file ("same as the baseline" if
    nothing)."""
    parts = []
    for attr, file in FILES:
        a, b = set(getattr(base, attr)), set(getattr(other, attr))
        if a != b:
            parts.append(f"{file.split('.')[0].replace('_', ' ')} +{len(b - a)}/-{len(a - b)}")
    if base.overrides != other.overrides:
        parts.append("overrides differ")
    return ", ".join(parts) or "same as the baseline"


def ablations(base: PromptSet, kinds: list[str]) -> list[Variant]:
    """One variant per state (``states``) or template (``templates``) left out of ``base``."""
    out = []
    for kind in kinds:
        groups = (("normal_states", "normal state"), ("abnormal_states", "abnormal state")) \
            if kind == "states" else (("templates", "template"),)
        for attr, word in groups:
            lines = getattr(base, attr)
            if len(lines) < 2:
                continue
            for i, line in enumerate(lines):
                kept = lines[:i] + lines[i + 1:]
                name = f"no_{word.replace(' ', '_')}_{i + 1:02d}"
                out.append(Variant(name, replace(base, **{attr: kept}), None,
                                   f"without {word} {i + 1}: {line!r}"))
    return out


def build_variants(baseline_dir: str | None, folders: list[str], kinds: list[str],
                   categories: list[str]) -> list[Variant]:
    """The baseline first, then the folders, then the ablations; every set checked for every
    category (overrides included) before any work. Names must differ."""
    from prompts import load_prompts

    base = load_prompts(baseline_dir, categories)
    variants = [Variant("baseline", base, baseline_dir, "the baseline")]
    for folder in folders:
        if not Path(folder).is_dir():
            raise DatasetError(f"prompt variant folder not found: {folder}")
        p = load_prompts(folder, categories)
        variants.append(Variant(Path(folder).resolve().name, p, str(folder),
                                describe_change(base, p)))
    variants += ablations(base, kinds)
    seen: dict[str, str] = {}
    for v in variants:
        if v.name in seen:
            raise ConfigError(f"two prompt variants are named {v.name!r} ({seen[v.name]} and "
                              f"{v.prompt_dir}): a variant is named by its folder; rename one")
        seen[v.name] = str(v.prompt_dir)
    return variants


def write_prompt_dir(variant: Variant, folder: Path) -> Path:
    """``variant`` as a ``--prompt_dir`` folder (the three files and overrides.json)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    head = f"# prompt variant {variant.name!r} ({variant.change}), written by prompt_study.py\n"
    for attr, file in FILES:
        atomic_write_text(folder / file, head + "\n".join(getattr(variant.prompts, attr)) + "\n")
    atomic_write_text(folder / "overrides.json",
                      json.dumps(variant.prompts.overrides, indent=2) + "\n")
    return folder
