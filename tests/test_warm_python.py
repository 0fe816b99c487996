"""The tests' fork server (warm_python.py) behaves as a fresh interpreter would: arguments,
working directory, environment, standard streams, exit status and death by a signal. The
script, torchrun and demo tests rely on it; these check it against the plain interpreter."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROBE = ("import json, os, sys; print(json.dumps({'argv': sys.argv, 'cwd': os.getcwd(), "
         "'env': os.environ.get('PROBE_VALUE'), 'path0': sys.path[0], 'name': __name__, "
         "'stdin': sys.stdin.read()}))")


def both(warm_python, args: list[str], cwd, stdin: str = "", **env: str):
    """The same command with the plain and the warm interpreter."""
    out = []
    for python in (sys.executable, warm_python.ready()):
        out.append(subprocess.run([python, *args], cwd=cwd, input=stdin, capture_output=True,
                                  text=True, timeout=120, env=warm_python.env(**env)))
    return out


def test_the_server_is_in_use(warm_python):
    """A command given only the wrapper (a benchmark's ``--python``, no address in its
    environment) or a script's ``$PYTHON`` runs forked from the server: the server's last
    preloaded module is imported before its first line, as in no fresh interpreter."""
    if warm_python.server is None:
        pytest.skip("APRILGAN_COLD_PYTHON=1: every process is a plain interpreter")
    assert warm_python.ready() != sys.executable
    import warm_python as server

    probe = f"import sys; print({server.PRELOAD[-1]!r} in sys.modules)"
    bare = {k: v for k, v in os.environ.items() if not k.startswith("APRILGAN_WARM")}
    runs = [subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            for cmd, env in (([sys.executable, "-c", probe], bare),
                             ([warm_python.ready(), "-c", probe], bare),
                             (["bash", "-c", '"$PYTHON" -c "$0"', probe], warm_python.env()))]
    assert [r.stdout for r in runs] == ["False\n", "True\n", "True\n"], [r.stderr for r in runs]


def test_script_module_and_string_see_what_a_fresh_interpreter_sees(warm_python, tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "probemod.py").write_text(PROBE)
    for args in (["probe.py", "a b", "--x"], ["-m", "probemod", "1"], ["-c", PROBE, "z"],
                 ["-", "y"]):
        stdin = PROBE if args[0] == "-" else "from stdin"
        cold, warm = both(warm_python, args, tmp_path, stdin, PROBE_VALUE="v1")
        assert cold.returncode == warm.returncode == 0, (args, cold.stderr, warm.stderr)
        assert warm.stdout == cold.stdout, args


@pytest.mark.parametrize("code, status", [("import sys; sys.exit(3)", 3),
                                          ("raise ValueError('boom')", 1),
                                          ("import sys; sys.exit('message')", 1),
                                          ("raise KeyboardInterrupt", -signal.SIGINT),
                                          ("import os, signal; os.kill(os.getpid(), 15)",
                                           -signal.SIGTERM)])
def test_exit_status_and_stderr(warm_python, tmp_path, code, status):
    cold, warm = both(warm_python, ["-c", code], tmp_path)
    assert cold.returncode == warm.returncode == status
    assert cold.stderr.splitlines()[-1:] == warm.stderr.splitlines()[-1:]


def test_killing_the_client_kills_the_command(warm_python, tmp_path):
    """SIGKILL cannot be forwarded: the server notices the client is gone and kills the worker."""
    flag = tmp_path / "alive"
    code = ("import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
            "time.sleep(0.5); open(sys.argv[1], 'a').write(' still running')")
    proc = subprocess.Popen([warm_python.ready(), "-c", code, str(flag)],
                            env=warm_python.env())
    t0 = time.time()
    while not flag.exists() and time.time() - t0 < 60:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    time.sleep(1.0)
    assert "still running" not in flag.read_text()


INNER = '''
import os, time
def test_first():
    assert os.environ.get("INNER_FAIL_FIRST") != "1"
def test_uses_the_server(warm_python):
    warm_python.ready()
    open(os.environ["INNER_FLAG"], "w").write("running")
    time.sleep(120)
'''


def _servers(marker: str) -> list[int]:
    """pids of the fork servers whose command line names ``marker`` (the inner session's TMPDIR)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"warm_python.py" in c for c in cmd) and any(marker.encode() in c for c in cmd):
            pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the processes")
@pytest.mark.parametrize("how", ["sigkill", "stop_at_first_failure"])
def test_the_server_never_outlives_its_pytest_session(tmp_path, how):
    """A pytest session killed with SIGKILL (no teardown runs), or stopped by ``-x`` before any
    test took the server it started at collection: no server of that session is left."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp_path / "test_inner.py").write_text(INNER)
    flag = tmp_path / "flag"
    env = {**os.environ, "TMPDIR": str(tmp), "INNER_FLAG": str(flag),
           "PYTHONPATH": str(Path(__file__).parent), "APRILGAN_COLD_PYTHON": "0",
           "APRILGAN_WARM_PRELOAD": "colorsys",  # the server's life is tested, not its imports
           "INNER_FAIL_FIRST": "1" if how == "stop_at_first_failure" else "0"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
           "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")]
    if how == "stop_at_first_failure":
        cmd.insert(4, "-x")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        if how == "sigkill":
            t0 = time.time()
            while not flag.exists() and proc.poll() is None and time.time() - t0 < 120:
                time.sleep(0.1)
            assert flag.exists(), proc.communicate()[0].decode()[-2000:]
            assert _servers(str(tmp)), "the inner session's server is not running"
            proc.kill()
        out = proc.communicate(timeout=120)[0].decode()
        if how == "stop_at_first_failure":
            assert "1 failed" in out and "passed" not in out, out[-2000:]
        t0 = time.time()
        while _servers(str(tmp)) and time.time() - t0 < 20:
            time.sleep(0.1)
        assert not _servers(str(tmp))
    finally:
        for pid in _servers(str(tmp)):  # never leave one behind, even when the test fails
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
