r"""Mutation check: do the tests notice a plausible one-line bug in a module?

    bash scripts/mutation_check.sh engine/core/thresholds.py engine/predict/regions.py
    bash scripts/mutation_check.sh datasets/sets/                 # every module of a folder
    bash scripts/mutation_check.sh --since main~3                 # every module changed since
    bash scripts/mutation_check.sh engine/predict/regions.py --tests "tests/test_calibration.py -k region"

For each module, cosmic-ray (pinned in requirements-dev.txt) makes every mutant its operators
know (``+`` for ``-``, ``<`` for ``<=``, a constant changed, a ``break`` for a ``continue``,
...) and runs that module's tests against each one. A mutant is *killed* when the tests fail
(or time out), and *survives* when they pass: a change of behaviour nothing checks, or an
equivalent change that alters nothing (those are argued by hand).

Mutants inside an annotation (``str | None`` turned into ``str - None``, ...) are marked skipped
before the run and counted apart: with ``from __future__ import annotations`` Python never
evaluates an annotation, so such a mutant cannot change behaviour; it is not run and not part
of the killed share.

The tests of a module are the test files that name it (``engine.core.thresholds``, ``from engine
import thresholds``, or the file's stem for a script), run with ``pytest -x``; ``--tests``
gives them instead (pytest arguments, for every module of the call). The whole run happens in a
scratch copy of the working tree (tracked and untracked, not ignored files), so the checkout is
never changed, even when the run is killed. The tests must pass on the unchanged copy first.

Output (``--out DIR``, default ``mutation_out/``): per module ``<name>.sqlite`` (the cosmic-ray
session), ``<name>.survivors.txt`` (each survivor as a diff) and ``summary.md``; a table of
mutants, killed, timed out and survived per module on the terminal. ``--min_rate P``: exit 1
when a module's killed share (timeouts count as killed) is below P percent.

Speed: each mutant's tests run in a process forked from a server that has imported torch,
open_clip and the other libraries once (``tests/warm_python.py``, the tests' own fork server;
never the project's modules, which each run imports fresh from the mutated copy), so a mutant
costs its tests' time, not an interpreter start and a torch import: about 0.7 s instead of 4 s
for a small test file. ``--cold`` runs a fresh interpreter per mutant instead.

``--resume``: continue a stopped run from its session in ``--out``: only the mutants not yet run
are run. It is refused when the module's source is not the one the session was made from (its
SHA-256, kept beside the session), since the mutants' positions would no longer match. With
``--rerun_survivors`` the session's survivors run again too (after tests were added for them;
tests added can only kill more, so the killed ones stay killed).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    module: str
    tests: str
    mutants: int = 0
    killed: int = 0
    timeout: int = 0
    survived: int = 0
    incompetent: int = 0  # mutants that could not be run (an import-time error of the mutant)
    annotations: int = 0  # mutants inside an annotation: skipped, not counted in the rate

    @property
    def rate(self) -> float:
        """Killed share in percent: (killed + timed out) / mutants run."""
        run = self.killed + self.timeout + self.survived
        return 100.0 * (self.killed + self.timeout) / run if run else 100.0


def dotted(module: str) -> str:
    """``engine/report/study.py`` -> ``engine.report.study``."""
    return module[:-3].replace("/", ".") if module.endswith(".py") else module


def find_tests(root: Path, module: str) -> list[str]:
    """The test files (relative to ``root``) that name ``module``: its dotted name, ``from
    package import name``, or, for a module outside a package (a script), its stem."""
    name = dotted(module)
    package, _, leaf = name.rpartition(".")
    patterns = [re.escape(name) + r"\b"]
    if package:
        patterns.append(rf"from\s+{re.escape(package)}\s+import\s+[^\n]*\b{re.escape(leaf)}\b")
    if not (root / module).parent.joinpath("__init__.py").exists() or package == "scripts":
        patterns.append(rf"\b{re.escape(Path(module).stem)}\b")
    found = re.compile("|".join(patterns))
    return sorted(str(p.relative_to(root)) for p in (root / "tests").glob("test_*.py")
                  if found.search(p.read_text(encoding="utf-8")))


def modules_of(root: Path, targets: list[str], since: str | None) -> list[str]:
    """The .py modules named (folders expanded, ``__init__.py`` and tests left out) plus, with
    ``since``, every such module changed since that commit (committed or not)."""
    out: list[str] = []
    for t in targets:
        path = (root / t).resolve()
        if not path.exists():
            sys.exit(f"error: {t} does not exist (give paths relative to {root})")
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        out += [str(f.relative_to(root)) for f in files]
    if since:
        r = subprocess.run(["git", "diff", "--name-only", since, "--", "*.py"], cwd=root,
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"error: git diff {since}: {r.stderr.strip()}")
        out += [f for f in r.stdout.split() if (root / f).exists()]
    keep = [m for m in dict.fromkeys(out)
            if m.endswith(".py") and not m.startswith("tests/") and Path(m).name != "__init__.py"]
    if not keep:
        sys.exit("error: no module to check (name .py files or folders, or --since COMMIT)")
    return keep


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions, as (line, column) with 1-based lines, of every annotation in
    ``source``: arguments, returns and annotated assignments."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        found = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            found += [arg.annotation for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs,
                                                 a.vararg, a.kwarg)
                      if arg is not None and arg.annotation is not None]
            if node.returns is not None:
                found.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
        spans += [((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset)) for n in found]
    return spans


def skip_annotations(session: Path, source: str) -> int:
    """Mark every pending mutant of ``session`` that starts inside an annotation as skipped
    (never run); returns how many. Only meaningful when the module does not evaluate its
    annotations (``from __future__ import annotations``), so modules without that import are
    left whole."""
    if not re.search(r"^from __future__ import annotations", source, flags=re.M):
        return 0
    from cosmic_ray.work_db import use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = annotation_spans(source)
    with use_db(str(session)) as db:
        skipped = [item.job_id for item in db.pending_work_items
                   if any(s <= tuple(m.start_pos) < e for m in item.mutations for s, e in spans)]
        if skipped:
            db.set_multiple_results(skipped, WorkResult(output="inside an annotation",
                                                        worker_outcome=WorkerOutcome.SKIPPED))
    return len(skipped)


def scratch_copy(root: Path, dest: Path) -> None:
    """The working tree's tracked and untracked, not ignored, files copied to ``dest``."""
    r = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                       capture_output=True, check=True)
    for rel in filter(None, r.stdout.decode().split("\0")):
        src = root / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def summarize(session: Path, module: str, tests: str) -> tuple[Outcome, list[str]]:
    """Counts and survivor diffs from a cosmic-ray session (``cosmic-ray dump``)."""
    dump = subprocess.run(["cosmic-ray", "dump", str(session)], capture_output=True, text=True,
                          check=True)
    out, survivors = Outcome(module, tests), []
    for line in dump.stdout.splitlines():
        item, result = json.loads(line)
        if result is None:  # not run (the run was stopped)
            continue
        test, worker = result.get("test_outcome"), result.get("worker_outcome")
        if worker == "skipped":
            out.annotations += 1
            continue
        if worker == "timeout":
            out.timeout += 1
        elif test == "killed":
            out.killed += 1
        elif test == "survived":
            out.survived += 1
            where = item["mutations"][0]
            survivors.append(f"# {where['operator_name']} at line {where['start_pos'][0]}\n"
                             f"{result.get('diff', '')}")
        else:
            out.incompetent += 1
        out.mutants += 1
    return out, survivors


@contextlib.contextmanager
def warm_server(work: Path):
    """The fork server of ``work/tests/warm_python.py``, started in its own process group with a
    lifeline pipe (it kills its group when this process ends, however it ends). Yields the
    environment that makes ``tests/warm_client.py`` reach it, or None when the tree has no such
    server or it does not start (the mutants then run in fresh interpreters)."""
    server_py = work / "tests" / "warm_python.py"
    if not (server_py.is_file() and (work / "tests" / "warm_client.py").is_file()):
        yield None
        return
    sock = Path(tempfile.mkdtemp(prefix="mutation-warm-")) / "s"
    read_end, lifeline = os.pipe()
    server = subprocess.Popen([sys.executable, str(server_py), str(sock), str(read_end)], cwd=work,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              start_new_session=True, pass_fds=(read_end,))
    os.close(read_end)
    try:
        ready = server.stdout.readline().strip() == b"ready"
        yield ({**os.environ, "APRILGAN_WARM_PYTHON_SOCKET": str(sock),
                "APRILGAN_WARM_PYTHON_REAL": sys.executable} if ready else None)
    finally:
        os.close(lifeline)
        if server.poll() is None:
            os.killpg(server.pid, 9)
        server.wait()
        shutil.rmtree(sock.parent, ignore_errors=True)


def source_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def forget_survivors(session: Path) -> int:
    """Make the survivors of ``session`` pending again; returns how many."""
    import sqlite3

    db = sqlite3.connect(session)
    try:
        with db:
            return db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'").rowcount
    finally:
        db.close()


def check_module(work: Path, module: str, tests: list[str], timeout: float, out: Path,
                 python: str, env: dict | None = None, resume: bool = False,
                 rerun_survivors: bool = False) -> Outcome:
    """One module's cosmic-ray session in the scratch copy ``work``. With ``env`` (from
    ``warm_server``) the tests run through the fork server's client; with ``resume`` an existing
    session of the same source goes on where it stopped."""
    runner = [shlex.quote(python)]
    if env is not None:
        runner += ["-S", "tests/warm_client.py"]
    command = " ".join([*runner, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests])
    stem = module[:-3].replace("/", "__")
    config, session = work / f"{stem}.toml", out / f"{stem}.sqlite"
    stamp = out / f"{stem}.source.sha256"
    source = (work / module).read_text(encoding="utf-8")
    resuming = resume and session.exists()
    if resuming:
        made_from = stamp.read_text().strip() if stamp.exists() else None
        if made_from != source_hash(source):
            sys.exit(f"error: --resume: {session} was not made from this source of {module} "
                     f"({'no ' + stamp.name if made_from is None else 'it has changed since'}); "
                     "run again without --resume")
    base = subprocess.run(command, shell=True, cwd=work, capture_output=True, text=True, env=env)
    if base.returncode != 0:
        tail = (base.stdout + base.stderr).strip().splitlines()[-5:]
        sys.exit(f"error: the tests of {module} fail before any mutation ({command}):\n"
                 + "\n".join(tail))
    config.write_text(f'[cosmic-ray]\nmodule-path = "{module}"\ntimeout = {timeout}\n'
                      f'excluded-modules = []\ntest-command = {json.dumps(command)}\n'
                      '[cosmic-ray.distributor]\nname = "local"\n')
    if resuming and rerun_survivors:
        print(f"   {forget_survivors(session)} survivors to run again", flush=True)
    if not resuming:
        session.unlink(missing_ok=True)
        subprocess.run(["cosmic-ray", "init", str(config), str(session)], cwd=work, check=True)
        stamp.write_text(source_hash(source) + "\n")
    skip_annotations(session, source)
    subprocess.run(["cosmic-ray", "exec", str(config), str(session)], cwd=work, check=True,
                   env=env)
    result, survivors = summarize(session, module, " ".join(tests))
    text = "\n".join(survivors) if survivors else "no survivor\n"
    (out / f"{stem}.survivors.txt").write_text(text, encoding="utf-8")
    return result


def table(results: list[Outcome]) -> str:
    rows = ["| module | tests | mutants | killed | timed out | survived | not run | killed % "
            "| in annotations (skipped) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| `{r.module}` | `{r.tests}` | {r.mutants} | {r.killed} | {r.timeout} | "
                    f"{r.survived} | {r.incompetent} | {r.rate:.1f} | {r.annotations} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring of scripts/mutation_check.py.")
    p.add_argument("modules", nargs="*", help=".py files or folders, relative to the repository")
    p.add_argument("--since", help="also every module changed since this commit")
    p.add_argument("--tests", help="pytest arguments to run for every module (default: the test "
                   "files that name the module)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds before a mutant's test run counts as killed by a time-out [120]")
    p.add_argument("--out", default="mutation_out", help="folder of the results [mutation_out]")
    p.add_argument("--min_rate", type=float, default=None,
                   help="exit 1 when a module's killed share is below this percentage")
    p.add_argument("--resume", action="store_true",
                   help="go on with the sessions in --out: run only the mutants not yet run")
    p.add_argument("--rerun_survivors", action="store_true",
                   help="with --resume: run the session's survivors again as well")
    p.add_argument("--cold", action="store_true",
                   help="a fresh interpreter per mutant instead of the warm fork server")
    p.add_argument("--root", default=str(REPO), help=argparse.SUPPRESS)  # the tests' own trees
    a = p.parse_args(argv)
    if shutil.which("cosmic-ray") is None:
        sys.exit("error: cosmic-ray is not installed: pip install -r requirements-dev.txt")
    if a.rerun_survivors and not a.resume:
        sys.exit("error: --rerun_survivors goes with --resume (a new run runs every mutant)")
    root = Path(a.root).resolve()
    modules = modules_of(root, a.modules, a.since)
    plan = {}
    for m in modules:
        tests = shlex.split(a.tests) if a.tests else find_tests(root, m)
        if not tests:
            sys.exit(f"error: no test file names {m} ({dotted(m)}); pass --tests")
        plan[m] = tests
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        scratch_copy(root, work)
        env = None if a.cold else stack.enter_context(warm_server(work))
        for m, tests in plan.items():
            print(f"== {m}: {' '.join(tests)}", flush=True)
            results.append(check_module(work, m, tests, a.timeout, out, sys.executable, env,
                                        a.resume, a.rerun_survivors))
            print(f"   {results[-1].killed + results[-1].timeout} of {results[-1].mutants} "
                  f"killed ({results[-1].rate:.1f} %)", flush=True)
    text = table(results)
    tmp_summary = out / "summary.md.tmp"
    tmp_summary.write_text(text, encoding="utf-8")
    os.replace(tmp_summary, out / "summary.md")
    print(text, end="")
    print(f"survivors as diffs: {out}/<module>.survivors.txt")
    if a.min_rate is not None and any(r.rate < a.min_rate for r in results):
        low = ", ".join(r.module for r in results if r.rate < a.min_rate)
        print(f"below {a.min_rate:g} % killed: {low}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
