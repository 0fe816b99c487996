"""Command lines generated from the config dataclasses, and the one error path of every script.

Each field of a config dataclass is one flag: its name (the released underscore spelling, plus a
dashed alias), its type (from the annotation), its default and its help (from ``opt(...)``
metadata). ``--help`` states each default once. Nothing here imports torch, so ``--help``
returns at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Callable

from errors import ConfigError, Interrupted, UserError, one_line, os_fault, wrapped_user_error

MISSING = dataclasses.MISSING


def opt(default: Any = None, help: str = "", *, default_text: str | None = None,
        choices: tuple | None = None, required: bool = False, minimum: float | None = None,
        maximum: float | None = None, range_text: str | None = None, group: str | None = None,
        metavar: str | None = None, path: bool = False, cli: bool = True) -> Any:
    """A config field with its command-line help.

    Args:
        default: the default value (lists are copied per instance).
        help: what the flag means; ``[default: ...]`` is appended from ``default`` (or
            ``default_text`` when the default is resolved later, e.g. "cuda if available").
        choices, minimum, maximum: allowed values, checked when the config is built.
        range_text: the valid range in words, for the one-line error of a value outside it
            (e.g. "a fraction above 0 and below 1 (0.01 for 1%)"); made from ``minimum`` and
            ``maximum`` when not given.
        required: the flag must be given (no default shown).
        group: argparse group title (e.g. "model").
        path: the value is a file or folder (``config.json`` records it made absolute).
        cli: False for fields that are set by the program, not by a flag.
    """
    meta = dict(help=help, default_text=default_text, choices=choices, required=required,
                minimum=minimum, maximum=maximum, range_text=range_text, group=group,
                metavar=metavar, path=path, cli=cli)
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


def _base_type(tp) -> tuple[type, bool]:
    """(element type, is_list) of an annotation such as ``int``, ``list[int] | None``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0], True
    return tp, False


def _allows_none(tp) -> bool:
    return (isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union) and \
        type(None) in typing.get_args(tp)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def help_text(f: dataclasses.Field) -> str:
    m = f.metadata
    text = m.get("help", "")
    if m.get("required"):
        return f"{text} (required)"
    shown = m.get("default_text")
    if shown is None:
        d = _default_of(f)
        if d is None or d is False:
            return text
        shown = " ".join(map(str, d)) if isinstance(d, list) else str(d)
    return f"{text} [default: {shown}]"


class Config:
    """Base of the script configs: type-checks every field when an instance is made."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            check_value(f, hints[f.name], getattr(self, f.name))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check_given(self, given: set[str]) -> None:
        """ConfigError for flags given on the command line that this combination ignores
        (``given``: the field names whose flag was typed); nothing by default."""


def check_value(f: dataclasses.Field, tp, value: Any) -> None:
    """Raise ConfigError when ``value`` does not fit field ``f`` (type, choices, range)."""
    name = f"--{f.name}"
    if value is None:
        if _allows_none(tp) or f.metadata.get("required"):
            return
        raise ConfigError(f"{name} needs a value")
    base, is_list = _base_type(tp)
    values = value if is_list else [value]
    if is_list and not isinstance(value, list):
        raise ConfigError(f"{name} must be a list, got {value!r}")
    for v in values:
        ok = isinstance(v, base) and not (base in (int, float) and isinstance(v, bool))
        if base is float and isinstance(v, int) and not isinstance(v, bool):
            ok = True
        if not ok:
            raise ConfigError(f"{name} must be of type {base.__name__}, got {v!r}")
        m = f.metadata
        if m.get("choices") and v not in m["choices"]:
            raise ConfigError(f"{name} {v!r} is not one of: {', '.join(map(str, m['choices']))}")
        low, high = m.get("minimum"), m.get("maximum")
        if base is float and not math.isfinite(v):
            raise ConfigError(f"{name} takes {range_text(m, base)}, got {v}")
        if (low is not None and not v >= low) or (high is not None and not v <= high):
            raise ConfigError(f"{name} takes {range_text(m, base)}, got {v}")


def range_text(meta: Any, base: type) -> str:
    """The valid values of a numeric field in words: its ``range_text``, else from its bounds
    ("a whole number >= 1", "a number from 0.0 to 1.0", "a finite number")."""
    if meta.get("range_text"):
        return meta["range_text"]
    low, high = meta.get("minimum"), meta.get("maximum")
    kind = {int: "a whole number", float: "a number" if high is not None else
            "a finite number"}.get(base, "a value")
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    if low is not None:
        return f"{kind} >= {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind


def flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, **kw) -> None:
    """Add ``--name`` plus its dashed alias ``--na-me`` when the name has underscores."""
    names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*names, dest=name, **kw)


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (``prog: error: ...``, exit status 2)
    instead of the whole usage block; ``--help`` still prints it."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (python {self.prog} --help lists the "
                     "flags)\n")


class _Number:
    """An argparse ``type`` for a numeric field: text that is no number is refused naming the
    field's valid range."""

    def __init__(self, base: type, meta: Any):
        self.base, self.meta = base, meta
        self.__name__ = base.__name__  # argparse names the type in some messages

    def __call__(self, text: str) -> Any:
        try:
            return self.base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {range_text(self.meta, self.base)}") from None


def build_parser(cls: type, description: str = "", epilog: str = "",
                 prog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per CLI field of the config dataclass ``cls``."""
    p = OneLineParser(prog=prog, description=description, epilog=epilog,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(cls):
        m = f.metadata
        if not m.get("cli", True):
            continue
        target = p
        if m.get("group"):
            target = groups.setdefault(m["group"], p.add_argument_group(m["group"]))
        base, is_list = _base_type(hints[f.name])
        kw: dict[str, Any] = {"help": help_text(f), "default": _default_of(f)}
        if base is bool:
            kw["action"] = "store_true"
        else:
            kw["type"] = _Number(base, m) if base in (int, float) else base
            if is_list:
                kw["nargs"] = "+"
            if m.get("choices"):
                kw["choices"] = m["choices"]
            if not m.get("choices"):
                kw["metavar"] = m.get("metavar") or (
                    "PATH" if m.get("path") else {int: "N", float: "X"}.get(base, "NAME"))
        if m.get("required"):
            kw["required"] = True
        flag(target, f.name, **kw)
    return p


def parse_config(cls: type, argv: list[str] | None = None, prog: str | None = None,
                 doc: str = ""):
    """Parse ``argv`` into an instance of ``cls``; a bad value is an argparse error (exit 2).

    ``doc`` (the script's docstring) gives the help text: its first paragraph before the
    flags, the rest (examples, outputs) after them.
    """
    first, _, rest = doc.strip().partition("\n\n")
    p = build_parser(cls, first, rest, prog)
    try:
        cfg = cls(**vars(p.parse_args(argv)))
        cfg.check_given(given_flags(cls, argv))
        return cfg
    except ConfigError as e:  # one line naming the flag, no usage block
        p.exit(2, f"{p.prog}: error: {one_line(e)}\n")


def given_flags(cls: type, argv: list[str] | None = None) -> set[str]:
    """The fields of ``cls`` whose flag appears in ``argv`` (even with its default value)."""
    p = build_parser(cls)
    for action in p._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    return set(vars(p.parse_known_args(argv)[0]))


def resolved(cfg, **actual: Any) -> dict:
    """The settings as a dict with path fields made absolute and ``actual`` values (e.g. the
    device really used) in place of what was asked."""
    out = dataclasses.asdict(cfg)
    for f in dataclasses.fields(cfg):
        v = out[f.name]
        if f.metadata.get("path") and isinstance(v, str) and v and not _is_tag(f.name, v):
            out[f.name] = str(Path(v).expanduser().resolve())
    out.update(actual)
    return out


def _is_tag(name: str, value: str) -> bool:
    """``--pretrained openai`` is a hub tag, not a path."""
    return name == "pretrained" and "/" not in value and not Path(value).suffix


def config_json(cfg, **actual: Any) -> str:
    """The resolved settings as indented JSON (``config.json``)."""
    return json.dumps(resolved(cfg, **actual), indent=2, default=str) + "\n"


def run_main(fn: Callable[[], Any], debug: bool = False) -> int:
    """Run a script body: every fault ends as one ``error:`` line and its exit status.

    User errors exit with 2 (1 for faults of the environment such as a full disk), Ctrl-C with
    one ``interrupted`` line and 130. ``debug`` re-raises with the traceback instead.
    """
    try:
        fn()
        return 0
    except KeyboardInterrupt:
        if debug:
            raise
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Interrupted as e:
        if debug:
            raise
        print(f"\ninterrupted: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except UserError as e:
        if debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a file we write: full disk, read-only folder, no permission
        if debug:
            raise
        fault = os_fault(e)
        print(f"error: {one_line(fault)}", file=sys.stderr)
        return fault.exit_code
    except RuntimeError as e:  # DataLoader workers wrap our errors in RuntimeError
        if wrapped_user_error(e) and not debug:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
        raise
    finally:
        sys.stderr.flush()
