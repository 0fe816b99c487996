"""The package layering of ARCHITECTURE.md, checked from the imports (AST, nothing imported).

Each package may import only the packages listed for it; in particular ``models/`` imports
nothing of the project outside itself, and nothing imports the entry points.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = {"errors", "models", "metrics", "losses", "prompts", "utils", "datasets", "engine",
           "tools", "train", "test", "predict", "export"}
ALLOWED = {
    "errors": set(),
    "models": set(),
    "metrics": set(),
    "losses": set(),
    "prompts": {"errors", "utils"},
    "utils": {"errors"},
    "datasets": {"errors", "utils"},
    "engine": {"errors", "utils", "datasets", "models", "metrics", "losses", "prompts"},
    "tools": set(),
}


def _imports(path: Path) -> set[str]:
    """Top-level project packages imported by one file (absolute imports only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out & PROJECT


def _files(package: str) -> list[Path]:
    base = REPO / package
    return [base.with_suffix(".py")] if (REPO / f"{package}.py").is_file() else \
        sorted(base.rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_layers(package):
    bad = []
    for f in _files(package):
        extra = _imports(f) - ALLOWED[package] - {package}
        if extra:
            bad.append(f"{f.relative_to(REPO)} imports {sorted(extra)}")
    assert not bad, "; ".join(bad)


def project_code_files(root: Path = REPO) -> list[Path]:
    """The project's .py files: no hidden folders, fixtures or virtual environments (a
    ``.venv`` made in the checkout, as the README suggests, holds site-packages)."""
    out = []
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix == ".py":
            out.append(path)
        elif path.is_dir() and not path.name.startswith((".", "__")) and \
                path.name != "fixtures" and not (path / "pyvenv.cfg").exists():
            out += project_code_files(path)
    return out


def test_no_code_file_over_400_lines():
    long = []
    files = project_code_files()
    assert REPO / "engine" / "evaluation.py" in files and REPO / "train.py" in files
    for f in files:
        n = len(f.read_text(encoding="utf-8").splitlines())
        if n > 400:
            long.append(f"{f.relative_to(REPO)}: {n}")
    assert not long, long


def _engine_siblings(path: Path) -> set[str]:
    """The ``engine`` modules one engine file imports (``from .x import`` or ``engine.x``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 0 and (node.module or "").startswith("engine."):
                out.add(node.module.split(".")[1])
    return out


def test_export_and_onnx_runtime_share_the_sidecar_module_not_each_other():
    export, runtime = (_engine_siblings(REPO / "engine" / f"{n}.py") for n in ("export", "onnx_runtime"))
    assert "onnx_runtime" not in export and "export" not in runtime
    assert "onnx_sidecar" in export and "onnx_sidecar" in runtime


def _text_files() -> list[Path]:
    """What a user of the repository reads: code, scripts, docs, prompt files (no fixtures)."""
    out = [p for p in project_code_files() if "tests" not in p.parts]
    for pattern in ("*.md", "scripts/*.sh", "prompts/*.txt", "prompts/*.json", "docs/*.md",
                    "engine/report/templates/*"):
        out += sorted(REPO.glob(pattern))
    return out


def test_nothing_user_facing_cites_a_document_outside_the_repository():
    """Help texts and docstrings cite docs/METHOD.md (in the repository), and every section
    they cite exists there."""
    method = (REPO / "docs" / "METHOD.md").read_text(encoding="utf-8")
    sections = {int(n) for n in re.findall(r"^## §(\d+) ", method, flags=re.M)}
    assert sections == set(range(1, 10))
    bad, cited = [], set()
    for f in _text_files():
        text = f.read_text(encoding="utf-8")
        if "SPEC" in text or "../shared" in text or "shared/golden" in text:
            bad.append(str(f.relative_to(REPO)))
        for group in re.findall(r"METHOD(?:\.md)? (§\d+(?:\s*[,/]\s*§?\d+)*)", text):
            cited |= {int(n) for n in re.findall(r"\d+", group)}
    assert not bad, f"cite a file users do not have: {bad}"
    assert cited and cited <= sections, sorted(cited - sections)
