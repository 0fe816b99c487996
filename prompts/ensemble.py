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
from utils.io import read_json

PROMPT_DIR = Path(__file__).resolve().parent


def read_lines(path: Path) -> tuple[str, ...]:
    """Non-empty, non-comment lines of a prompt file; each must contain one ``{}`` and appear
    once (a repeated line would silently weigh twice in the mean)."""
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    lines, seen = [], {}
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.count("{}") != 1:
            raise ValueError(f"{path}:{n}: a prompt line needs exactly one '{{}}' placeholder: {line!r}")
        if line in seen:
            raise ValueError(f"{path}:{n}: {line!r} repeats line {seen[line]}; each prompt "
                             "may appear once")
        seen[line] = n
        lines.append(line)
    if not lines:
        raise ValueError(f"{path} holds no prompts")
    return tuple(lines)


@dataclass(frozen=True)
class PromptSet:
    """The editable prompt data: state lists, templates and per-category overrides."""

    normal_states: tuple[str, ...]
    abnormal_states: tuple[str, ...]
    templates: tuple[str, ...]
    overrides: dict = field(default_factory=dict)

    @classmethod
    def load(cls, directory: str | Path | None = None) -> "PromptSet":
        """Read ``normal_states.txt``, ``abnormal_states.txt``, ``templates.txt`` and the optional
        ``overrides.json`` from ``directory`` (default: this package)."""
        d = Path(directory) if directory else PROMPT_DIR
        overrides = {}
        if (d / "overrides.json").is_file():
            overrides = read_json(d / "overrides.json", "prompt overrides")
            overrides = {k: v for k, v in overrides.items() if not k.startswith("_")}
        return cls(read_lines(d / "normal_states.txt"), read_lines(d / "abnormal_states.txt"),
                   read_lines(d / "templates.txt"), overrides)

    def states_for(self, class_name: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """(object word, normal states, abnormal states) for one category, overrides applied."""
        o = self.overrides.get(class_name, {})
        unknown = set(o) - {"object", "normal", "abnormal", "mode"}
        if unknown:
            raise ValueError(f"overrides for {class_name!r}: unknown keys {sorted(unknown)}")
        mode = o.get("mode", "extend")
        if mode not in ("extend", "replace"):
            raise ValueError(f"overrides for {class_name!r}: mode must be 'extend' or 'replace'")
        groups = []
        for key, base in (("normal", self.normal_states), ("abnormal", self.abnormal_states)):
            extra = tuple(o.get(key, ()))
            for s in extra:
                if s.count("{}") != 1:
                    raise ValueError(f"overrides for {class_name!r}: state {s!r} needs one '{{}}'")
            groups.append(extra if (mode == "replace" and extra) else base + extra)
        return o.get("object", class_name), groups[0], groups[1]

    def build_prompts(self, class_name: str) -> tuple[list[str], list[str]]:
        """All sentences for one category: (normal, abnormal), state-major then template order."""
        obj, normal, abnormal = self.states_for(class_name)
        return tuple([t.format(s.format(obj)) for s in states for t in self.templates]
                     for states in (normal, abnormal))


def load_prompts(prompt_dir: str | Path | None, categories: list[str]) -> PromptSet:
    """The prompt files, checked for every category (overrides included) before any work.

    Raises:
        DatasetError: a missing or malformed prompt file, naming it.
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


def check_lengths(tokenizer, sentences) -> None:
    """DatasetError naming the first sentence longer than the text encoder's context (77 tokens
    for CLIP, start and end tokens included): the tokenizer would cut it silently."""
    limit = int(getattr(tokenizer, "context_length", 0) or 0)
    encode = getattr(tokenizer, "encode", None)
    if not limit or not callable(encode):
        return
    for group in sentences:
        for text in group:
            try:
                n = len(encode(text)) + 2  # the start and end tokens
            except Exception:  # noqa: BLE001 - a tokenizer without a plain encode()
                return
            if n > limit:
                raise DatasetError(f"the prompt {text!r} is {n} tokens long, more than the text "
                                   f"encoder's context of {limit}: the tokenizer would cut it "
                                   "silently; shorten the state or template")


@torch.no_grad()
def ensemble_text_features(encode_text: Callable[[torch.Tensor], torch.Tensor], tokenizer,
                           sentences: tuple[list[str], list[str]],
                           device: torch.device | str = "cpu",
                           cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Encode both sentence groups and return T [D, 2] (column 0 normal, column 1 abnormal).

    ``cache`` (sentence -> its normalised embedding) lets many prompt sets share the sentences
    they have in common (prompt_study.py): each distinct sentence is encoded once.

    Raises DatasetError for a sentence longer than the tokenizer's context (``check_lengths``).
    """
    columns = []
    for group in sentences:
        if cache is None:
            check_lengths(tokenizer, (group,))
            emb = encode_text(tokenizer(group).to(device)).float()  # [P, D]
            emb = emb / emb.norm(dim=-1, keepdim=True)
        else:
            new = [t for t in dict.fromkeys(group) if t not in cache]
            if new:
                check_lengths(tokenizer, (new,))
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
                self.device, self.sentences)
        return self._cache[class_name]

