"""A listener that never accepts: every client waits in the kernel's accept queue (L1), and
once the queue is full, new SYNs are dropped on this socket.
Usage: ``python listener.py PORT BACKLOG``."""

from __future__ import annotations

import socket
import sys
import time

sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(int(sys.argv[2]))
while True:
    time.sleep(60)
