"""scripts/mutation_check.py on a project of its own (one module, one test file, a git tree):
the counts of a pinned cosmic-ray against hand-counted mutants, the survivors as diffs, the
module's tests found by name, --since, and the checkout left unchanged."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mutation_check
import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("cosmic-ray") is None,
                                reason="cosmic-ray not installed (pip install -r "
                                       "requirements-dev.txt)")

# one comparison, which cosmic-ray mutates into each other comparison operator
MODULE = '''def pick(a, b):
    return a if a < b else b
'''
TESTS = '''from pkg.calc import pick


def test_pick():
    assert pick(1, 2) == 1
    assert pick(3, 2) == 2
'''


@pytest.fixture(autouse=True)
def _bare_pytest(monkeypatch):
    """The trees' test runs (one per mutant) without the pytest plugins this machine happens to
    have installed: about 0.3 s a run instead of 1 to 3 s."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "calc.py").write_text(MODULE)
    (root / "tests" / "test_calc.py").write_text(TESTS)
    (root / "tests" / "test_other.py").write_text("def test_nothing():\n    pass\n")
    (root / "conftest.py").write_text("")  # the tree's root on sys.path for the tests
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "."], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "start"], cwd=root, check=True)
    return root


def test_counts_survivors_and_the_checkout_left_alone(tmp_path, capsys):
    root = _tree(tmp_path)
    out = tmp_path / "out"
    code = mutation_check.main(["pkg/calc.py", "--root", str(root), "--out", str(out),
                                "--timeout", "60", "--min_rate", "90"])
    printed = capsys.readouterr().out
    # `a < b` mutated into every other comparison: only `<=` passes both asserts (it differs
    # from `<` only at a == b, where both return the same number): one survivor, equivalent.
    summary = (out / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if "pkg/calc.py" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    mutants, killed, timed_out, survived = map(int, cells[2:6])
    assert mutants == killed + timed_out + survived + int(cells[6]) and mutants >= 5
    survivors = (out / "pkg__calc.survivors.txt").read_text()
    assert survived == survivors.count("# core/") == 1
    assert "-    return a if a < b else b" in survivors
    assert "+    return a if a <= b else b" in survivors  # the equivalent one
    assert code == 1 and float(cells[7]) < 90  # below --min_rate: exit 1
    assert "tests/test_calc.py" in row and "test_other" not in row  # found by name
    assert (root / "pkg" / "calc.py").read_text() == MODULE  # never mutated in place
    assert "killed" in printed


def test_modules_since_a_commit_and_their_tests(tmp_path):
    root = _tree(tmp_path)
    (root / "pkg" / "new.py").write_text("X = 1\n")
    (root / "tests" / "test_new.py").write_text("from pkg import new\n")
    with pytest.raises(SystemExit, match="no module to check"):  # not yet known to git
        mutation_check.modules_of(root, [], "HEAD")
    subprocess.run(["git", "add", "."], cwd=root, check=True)
    assert mutation_check.modules_of(root, [], "HEAD") == ["pkg/new.py"]
    assert mutation_check.modules_of(root, ["pkg"], None) == ["pkg/calc.py", "pkg/new.py"]
    assert mutation_check.find_tests(root, "pkg/new.py") == ["tests/test_new.py"]
    assert mutation_check.find_tests(root, "pkg/calc.py") == ["tests/test_calc.py"]
    with pytest.raises(SystemExit, match="does not exist"):
        mutation_check.modules_of(root, ["pkg/absent.py"], None)


def test_tests_that_fail_unmutated_stop_the_run(tmp_path):
    root = _tree(tmp_path)
    (root / "tests" / "test_calc.py").write_text(TESTS.replace("== 1", "== 5"))
    with pytest.raises(SystemExit, match="fail before any mutation"):
        mutation_check.main(["pkg/calc.py", "--root", str(root), "--out", str(tmp_path / "o")])


def _row(out: Path, module: str) -> list[str]:
    summary = (out / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if module in line)
    return [c.strip() for c in row.strip("|").split("|")]


def test_mutants_inside_annotations_are_skipped_and_not_counted(tmp_path):
    root = _tree(tmp_path)
    annotated = ("from __future__ import annotations\n\n\n"
                 "def pick(a: int | None, b: int) -> int | None:\n"
                 "    return a if a < b else b\n")
    (root / "pkg" / "calc.py").write_text(annotated)
    subprocess.run(["git", "add", "."], cwd=root, check=True)
    out = tmp_path / "annotated"
    mutation_check.main(["pkg/calc.py", "--root", str(root), "--out", str(out)])
    row = _row(out, "pkg/calc.py")
    # the body's mutants run with the outcome worked out for MODULE above (only `<=` survives);
    # the two `|` of the annotations give mutants of their own, skipped and not counted
    mutants, killed, timed_out, survived, not_run = map(int, row[2:7])
    assert (survived, timed_out, not_run) == (1, 0, 0) and killed == mutants - 1 >= 4
    assert float(row[7]) == 100.0 * killed / mutants
    assert int(row[8]) >= 2
    assert "a < b" in (out / "pkg__calc.survivors.txt").read_text()
    assert "int - None" not in (out / "pkg__calc.survivors.txt").read_text()


def test_annotations_of_a_module_that_evaluates_them_are_mutated(tmp_path):
    """Without ``from __future__ import annotations`` an annotation runs at import (``int -
    None`` raises there), so its mutants are ordinary ones: none is skipped. With the import,
    exactly the mutants inside the annotations are (the comparison's stay pending)."""
    root = _tree(tmp_path)
    body = "def pick(a: int | None, b: int) -> int:\n    return a if a < b else b\n"
    counts = {}
    for future in (False, True):
        source = ("from __future__ import annotations\n\n\n" if future else "") + body
        (root / "pkg" / "calc.py").write_text(source)
        config, session = tmp_path / f"cr{future}.toml", tmp_path / f"s{future}.sqlite"
        config.write_text('[cosmic-ray]\nmodule-path = "pkg/calc.py"\ntimeout = 10\n'
                          'excluded-modules = []\ntest-command = "true"\n'
                          '[cosmic-ray.distributor]\nname = "local"\n')
        subprocess.run(["cosmic-ray", "init", str(config), str(session)], cwd=root, check=True)
        skipped = mutation_check.skip_annotations(session, source)
        dump = subprocess.run(["cosmic-ray", "dump", str(session)], capture_output=True,
                              text=True, check=True).stdout.splitlines()
        lines = [json.loads(d)[0]["mutations"][0]["start_pos"][0] for d in dump]
        pending = [json.loads(d)[1] is None for d in dump]
        first = 4 if future else 1  # the line of `def pick`
        counts[future] = (skipped, sum(1 for ln in lines if ln == first),
                          sum(1 for ln, p in zip(lines, pending) if p and ln == first + 1))
    in_annotations, in_body = counts[True][1], counts[True][2]
    assert counts[False][0] == 0 and counts[True][0] == in_annotations >= 1
    assert counts[False][1] == in_annotations  # the same mutants exist; only skipping differs
    assert in_body >= 5  # the comparison's mutants are still to run


def test_annotation_spans_by_hand():
    source = ("from __future__ import annotations\n"
              "x: list[int] = []\n"
              "def f(a, b: str | None = None, *c: int, **d: float) -> dict[str, int]:\n"
              "    return {}\n")
    spans = mutation_check.annotation_spans(source)
    assert sorted(spans) == sorted([((2, 3), (2, 12)), ((3, 12), (3, 22)), ((3, 35), (3, 38)),
                                    ((3, 45), (3, 50)), ((3, 55), (3, 69))])


def _server_processes() -> set[str]:
    """The command lines of the running processes of mutation runs' fork servers (each run has
    a socket of its own in its command line; the server's forks share its command line)."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        if "mutation-warm-" in text:
            found.add(text)
    return found


def test_mutants_run_in_the_warm_fork_server_which_ends_with_the_run(tmp_path, monkeypatch):
    """With the tree's fork server (tests/warm_python.py) each mutant's tests run in a process
    forked from it, its libraries already imported: a test that needs one imported before it runs
    passes there and fails in a fresh interpreter (--cold). The outcome is the one worked out by
    hand for the cold run above (only `<=` survives), and no server is left once it is over."""
    root = _tree(tmp_path)
    for name in ("warm_python.py", "warm_client.py"):
        shutil.copy(REPO / "tests" / name, root / "tests" / name)
    # the project's server, preloading one module no test here imports instead of torch (the
    # same mechanism, without a torch import's seconds)
    monkeypatch.setenv("APRILGAN_WARM_PRELOAD", "colorsys")
    (root / "tests" / "test_calc.py").write_text(
        TESTS + "\n\ndef test_forked_from_the_server():\n    import sys\n\n"
                "    assert 'colorsys' in sys.modules  # imported by the server, never here\n")
    subprocess.run(["git", "add", "."], cwd=root, check=True)
    warm = tmp_path / "warm"
    others = _server_processes()  # of other mutation runs on this machine
    mutation_check.main(["pkg/calc.py", "--root", str(root), "--out", str(warm)])
    mutants, killed, timed_out, survived, not_run = map(int, _row(warm, "pkg/calc.py")[2:7])
    assert (survived, timed_out, not_run) == (1, 0, 0) and killed == mutants - 1 >= 4
    survivors = (warm / "pkg__calc.survivors.txt").read_text()
    assert "+    return a if a <= b else b" in survivors
    assert _server_processes() <= others
    with pytest.raises(SystemExit, match="fail before any mutation"):
        mutation_check.main(["pkg/calc.py", "--root", str(root), "--out", str(warm), "--cold"])


def test_resume_runs_only_the_mutants_not_yet_run_and_only_on_the_same_source(tmp_path):
    import sqlite3

    root = _tree(tmp_path)
    runs = tmp_path / "runs.log"  # one line per run of the tests, baseline included
    (root / "tests" / "test_calc.py").write_text(  # the log first: -x stops at the first fail
        f"def test_log():\n    with open({str(runs)!r}, 'a') as f:\n        f.write('run\\n')\n\n\n"
        + TESTS)
    subprocess.run(["git", "add", "."], cwd=root, check=True)
    out = tmp_path / "out"
    args = ["pkg/calc.py", "--root", str(root), "--out", str(out), "--cold"]
    mutation_check.main(args)
    first = _row(out, "pkg/calc.py")
    mutants = int(first[2])
    assert len(runs.read_text().splitlines()) == mutants + 1
    db = sqlite3.connect(out / "pkg__calc.sqlite")  # as if the run had been stopped
    with db:
        db.execute("DELETE FROM work_results WHERE job_id IN "
                   "(SELECT job_id FROM work_results LIMIT 2)")
    db.close()
    runs.unlink()
    mutation_check.main([*args, "--resume"])
    assert len(runs.read_text().splitlines()) == 2 + 1  # the two not yet run, and the baseline
    assert _row(out, "pkg/calc.py") == first
    # a test that tells `<` from `<=` (equal values, distinct objects) kills the one survivor
    # when the survivors run again, and only they run
    with open(root / "tests" / "test_calc.py", "a") as f:
        f.write("\n\ndef test_ties():\n    x, y = [1], [1]\n    assert pick(x, y) is y\n")
    runs.unlink()
    with pytest.raises(SystemExit, match="goes with --resume"):
        mutation_check.main([*args, "--rerun_survivors"])
    mutation_check.main([*args, "--resume", "--rerun_survivors"])
    assert len(runs.read_text().splitlines()) == 1 + 1
    again = _row(out, "pkg/calc.py")
    assert again[2] == first[2] and again[3] == str(mutants) and again[5] == "0"
    assert (out / "pkg__calc.survivors.txt").read_text() == "no survivor\n"
    (root / "pkg" / "calc.py").write_text(MODULE.replace("a < b", "b > a"))
    with pytest.raises(SystemExit, match="not made from this source of pkg/calc.py"):
        mutation_check.main([*args, "--resume"])
    (out / "pkg__calc.source.sha256").unlink()
    (root / "pkg" / "calc.py").write_text(MODULE)
    with pytest.raises(SystemExit, match="no pkg__calc.source.sha256"):
        mutation_check.main([*args, "--resume"])
