"""Prompt ensemble: states x templates -> one normal and one abnormal text embedding per object.

APRIL-GAN §2.1 (after WinCLIP's compositional prompt ensemble). For each of the two groups,
every state is put into every template, each sentence is encoded and L2-normalised, the
embeddings are averaged and the mean is L2-normalised again:

    t_g = normalize( mean_{s in states_g, p in templates} normalize(E_text(p.format(s.format(obj)))) )
    T = [t_normal, t_abnormal]  ->  [D, 2]

The states and templates are plain text files beside this module; ``overrides.json`` holds
per-category changes. Nothing here needs a model except ``TextFeatureBank``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from errors import DatasetError

from .checks import PromptError, override_problems, scan_lines, scan_overrides

PROMPT_DIR = Path(__file__).resolve().parent
FILES = ("normal_states.txt", "abnormal_states.txt", "templates.txt")


def read_lines(path: Path) -> tuple[str, ...]:
    """Non-empty, non-comment lines of a prompt file; each must contain one ``{}`` and appear
    once (a repeated line would silently weigh twice in the mean). PromptError listing every
    problem of the file (``checks.scan_lines``)."""
    lines, problems = scan_lines(path)
    if problems:
        raise PromptError(problems)
    return tuple(line for _, line in lines)


@dataclass(frozen=True)
class PromptSet:
    """The editable prompt data: state lists, templates and per-category overrides."""

    normal_states: tuple[str, ...]
    abnormal_states: tuple[str, ...]
    templates: tuple[str, ...]
    overrides: dict = field(default_factory=dict)
    # where each line came from, "file:line": (group, text) for the files' lines (group
    # "normal", "abnormal" or "template"), (category, group, text) for an override's states
    origins: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, directory: str | Path | None = None) -> "PromptSet":
        """Read ``normal_states.txt``, ``abnormal_states.txt``, ``templates.txt`` and the optional
        ``overrides.json`` from ``directory`` (default: this package).

        Raises:
            PromptError: every problem of every file at once, each naming its file and line.
        """
        d = Path(directory) if directory else PROMPT_DIR
        problems, groups, origins = [], [], {}
        for name, group in zip(FILES, ("normal", "abnormal", "template")):
            lines, found = scan_lines(d / name)
            problems += found
            groups.append(tuple(line for _, line in lines))
            origins.update({(group, line): f"{d / name}:{n}" for n, line in lines})
        overrides = {}
        if (d / "overrides.json").is_file():
            overrides, extra, found = scan_overrides(d / "overrides.json", groups[0], groups[1])
            problems += found
            origins.update(extra)
        if problems:
            raise PromptError(problems)
        return cls(*groups, overrides, origins)

    def states_for(self, class_name: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """(object word, normal states, abnormal states) for one category, overrides applied.
        PromptError listing every problem of the category's override."""
        o = self.overrides.get(class_name, {})
        problems = override_problems(o, self.normal_states, self.abnormal_states)
        if problems:
            raise PromptError([f"overrides for {class_name!r}: {what}" for *_, what in problems])
        mode = o.get("mode", "extend")
        groups = []
        for key, base in (("normal", self.normal_states), ("abnormal", self.abnormal_states)):
            extra = tuple(o.get(key, ()))
            groups.append(extra if (mode == "replace" and extra) else base + extra)
        return o.get("object", class_name), groups[0], groups[1]

    def sentence_sources(self, class_name: str) -> dict[str, str]:
        """Each sentence of ``class_name`` -> the lines it is made of ("<state's file:line>
        in <template's file:line>"), where they are known (a loaded set)."""
        obj, normal, abnormal = self.states_for(class_name)
        out = {}
        for group, states in (("normal", normal), ("abnormal", abnormal)):
            for s in states:
                state = self.origins.get((class_name, group, s)) or self.origins.get((group, s))
                for t in self.templates:
                    where = (state, self.origins.get(("template", t)))
                    if all(where):
                        out.setdefault(t.format(s.format(obj)), " in ".join(where))
        return out

    def build_prompts(self, class_name: str) -> tuple[list[str], list[str]]:
        """All sentences for one category: (normal, abnormal), state-major then template order."""
        obj, normal, abnormal = self.states_for(class_name)
        return tuple([t.format(s.format(obj)) for s in states for t in self.templates]
                     for states in (normal, abnormal))


def load_prompts(prompt_dir: str | Path | None, categories: list[str]) -> PromptSet:
    """The prompt files, checked for every category (overrides included) before any work.

    Raises:
        DatasetError: missing or malformed prompt files, naming every problem with its file
            and line.
    """
    try:
        prompts = PromptSet.load(prompt_dir)
        for cls in categories:
            prompts.build_prompts(cls)
    except (OSError, ValueError) as e:
        raise DatasetError(f"bad prompt files: {e}") from e
    return prompts


def build_prompts(class_name: str, prompt_dir: str | Path | None = None) -> tuple[list[str], list[str]]:
    """Convenience: the (normal, abnormal) sentences of ``class_name`` from the prompt files."""
    return PromptSet.load(prompt_dir).build_prompts(class_name)


def check_lengths(tokenizer, sentences, sources: dict[str, str] | None = None) -> None:
    """DatasetError naming every sentence longer than the text encoder's context (77 tokens
    for CLIP, start and end tokens included), each with its token count and, from ``sources``
    (``PromptSet.sentence_sources``), the state and template lines it is made of: the tokenizer
    would cut them silently."""
    limit = int(getattr(tokenizer, "context_length", 0) or 0)
    encode = getattr(tokenizer, "encode", None)
    if not limit or not callable(encode):
        return
    problems = []
    for text in dict.fromkeys(t for group in sentences for t in group):
        try:
            n = len(encode(text)) + 2  # the start and end tokens
        except Exception:  # noqa: BLE001 - a tokenizer without a plain encode()
            return
        if n > limit:
            where = (sources or {}).get(text)
            problems.append(f"{where + ': ' if where else ''}the prompt {text!r} is {n} tokens "
                            f"long, more than the text encoder's context of {limit}")
    if problems:
        count = f"{len(problems)} prompts too long: " if len(problems) > 1 else ""
        raise DatasetError(count + "; ".join(problems) + ": the tokenizer would cut them "
                           "silently; shorten the states or templates")


@torch.no_grad()
def ensemble_text_features(encode_text: Callable[[torch.Tensor], torch.Tensor], tokenizer,
                           sentences: tuple[list[str], list[str]],
                           device: torch.device | str = "cpu",
                           cache: dict[str, torch.Tensor] | None = None,
                           sources: dict[str, str] | None = None) -> torch.Tensor:
    """Encode both sentence groups and return T [D, 2] (column 0 normal, column 1 abnormal).

    ``cache`` (sentence -> its normalised embedding) lets many prompt sets share the sentences
    they have in common (prompt_study.py): each distinct sentence is encoded once.

    Raises DatasetError naming every sentence longer than the tokenizer's context
    (``check_lengths``; ``sources`` names the lines each sentence is made of).
    """
    # both groups checked before any encoding, so one error names every long sentence
    check_lengths(tokenizer, [[t for t in g if cache is None or t not in cache]
                              for g in sentences], sources)
    columns = []
    for group in sentences:
        if cache is None:
            emb = encode_text(tokenizer(group).to(device)).float()  # [P, D]
            emb = emb / emb.norm(dim=-1, keepdim=True)
        else:
            new = [t for t in dict.fromkeys(group) if t not in cache]
            if new:
                fresh = encode_text(tokenizer(new).to(device)).float()
                cache.update(zip(new, fresh / fresh.norm(dim=-1, keepdim=True)))
            emb = torch.stack([cache[t] for t in group])
        mean = emb.mean(dim=0)
        columns.append(mean / mean.norm())
    return torch.stack(columns, dim=1)  # [D, 2]


class TextFeatureBank:
    """Per-category text features T [D, 2], computed once per category and cached.

    Args:
        encode_text: [P, L] token ids -> [P, D] (e.g. ``ClipBackbone.encode_text``).
        tokenizer: the open_clip tokenizer of the model.
        prompts: the prompt data (default: the files of this package).
    """

    def __init__(self, encode_text, tokenizer, prompts: PromptSet | None = None,
                 device: torch.device | str = "cpu",
                 sentences: dict[str, torch.Tensor] | None = None):
        self.encode_text, self.tokenizer, self.device = encode_text, tokenizer, device
        self.prompts = prompts or PromptSet.load()
        self.sentences = sentences  # shared sentence embeddings (several prompt sets), or None
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, class_name: str) -> torch.Tensor:
        if class_name not in self._cache:
            self._cache[class_name] = ensemble_text_features(
                self.encode_text, self.tokenizer, self.prompts.build_prompts(class_name),
                self.device, self.sentences, self.prompts.sentence_sources(class_name))
        return self._cache[class_name]

