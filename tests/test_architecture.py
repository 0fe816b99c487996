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
    assert REPO / "engine" / "evaluate" / "evaluation.py" in files and REPO / "train.py" in files
    for f in files:
        n = len(f.read_text(encoding="utf-8").splitlines())
        if n > 400:
            long.append(f"{f.relative_to(REPO)}: {n}")
    assert not long, long


def test_export_and_onnx_runtime_share_the_sidecar_module_not_each_other():
    known = _package_modules()
    export, runtime = (_imported_modules(REPO / "engine" / "deploy" / f"{n}.py", known)
                       for n in ("export", "onnx_runtime"))
    assert "engine.deploy.onnx_runtime" not in export and "engine.deploy.export" not in runtime
    assert "engine.deploy.onnx_sidecar" in export and "engine.deploy.onnx_sidecar" in runtime


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
        if "SPEC" in text or "../shared" in text or "shared/golden" in text or \
                re.search(r"\bSTYLE \d", text):
            bad.append(str(f.relative_to(REPO)))
        for group in re.findall(r"METHOD(?:\.md)? (§\d+(?:\s*[,/]\s*§?\d+)*)", text):
            cited |= {int(n) for n in re.findall(r"\d+", group)}
    assert not bad, f"cite a file users do not have: {bad}"
    assert cited and cited <= sections, sorted(cited - sections)


# --------------------------------------------------------------------------- modules and groups
def _module_name(path: Path) -> str:
    """``engine/core/loading.py`` -> ``engine.core.loading``; a package's ``__init__.py`` -> the
    package."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_modules() -> dict[str, Path]:
    """Every module of the project's packages (its folders of modules), by name."""
    out = {}
    for package in ALLOWED:
        if (REPO / package).is_dir():
            out.update({_module_name(f): f for f in sorted((REPO / package).rglob("*.py"))})
    return out


def _imported_modules(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules one file imports, anywhere in it (inside functions too): relative
    imports resolved, ``from package import name`` counted as the submodule when ``name`` is
    one, else as the package."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m in known and m != here}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycles_finds_a_circle_by_hand():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_between_modules():
    known = _package_modules()
    graph = {name: _imported_modules(path, known) for name, path in known.items()}
    assert "engine.core.thresholds" in graph["engine.predict.calibration"]  # the parser reads
    assert "datasets.sets.released" in graph["datasets.sets.industrial"]
    assert not _cycles(graph), _cycles(graph)


def test_no_package_folder_holds_more_than_15_modules():
    crowded = {}
    for init in REPO.glob("**/__init__.py"):
        if ".git" in init.parts or "fixtures" in init.parts or "site-packages" in init.parts:
            continue
        modules = [f for f in init.parent.glob("*.py") if f.name not in ("__init__.py", "__main__.py")]
        if len(modules) > 15:
            crowded[str(init.parent.relative_to(REPO))] = len(modules)
    assert not crowded, crowded


# engine's groups, lowest first: a group imports only from groups of a lower floor (and itself)
ENGINE_FLOORS = {"config": 0, "plumbing": 1, "report": 1, "core": 2, "deploy": 3, "evaluate": 3,
                 "training": 3, "predict": 4, "serve": 5}


def test_engine_groups_import_downward_only():
    known = _package_modules()
    groups = {n.split(".")[1] for n in known if n.startswith("engine.")}
    assert groups == set(ENGINE_FLOORS), "name each engine group's floor in ENGINE_FLOORS"
    bad = []
    for name, path in known.items():
        if not name.startswith("engine."):
            continue
        group = name.split(".")[1]
        for other in _imported_modules(path, known):
            if other.startswith("engine.") and other.split(".")[1] != group and \
                    ENGINE_FLOORS[other.split(".")[1]] >= ENGINE_FLOORS[group]:
                bad.append(f"{name} imports {other}")
    assert not bad, bad


def test_architecture_md_names_every_module():
    """ARCHITECTURE.md is the map of the code: each module of a package is named in it (as
    `name`), so a new module cannot be added without saying where it sits."""
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([\w./]+)`", text))
    words = {w for n in named for w in re.split(r"[./]", n)}
    missing = [str(f.relative_to(REPO)) for f in _package_modules().values()
               if f.stem not in ("__init__", "__main__") and f.stem not in words]
    assert not missing, missing
