"""The processes a test session starts beside the tests, and their ends: the warm fork server
(``warm_python`` fixture: tests/warm_python.py, so that the scripts' subprocesses skip the torch
import) and the background work a test module asks for at collection
(``prefetch_in_background``). Each ends with the session, however it ends. Loaded by
``conftest.py`` (``pytest_plugins``)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


class WarmPython:
    """The ``python`` for the tests' subprocesses: a client of the fork server warm_python.py
    (torch and open_clip imported once), or the plain interpreter with APRILGAN_COLD_PYTHON=1
    or where the server cannot start. Each command still runs in a process of its own."""

    def __init__(self) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="aprilgan-warm-"))
        self.socket = self.dir / "s"
        self.python, self.server, self.lifeline = sys.executable, None, None
        if os.environ.get("APRILGAN_COLD_PYTHON") == "1":
            return
        # the lifeline: the server ends with its process group when this process's end closes
        lifeline, self.lifeline = os.pipe()
        self.server = subprocess.Popen(
            [sys.executable, str(TESTS / "warm_python.py"), str(self.socket), str(lifeline)],
            stdout=subprocess.PIPE, stderr=open(self.dir / "server.log", "wb"),
            start_new_session=True, pass_fds=(lifeline,))
        os.close(lifeline)
        wrapper = self.dir / "python"
        # the server's address travels with the wrapper: any command given only this "python"
        # (a benchmark's --python, a script's PYTHON) reaches the server
        wrapper.write_text(f'#!/bin/sh\nAPRILGAN_WARM_PYTHON_SOCKET="{self.socket}" '
                           f'APRILGAN_WARM_PYTHON_REAL="{sys.executable}" '
                           f'exec "{sys.executable}" -S "{TESTS / "warm_client.py"}" "$@"\n')
        wrapper.chmod(0o755)
        self.wrapper, self.started = str(wrapper), False

    def ready(self) -> str:
        """The interpreter to run: the client once the server has imported its libraries."""
        if self.server is not None and not self.started:
            line = self.server.stdout.readline()  # "ready" once the imports are done
            self.started = True
            if line.strip() == b"ready":
                self.python = self.wrapper
            else:
                self.close()
        return self.python

    def env(self, base: dict | None = None, **extra: str) -> dict:
        """An environment whose ``PYTHON`` (read by scripts/*.sh) is the warm interpreter (the
        wrapper carries the server's address itself)."""
        return {**(os.environ if base is None else base), **extra, "PYTHON": self.ready()}

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            import signal

            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()
        if self.server is not None and self.lifeline is not None:
            os.close(self.lifeline)
            self.lifeline = None
        shutil.rmtree(self.dir, ignore_errors=True)


_WARM: list[WarmPython] = []


BACKGROUND: dict[str, object] = {}  # module name -> what its prefetch_in_background() started


def pytest_collection_finish(session) -> None:
    """Start the fork server as soon as a collected test will use it: its imports (one CPU)
    overlap the tests that run before. A test module may define ``prefetch_in_background()``
    (and ``PREFETCH_FIXTURE``): when a selected test uses that fixture, its slow work starts
    now, in another process, on the other CPU."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n: every worker collects every test,
        return  # and no CPU is left to overlap: the fixtures start what they need when asked
    if any("warm_python" in getattr(item, "fixturenames", ()) for item in session.items):
        _WARM.append(WarmPython())
    for item in session.items:
        mod = getattr(item, "module", None)
        start = getattr(mod, "prefetch_in_background", None)
        if start and mod.__name__ not in BACKGROUND and \
                getattr(mod, "PREFETCH_FIXTURE", None) in getattr(item, "fixturenames", ()):
            BACKGROUND[mod.__name__] = start()


def pytest_sessionfinish(session, exitstatus) -> None:
    while _WARM:  # also when no test took the fixture (-x, Ctrl-C before it was used)
        _WARM.pop().close()
    for started in BACKGROUND.values():
        proc = started[0] if isinstance(started, tuple) else None
        if isinstance(proc, subprocess.Popen) and proc.poll() is None:
            proc.kill()
            proc.wait()
        if isinstance(started, tuple) and len(started) > 1:  # its scratch folder, if left
            shutil.rmtree(Path(started[1]).parent, ignore_errors=True)


def session_warm_python() -> WarmPython:
    """The session's fork server, started now if nothing has started it yet; it ends with the
    session (``pytest_sessionfinish``)."""
    if not _WARM:
        _WARM.append(WarmPython())
    return _WARM[0]


@pytest.fixture(scope="session")
def warm_python():
    yield session_warm_python()
    _WARM.pop().close()
