#!/usr/bin/env python3
"""Open N connections to HOST PORT, send the first 20 bytes of an A-ASSOCIATE-RQ on each and
stall. Writes "ready" to READY_FILE once all are sent, then waits up to HOLD_S seconds (or
until every connection was closed by the server) and prints how many the server closed."""
import select
import socket
import struct
import sys
import time

host, port, n, hold, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
called = b"MMSEGD".ljust(16)
calling = b"STALL".ljust(16)
body = struct.pack(">HH", 1, 0) + called + calling + bytes(32)
body += b"\x10\x00" + struct.pack(">H", 21) + b"1.2.840.10008.3.1.1.1"
rq = struct.pack(">BBI", 1, 0, len(body)) + body
socks = []
for _ in range(n):
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(rq[:20])
    socks.append(s)
with open(ready, "w") as f:
    f.write("ready\n")
closed = set()
end = time.monotonic() + hold
while time.monotonic() < end and len(closed) < n:
    live = [s for s in socks if s.fileno() not in closed]
    r, _, _ = select.select(live, [], [], 0.1)
    for s in r:
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            closed.add(s.fileno())
print(len(closed))
