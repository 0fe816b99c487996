"""The tests' fork server (warm_python.py) behaves as a fresh interpreter would: arguments,
working directory, environment, standard streams, exit status and death by a signal. The
script, torchrun and demo tests rely on it; these check it against the plain interpreter."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

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
    if warm_python.server is None:
        pytest.skip("APRILGAN_COLD_PYTHON=1: every process is a plain interpreter")
    assert warm_python.ready() != sys.executable


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
