"""Every type hint of the prompt study's and the benchmark sets' modules names a type.

With ``from __future__ import annotations`` Python keeps hints as text and never evaluates
them, so ``Path - None`` where ``Path | None`` was meant would pass every other test; IDEs,
type checkers and ``typing.get_type_hints`` (dataclass tools, documentation builds) evaluate
them. Fast (imports only): the mutation checks of these modules run it first.
"""
from __future__ import annotations

import importlib
import inspect
import typing

import pytest
from test_benchmarks import load_script

MODULES = ("engine.evaluate.prompt_study", "engine.evaluate.prompt_variants", "datasets.sets.common",
           "datasets.sets.index_format", "datasets.sets.industrial", "datasets.sets.medical",
           "datasets.sets.registry")


def _hinted(module) -> list:
    """The functions and classes defined in ``module``, and the methods of those classes."""
    out = []
    for _, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            out.append(obj)
        elif inspect.isclass(obj):
            out.append(obj)
            out += [f for f in vars(obj).values() if inspect.isfunction(f)]
            out += [p.fget for p in vars(obj).values() if isinstance(p, property)]
    return out


@pytest.mark.parametrize("name", [*MODULES, "scripts/sets_table.py"])
def test_every_hint_names_a_type(name):
    module = load_script("sets_table") if name.endswith(".py") else importlib.import_module(name)
    from prompts import PromptSet  # imported by engine.evaluate.prompt_variants for type checkers only

    hinted = _hinted(module)
    assert len(hinted) >= 3, name
    for obj in hinted:
        hints = typing.get_type_hints(obj, localns={"PromptSet": PromptSet})
        assert all(h is not None for h in hints.values()), obj
