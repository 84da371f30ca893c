"""Worker command for ``engine.forkserver``: stdlib only, so it starts in milliseconds.

``python -I -S client.py SOCKET KEY,KEY,...``: FnApiRunner runs this as an SDK worker's
command line with the worker's endpoints in its environment. It passes the named
variables to the fork server, which forks a pre-imported worker, and exits with that
worker's exit code (1 if the server goes away).
"""

import json
import os
import socket
import struct
import sys


def main(path: str, keys: list[str]) -> int:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    env = {k: os.environ[k] for k in keys if k in os.environ}
    conn.sendall(json.dumps(env).encode() + b"\n")
    data = b""
    while len(data) < 4:
        chunk = conn.recv(4 - len(data))
        if not chunk:
            return 1
        data += chunk
    code: int = struct.unpack("<i", data)[0]
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2].split(",")))
