"""Worker command for ``engine.forkserver``: stdlib only, so it starts in milliseconds.

``python -I -S client.py SOCKET KEY,KEY,...``: FnApiRunner runs this as an SDK worker's
command line with the worker's endpoints in its environment. It passes the named
variables to the fork server, which forks a pre-imported worker and answers with its
pid, then with its exit code once it ends; the client exits with that code (1 if the
server goes away once the worker runs: the worker serves on). A fork server that
cannot be reached or goes away before it forked the worker (it died, or was killed)
does not stop the run: the client then becomes a worker itself, Beam's own
``sdk_worker_main`` in a fresh interpreter (the ``spawn`` engine's worker, which
imports everything again), with the same endpoints.
"""

import json
import os
import socket
import struct
import sys


def main(path: str, keys: list[str]) -> int:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    env = {k: os.environ[k] for k in keys if k in os.environ}
    try:
        conn.connect(path)
        conn.sendall(json.dumps(env).encode() + b"\n")
    except OSError as exc:
        cold_worker(exc)
    if read_int(conn) is None:  # the worker's pid: none came, so no worker was forked
        cold_worker(ConnectionError("it closed the connection before forking a worker"))
    code = read_int(conn)
    return 1 if code is None else code


def read_int(conn: socket.socket) -> int | None:
    """The next 4-byte integer the fork server sent, or None if the connection ended."""
    data = b""
    while len(data) < 4:
        try:
            chunk = conn.recv(4 - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    value: int = struct.unpack("<i", data)[0]
    return value


def cold_worker(reason: BaseException) -> None:
    """Replace this process by a worker that imports everything itself."""
    print(f"beamscore: the worker fork server cannot be reached ({reason}); this worker "
          "starts in a fresh interpreter instead", file=sys.stderr, flush=True)
    os.execv(sys.executable,
             [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2].split(",")))
