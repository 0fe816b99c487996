"""What the README says of the suite is true: the number of tests the test command collects,
how many of them need a CUDA GPU, and what each optional skip needs. Checked when the whole
suite runs (``python -m pytest -q tests``, no ``-k``/``-m``); a part of it skips this check."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _whole_suite(config) -> bool:
    tests = Path(__file__).resolve().parent
    args = [Path(a.split("::")[0]).resolve() for a in config.args]
    return (args == [tests] and not config.option.keyword and not config.option.markexpr
            and not config.option.deselect and not getattr(config.option, "lf", False))


def _stated() -> tuple[int, int]:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"`python -m pytest -q tests` collects \*\*([\d,]+) tests\*\*.*?([\d,]+) of "
                  r"them need a CUDA GPU", text, re.S)
    assert m, "README's Testing section no longer states the test count in the checked form"
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


def test_the_readme_states_the_suites_size(request):
    if not _whole_suite(request.config):
        pytest.skip("runs with the whole suite only (python -m pytest -q tests)")
    items = request.session.items
    total, cuda = _stated()
    assert total == len(items), f"README says {total} tests; the suite collects {len(items)}"
    marked = sum(1 for it in items if it.get_closest_marker("cuda"))
    assert cuda == marked, f"README says {cuda} need a CUDA GPU; {marked} are marked cuda"


def test_the_readme_names_what_each_optional_skip_needs():
    testing = README.read_text(encoding="utf-8").split("## Testing", 1)[1].split("\n## ", 1)[0]
    for need in ("chromium", "elpv-dataset", "cosmic-ray", "requirements-dev.txt"):
        assert need in testing, f"README's Testing section does not name {need}"
