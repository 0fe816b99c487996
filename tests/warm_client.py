"""The ``python`` the tests give the scripts: runs ``python ARGS`` in the warm fork server.

Standard library only (started with ``python -S``: a few milliseconds). See warm_python.py.
Arguments it does not know (interpreter options other than ``-u``), or no server to reach: it
becomes the real interpreter (``APRILGAN_WARM_PYTHON_REAL``) with the same arguments.
"""
import json
import os
import signal
import socket
import struct
import sys

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)


def _supported(args: list) -> bool:
    if not args:
        return False
    if args[0] in ("-m", "-c"):
        return len(args) > 1
    return args[0] == "-" or not args[0].startswith("-")


def _recv_int(conn: socket.socket):
    buf = b""
    while len(buf) < 4:
        chunk = conn.recv(4 - len(buf))
        if not chunk:
            return None
        buf += chunk
    return struct.unpack("!i", buf)[0]


def main() -> None:
    real = os.environ.get("APRILGAN_WARM_PYTHON_REAL") or sys.executable
    path = os.environ.get("APRILGAN_WARM_PYTHON_SOCKET")
    args = sys.argv[1:]
    while args and args[0] == "-u":  # streams are line buffered in the server anyway
        args = args[1:]
    conn = None
    if path and _supported(args):
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(path)
        except OSError:
            conn = None
    if conn is None:
        os.execv(real, [real, *sys.argv[1:]])
    body = json.dumps({"args": args, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    socket.send_fds(conn, [struct.pack("!I", len(body))], [0, 1, 2])
    conn.sendall(body)
    pid = _recv_int(conn)
    if pid is None:
        sys.stderr.write("warm_client: the fork server closed the connection\n")
        sys.exit(1)
    for sig in FORWARDED:
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    code = _recv_int(conn)
    if code is None:
        sys.stderr.write("warm_client: the fork server went away\n")
        sys.exit(1)
    if code < 0:  # the command died of a signal: so do we
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()
