"""A fork server that lets the tests start Python processes without paying the torch import.

Every ``python train.py ...`` the bash scripts (and torchrun) start imports torch, torchvision
and open_clip first: about 6 s of CPU here, most of the time of an end-to-end script test. This
server imports those libraries once (never the project's own modules, which each process imports
fresh from its own working directory) and forks a new process per request;
``tests/warm_client.py`` is the ``python`` the tests hand to the scripts (``PYTHON=...``,
``torchrun --no-python``). Each request still runs in a process of its own, with the client's
arguments, working directory, environment, standard streams and exit status, so the scripts and
entry points run exactly as a user runs them, only without the import wait.

Per request the server forks a *handler*, and the handler forks the *worker* that runs the
command. The handler sends the worker's pid to the client, waits for the worker and sends its exit
status back; when the client goes away first (killed), it SIGKILLs the worker, so killing the
client kills the command as it would kill a real interpreter. The client forwards the signals it
can catch (SIGINT, SIGTERM, ...) to the worker and dies of the signal the worker died of.

Run by ``tests/session_processes.py`` (fixture ``warm_python``): ``python tests/warm_python.py SOCKET
[LIFELINE_FD]``. LIFELINE_FD is the read end of a pipe whose write end only the pytest process
holds: when that process ends in any way (a normal end, ``-x``, Ctrl-C, SIGKILL) the pipe reads
end-of-file and the server kills its whole process group (itself, its handlers and any command
still running), so it never outlives the test session.
``APRILGAN_COLD_PYTHON=1`` makes the tests use a fresh interpreter for every process instead.
"""
from __future__ import annotations

import atexit
import gc
import importlib
import io
import json
import os
import runpy
import select
import signal
import socket
import struct
import sys
import threading
import traceback
import types

# Third-party libraries only: the project's modules must come from each request's own cwd.
# APRILGAN_WARM_PRELOAD (comma-separated module names) replaces the list: the tests of the
# server's own life (tests/test_warm_python.py) need no torch in it.
PRELOAD = tuple(filter(None, os.environ.get("APRILGAN_WARM_PRELOAD", "").split(","))) or (
    "numpy", "torch", "torchvision", "open_clip", "cv2", "PIL.Image", "tqdm", "sklearn",
    "torch.distributed.run", "onnx", "onnxruntime", "scipy.stats", "scipy.ndimage",
    "matplotlib.figure", "matplotlib.backends.backend_agg", "jinja2", "tabulate")
HEADER = struct.Struct("!I")
STATUS = struct.Struct("!i")


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError("client went away")
        buf += chunk
    return buf


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    """The client's stdin/stdout/stderr (passed as file descriptors) and its JSON request."""
    head, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
    head += _recv_exact(conn, HEADER.size - len(head))
    (n,) = HEADER.unpack(head)
    return json.loads(_recv_exact(conn, n)), fds


def _stream(fd: int, mode: str):
    """A fresh text stream on ``fd`` (line buffered, like ``python -u`` for whole lines)."""
    raw = io.FileIO(fd, mode, closefd=False)
    if mode == "r":
        return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8", errors="strict")
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8",
                            errors="backslashreplace" if fd == 2 else "strict",
                            line_buffering=True)


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def _run_worker(req: dict, fds: list[int]) -> None:
    """Become the requested ``python ARGS`` process; never returns."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.stdin, sys.stdout, sys.stderr = _stream(0, "r"), _stream(1, "w"), _stream(2, "w")
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    # what a new interpreter reads from its environment at start-up
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[1:1] = extra
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0 and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    args, code, interrupted = list(req["args"]), 0, False
    main = types.ModuleType("__main__")  # a fresh __main__, as a new interpreter has
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    try:
        if args[0] == "-m":
            sys.argv, sys.path[0] = ["-m", *args[2:]], os.getcwd()
            runpy._run_module_as_main(args[1], alter_argv=True)
        elif args[0] in ("-c", "-"):
            source = args[1] if args[0] == "-c" else sys.stdin.read()
            sys.argv, sys.path[0] = [args[0], *args[2 if args[0] == "-c" else 1:]], ""
            exec(compile(source, "<string>" if args[0] == "-c" else "<stdin>", "exec"),
                 main.__dict__)
        else:
            sys.argv = args
            sys.path[0] = os.path.dirname(os.path.realpath(args[0]))
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit as e:
        code = _exit_code(e)
    except KeyboardInterrupt:
        err = sys.exc_info()[1]
        traceback.print_exception(err.with_traceback(err.__traceback__.tb_next))
        interrupted = True
    except BaseException:  # noqa: BLE001 - printed as the interpreter prints it
        err = sys.exc_info()[1]
        err = err.with_traceback(err.__traceback__.tb_next)  # without this file's frame
        sys.excepthook(type(err), err, err.__traceback__)
        code = 1
    try:
        threading._shutdown()  # join non-daemon threads, as the interpreter does at exit
    except Exception:  # noqa: BLE001
        pass
    atexit._run_exitfuncs()
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:  # noqa: BLE001 - a closed pipe
            pass
    if interrupted:  # die of SIGINT, as the interpreter does on an uncaught KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _handle(conn: socket.socket) -> None:
    """The handler process of one request: fork the worker, report its pid and exit status."""
    try:
        req, fds = _read_request(conn)
    except (EOFError, OSError, ValueError):
        os._exit(1)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _run_worker(req, fds)
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(STATUS.pack(pid))
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = None
    while True:
        ready, _, _ = select.select([conn] + ([pidfd] if pidfd is not None else []), [], [],
                                    None if pidfd is not None else 0.05)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if conn in ready and not conn.recv(64):  # the client was killed: so is its command
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os._exit(0)
    try:
        conn.sendall(STATUS.pack(os.waitstatus_to_exitcode(status)))
    except OSError:
        pass
    os._exit(0)


def serve(path: str, lifeline: int | None = None) -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    # What is imported now lives as long as every worker: keep it out of the garbage collector's
    # sweeps. Otherwise each full collection in a worker (pytest runs five at its end) walks the
    # whole torch heap, about 1.2 s here, and copies every page it touches from this process.
    gc.freeze()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped automatically
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([srv] + ([lifeline] if lifeline is not None else []), [], [])
        if lifeline in ready and not os.read(lifeline, 64):  # the test session has ended
            os.killpg(0, signal.SIGKILL)
        if srv not in ready:
            continue
        conn, _ = srv.accept()
        if os.fork() == 0:
            srv.close()
            if lifeline is not None:
                os.close(lifeline)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _handle(conn)
        conn.close()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
