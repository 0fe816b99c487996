"""Checks of a prompt folder: every problem found, each named by file and line, in one error.

A prompt line needs exactly one ``{}`` and may appear once in its file (a repeated line would
weigh twice in the mean); ``overrides.json`` entries need known keys, a valid ``mode``, and states
with one ``{}`` each that do not repeat. The checks never stop at the first problem: a folder with
three bad lines reports all three (``PromptError.problems``), so one edit fixes them all.
"""
from __future__ import annotations

import json
from pathlib import Path

OVERRIDE_KEYS = ("object", "normal", "abnormal", "mode")


class PromptError(ValueError):
    """Every problem found in prompt files, in one message; ``problems`` lists them, each
    starting ``file:line:`` where a file and line are known."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        count = f"{len(self.problems)} problems: " if len(self.problems) > 1 else ""
        super().__init__(count + "; ".join(self.problems))


def scan_lines(path: Path) -> tuple[list[tuple[int, str]], list[str]]:
    """``([(line number, prompt)], problems)`` of one prompt file.

    Blank lines and ``#`` comments are skipped. Problems: the file is missing or unreadable,
    holds no prompt, a line without exactly one ``{}``, a line repeating an earlier one; each
    ``"{path}:{line}: ..."``, all of them (the scan goes on after a problem).
    """
    if not path.is_file():
        return [], [f"prompt file not found: {path}"]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return [], [f"{path}: cannot read it as UTF-8 text ({e})"]
    lines: list[tuple[int, str]] = []
    problems, seen = [], {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.count("{}") != 1:
            problems.append(f"{path}:{n}: a prompt line needs exactly one '{{}}' placeholder: "
                            f"{line!r}")
        elif line in seen:
            problems.append(f"{path}:{n}: {line!r} repeats line {seen[line]}; each prompt may "
                            "appear once")
        else:
            seen[line] = n
            lines.append((n, line))
    if not lines and not problems:
        problems.append(f"{path} holds no prompts")
    return lines, problems


def override_problems(entry, normal: tuple[str, ...],
                      abnormal: tuple[str, ...]) -> list[tuple[object, int, str]]:
    """Every problem of one category's override ``entry`` against the base states, as
    ``(offending value or None, n, what is wrong)``: the value's n-th occurrence (from 0) in the
    entry is where the problem is, which lets a caller find its line."""
    if not isinstance(entry, dict):
        return [(None, 0, f"must be an object with some of the keys {', '.join(OVERRIDE_KEYS)}")]
    out: list[tuple[object, int, str]] = []
    unknown = sorted(set(entry) - set(OVERRIDE_KEYS))
    if unknown:
        out.append((unknown[0], 0, f"unknown keys {unknown} (known: {', '.join(OVERRIDE_KEYS)})"))
    mode = entry.get("mode", "extend")
    if mode not in ("extend", "replace"):
        out.append((mode, 0, f"mode must be 'extend' or 'replace', not {mode!r}"))
    obj = entry.get("object")
    if obj is not None and not (isinstance(obj, str) and obj.strip()):
        out.append((obj, 0, f"object must be a non-empty word, not {obj!r}"))
    seen: dict[str, int] = {}  # how often each string came before, in both lists
    for key, base in (("normal", normal), ("abnormal", abnormal)):
        states = entry.get(key, [])
        if not isinstance(states, list) or not all(isinstance(s, str) for s in states):
            out.append((key, 0, f"{key!r} must be a list of states (strings)"))
            continue
        mine: set[str] = set()
        for s in states:
            n = seen.get(s, 0)
            seen[s] = n + 1
            if s.count("{}") != 1:
                out.append((s, n, f"{key} state {s!r} needs exactly one '{{}}' placeholder"))
            elif s in mine:
                out.append((s, n, f"{key} state {s!r} is listed twice (it would weigh twice)"))
            elif mode == "extend" and s in base:
                out.append((s, n, f"{key} state {s!r} is already in {key}_states.txt (with "
                                  "mode 'extend' it would weigh twice)"))
            mine.add(s)
    return out


def top_level_keys(text: str) -> dict[str, int]:
    """Offset of each top-level key of the JSON object ``text`` (well-formed JSON)."""
    keys, depth, i = {}, 0, 0
    while i < len(text):
        c = text[i]
        if c == '"':
            key, end = json.decoder.scanstring(text, i + 1)
            if depth == 1 and text[end:].lstrip().startswith(":"):
                keys.setdefault(key, i)
            i = end
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        i += 1
    return keys


def line_of(text: str, offset: int) -> int:
    """1-based line number of ``offset`` in ``text``."""
    return text.count("\n", 0, max(offset, 0)) + 1


def scan_overrides(path: Path, normal: tuple[str, ...],
                   abnormal: tuple[str, ...]) -> tuple[dict, dict, list[str]]:
    """``(overrides, origins, problems)`` of an ``overrides.json``: the entries (keys starting
    with ``_`` are comments, dropped), ``{(category, group, state): "file:line"}`` for the states
    it adds, and every problem, each ``"{path}:{line}: '{category}': ..."``."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return {}, {}, [f"{path}:{e.lineno}: not valid JSON ({e.msg})"]
    except (OSError, UnicodeDecodeError) as e:
        return {}, {}, [f"{path}: cannot read it as UTF-8 text ({e})"]
    if not isinstance(data, dict):
        return {}, {}, [f"{path}:1: must be a JSON object of categories"]
    keys = top_level_keys(text)
    overrides = {k: v for k, v in data.items() if not k.startswith("_")}
    origins, problems = {}, []

    def where(cls: str, value, nth: int = 0) -> str:
        """file:line of the nth ``value`` in the entry of ``cls`` (of its key if not found)."""
        start = keys.get(cls, 0)
        end = min((o for o in keys.values() if o > start), default=len(text))
        if isinstance(value, str):  # searched from past the key's first quote: a state equal to
            found, quoted = start, json.dumps(value, ensure_ascii=False)  # the key is its own
            for _ in range(nth + 1):
                found = text.find(quoted, found + 1, end)
                if found < 0:
                    break
            start = found if found >= 0 else start
        return f"{path}:{line_of(text, start)}"

    for cls, entry in overrides.items():
        for value, nth, what in override_problems(entry, normal, abnormal):
            problems.append(f"{where(cls, value, nth)}: {cls!r}: {what}")
        if isinstance(entry, dict):
            for group in ("normal", "abnormal"):
                states = entry.get(group)
                for s in states if isinstance(states, list) else []:
                    if isinstance(s, str):
                        origins.setdefault((cls, group, s), where(cls, s))
    return overrides, origins, problems
