#!/usr/bin/python3
"""A small HTTP server that answers STOW-RS requests as told, for tests/test-stow.sh: the
status codes Orthanc cannot be made to return (5xx, 429 with Retry-After, 409, a 202 naming
failed instances); and a TLS front for a plain HTTP server (Debian 12's Orthanc 1.10.1 ends
with SIGSEGV on its first HTTPS request).

    http_stub.py PLAN.json LOG PORT_FILE
    http_stub.py --tls-proxy CERT_AND_KEY.pem TARGET_PORT PORT_FILE

PLAN maps a request path to the answers of its successive POSTs, each {"status": N,
"headers": {...}, "body": "..."}; once they are used up, and for any other path, the answer
is 200 with "{}". It listens on 127.0.0.1 on a free port, which it writes to PORT_FILE. Each
request is one JSON line of LOG: time, path, status answered, Content-Type, and its
multipart/related parts (each part's Content-Type, length and MD5).
"""
import hashlib
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def tls_proxy(pem, target, port_file):
    """Accept TLS on 127.0.0.1 (a free port, written to port_file), and pass the bytes of each
    connection to and from 127.0.0.1:target as they come."""
    import os
    import socket
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(ls.getsockname()[1]))
    os.rename(port_file + ".tmp", port_file)

    def pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def serve(c):
        try:
            t = ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError):  # the client refused our certificate
            c.close()
            return
        u = socket.create_connection(("127.0.0.1", target))
        threading.Thread(target=pipe, args=(u, t), daemon=True).start()
        pipe(t, u)

    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if sys.argv[1] == "--tls-proxy":
    tls_proxy(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    sys.exit(0)
plan = json.load(open(sys.argv[1]))
log_path, port_file = sys.argv[2], sys.argv[3]
lock = threading.Lock()
used = {}


def parts(ctype, body):
    m = re.search(r'boundary="?([^";]+)"?', ctype or "")
    if not m:
        return None
    delim = b"--" + m.group(1).encode()
    out = []
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        if not chunk.startswith(b"\r\n") or not data.endswith(b"\r\n"):
            out.append({"malformed": True})
            continue
        data = data[:-2]
        ptype = ""
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-type:"):
                ptype = line.split(b":", 1)[1].strip().decode()
        out.append({"type": ptype, "length": len(data), "md5": hashlib.md5(data).hexdigest()})
    return out


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        with lock:
            k = used.get(self.path, 0)
            used[self.path] = k + 1
            answers = plan.get(self.path, [])
            a = answers[k] if k < len(answers) else {"status": 200, "body": "{}"}
            rec = {"time": time.time(), "path": self.path, "status": a["status"],
                   "content_type": self.headers.get("Content-Type"),
                   "authorization": self.headers.get("Authorization"),
                   "parts": parts(self.headers.get("Content-Type"), body)}
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        data = a.get("body", "").encode()
        self.send_response(a["status"])
        for h, v in a.get("headers", {}).items():
            self.send_header(h, v)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os  # noqa: E402
os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
