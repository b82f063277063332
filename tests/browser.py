#!/usr/bin/python3
"""Load a page in headless Chromium, evaluate JavaScript in it and take a screenshot, for the
tests of the web pages. Standard library only: it speaks the Chrome DevTools Protocol over its
own small WebSocket client.

    browser.py URL --screenshot OUT.png [--width 1280] [--height 900] [--full-page]
               [--eval JS]... [--timeout 30] [--console]

It waits for the load event and for every <img> to finish (loaded or failed), runs each --eval
in order (promises are awaited), writes the PNG and prints one JSON object on stdout:
{"url", "status" (HTTP status of the main document), "title", "eval": [results],
"screenshot", "png_width", "png_height"}. Exit status 1, with one line on stderr, on any
failure: Chromium missing or not starting, timeout, navigation error (then stdout still gets
{"url", "status": "net::ERR_..."}), an exception in an --eval. --console copies console
messages, log entries and uncaught exceptions of the page to stderr. $CHROMIUM overrides the
browser binary (default: chromium on $PATH).
"""
import argparse
import base64
import ctypes
import hashlib
import http.client
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # fixed by RFC 6455
IMAGES_DONE = """Array.from(document.images).every(i => {
    const r = i.getBoundingClientRect();
    return i.complete || (i.loading === "lazy" && (r.bottom < 0 || r.top > innerHeight ||
                                                   r.right < 0 || r.left > innerWidth));
})"""


class Failure(Exception):
    """An error worth one line on stderr and exit status 1."""


def xor_mask(data, mask):
    # One big-integer XOR is much faster in Python than a per-byte loop for large frames.
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class WebSocket:
    """The client half of RFC 6455, as much of it as CDP needs (no extensions)."""

    def __init__(self, url, timeout):
        u = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        self.buf = bytearray()
        key = base64.b64encode(os.urandom(16)).decode()
        # No Origin header: Chromium refuses WebSocket origins it was not told to allow
        # (--remote-allow-origins), but accepts clients that send none.
        target = u.path + ("?" + u.query if u.query else "")
        self.sock.sendall((f"GET {target or '/'} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill(65536)
        end = self.buf.index(b"\r\n\r\n")
        lines = self.buf[:end].decode("latin-1").split("\r\n")
        del self.buf[:end + 4]  # frames may already follow the handshake
        if len(lines[0].split()) < 2 or lines[0].split()[1] != "101":
            raise Failure(f"WebSocket handshake with {url} refused: {lines[0]}")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise Failure(f"WebSocket handshake with {url}: bad Sec-WebSocket-Accept")

    def _fill(self, want):
        chunk = self.sock.recv(min(max(want, 65536), 1 << 20))
        if not chunk:
            raise Failure("the browser closed the DevTools connection")
        self.buf += chunk

    def _read(self, n):
        while len(self.buf) < n:
            self._fill(n - len(self.buf))
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _send(self, opcode, payload):
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)  # clients must mask every frame, control frames included
        self.sock.sendall(head + mask + xor_mask(payload, mask))

    def send(self, text):
        self._send(0x1, text.encode())

    def recv(self):
        """The next whole text or binary message, reassembled from its fragments."""
        parts = []
        while True:
            b0, b1 = self._read(2)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None  # servers should not mask; tolerate it
            data = self._read(n)
            if mask:
                data = xor_mask(data, mask)
            if opcode == 0x9:  # ping: control frames may come between fragments
                self._send(0xA, data)
            elif opcode == 0x8:
                self._send(0x8, data[:2])
                raise Failure("the browser closed the DevTools connection")
            elif opcode in (0x0, 0x1, 0x2):
                parts.append(data)
                if fin:
                    return b"".join(parts).decode("utf-8", "replace")
            # 0xA (pong) and unknown opcodes are ignored


class CDP:
    """Commands and events on one page target, all bounded by one overall deadline."""

    def __init__(self, ws, deadline, limit, console):
        self.ws, self.deadline, self.limit, self.console = ws, deadline, limit, console
        self.next_id, self.events = 0, []

    def _recv(self, what):
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:
                raise socket.timeout
            self.ws.sock.settimeout(left)
            msg = json.loads(self.ws.recv())
        except socket.timeout:
            raise Failure(f"timed out after {self.limit:g} s waiting for {what}") from None
        if msg.get("method") == "Inspector.targetCrashed":
            raise Failure("the page crashed (renderer process died)")
        if "method" in msg:
            self.events.append(msg)
            if self.console:
                show_console(msg)
        return msg

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = self._recv(f"the answer to {method}")
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise Failure(f"{method}: {msg['error'].get('message')}")
                return msg.get("result", {})

    def wait_event(self, method, what):
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if ev["method"] == method:
                    return ev["params"]
            seen = len(self.events)
            self._recv(what)

    def evaluate(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text", "exception")
            raise Failure(f"--eval {expr!r} threw: {text.splitlines()[0]}")
        return r["result"].get("value")  # absent for undefined, hence .get


def show_console(msg):
    p = msg["params"]
    if msg["method"] == "Runtime.consoleAPICalled":
        args = [str(a["value"]) if "value" in a else a.get("description", a["type"])
                for a in p.get("args", [])]
        print(f"console.{p['type']}: {' '.join(args)}", file=sys.stderr)
    elif msg["method"] == "Runtime.exceptionThrown":
        d = p["exceptionDetails"]  # one line per message: the first of the stack, and where
        text = (d.get("exception", {}).get("description") or d.get("text", "")).splitlines()
        where = f"{d.get('url', '')}:{d.get('lineNumber', -1) + 1}"
        print(f"exception: {text[0] if text else '?'} ({where})", file=sys.stderr)
    elif msg["method"] == "Log.entryAdded":  # e.g. failed resource loads
        e = p["entry"]
        print(f"log.{e['level']}: {e['text']} {e.get('url', '')}".rstrip(), file=sys.stderr)


def start_chromium(args, tmp, state, deadline):
    """Start Chromium and return the DevTools port. Tries --headless=new, then plain --headless
    for builds that do not know the former."""
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not binary:
        raise Failure("chromium not found (install it or set $CHROMIUM)")
    for mode in ("--headless=new", "--headless"):
        profile = os.path.join(tmp, "profile")
        shutil.rmtree(profile, ignore_errors=True)
        cmd = [binary, mode, "--remote-debugging-port=0", f"--user-data-dir={profile}",
               "--disable-gpu", "--no-first-run", "--no-default-browser-check",
               "--disable-extensions", "--hide-scrollbars", "--mute-audio",
               # CI containers often have a 64 MiB /dev/shm, which makes renderers crash; the
               # Debian wrapper's own check for this breaks when findmnt prints two lines.
               "--disable-dev-shm-usage",
               f"--window-size={args.width},{args.height}"]
        if os.geteuid() == 0:
            cmd.append("--no-sandbox")  # the sandbox refuses to run as root
        # Whatever --user-data-dir says, the crash handler keeps its database in
        # $XDG_CONFIG_HOME/chromium, and dconf writes into $XDG_CACHE_HOME: keep both in the
        # temporary directory, beside (not above) the profile, which Chromium would otherwise
        # take for one under ~/.config and give a disk cache in ~/.cache.
        env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(tmp, "config"),
                   XDG_CACHE_HOME=os.path.join(tmp, "cache"))
        log = open(os.path.join(tmp, "chromium.log"), "wb")
        # Own session, so the whole process tree dies with one killpg; stdout must not reach
        # ours (it is the JSON), stderr is noisy (D-Bus) and only wanted when it fails.
        try:
            proc = state["proc"] = subprocess.Popen(
                cmd + ["about:blank"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, env=env)
        except OSError as e:
            raise Failure(f"cannot start {binary}: {e.strerror}") from None
        finally:
            log.close()
        port_file = os.path.join(profile, "DevToolsActivePort")
        while proc.poll() is None:
            try:
                with open(port_file) as f:
                    lines = f.read().split("\n")
                if len(lines) >= 2 and lines[0].isdigit():  # else it is still being written
                    return int(lines[0])
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise Failure("timed out waiting for chromium to start")
            time.sleep(0.05)
        kill_chromium(state)
    with open(os.path.join(tmp, "chromium.log"), "rb") as f:
        tail = [l for l in f.read().decode(errors="replace").splitlines() if l.strip()][-1:]
    raise Failure(f"chromium exited with status {proc.returncode}: {' '.join(tail)}")


def page_target(port, deadline):
    """The WebSocket URL of the first page; the about:blank tab may appear a moment late."""
    while True:
        # http.client rather than urllib, so that no $http_proxy gets in between.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/json/list")
        targets = json.loads(conn.getresponse().read())
        conn.close()
        for t in targets:
            if t.get("type") == "page" and "webSocketDebuggerUrl" in t:
                return t["webSocketDebuggerUrl"]
        if time.monotonic() > deadline:
            raise Failure("timed out waiting for chromium's page target")
        time.sleep(0.05)


def kill_chromium(state):
    proc = state.pop("proc", None)
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    # As a subreaper (see main) we inherit what the browser leaves: renderers dying a moment
    # late, and the crash handler, which runs in a process group of its own. Kill and reap
    # them, so that none is left behind or still writes into the profile we delete next.
    end = time.monotonic() + 3
    while time.monotonic() < end:
        try:
            with open(f"/proc/self/task/{os.getpid()}/children") as f:
                for pid in f.read().split():
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.01)
        except ChildProcessError:
            break


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise Failure(f"{path}: the screenshot is not a PNG")
    return struct.unpack("!II", head[16:24])


def browse(args, tmp, state):
    deadline = time.monotonic() + args.timeout
    port = start_chromium(args, tmp, state, deadline)
    ws = WebSocket(page_target(port, deadline), timeout=5)
    cdp = CDP(ws, deadline, args.timeout, args.console)
    cdp.call("Inspector.enable")  # for targetCrashed
    cdp.call("Page.enable")
    cdp.call("Network.enable")
    if args.console:
        cdp.call("Runtime.enable")
        cdp.call("Log.enable")
    cdp.call("Emulation.setDeviceMetricsOverride", width=args.width, height=args.height,
             deviceScaleFactor=1, mobile=False)
    cdp.events.clear()  # only events of our navigation count from here on
    nav = cdp.call("Page.navigate", url=args.url)
    error = nav.get("errorText")
    # A 4xx/5xx answer with an empty body is reported as this error, and Chromium shows its own
    # error page; for our purposes it is still a loaded page with an HTTP status.
    if error and error != "net::ERR_HTTP_RESPONSE_CODE_FAILURE":
        print(json.dumps({"url": args.url, "status": error}))
        raise Failure(f"loading {args.url} failed: {error}")
    cdp.wait_event("Page.loadEventFired", "the load event")
    # Images inserted by scripts after the load event count too. Lazy images off screen are
    # never fetched, so waiting for them would only end in a timeout.
    while not cdp.evaluate(IMAGES_DONE):
        if time.monotonic() + 0.05 > deadline:
            raise Failure(f"timed out after {args.timeout:g} s waiting for the images to load")
        time.sleep(0.05)
    status = None
    for ev in cdp.events:
        p = ev["params"]
        if (ev["method"] == "Network.responseReceived" and p.get("type") == "Document"
                and p.get("frameId") == nav.get("frameId")
                and p.get("loaderId") == nav.get("loaderId")):
            status = p["response"]["status"]  # redirects show only their final answer here
    results = [cdp.evaluate(expr) for expr in args.eval]
    title = cdp.evaluate("document.title")
    shot = {"format": "png"}
    if args.full_page:
        m = cdp.call("Page.getLayoutMetrics")
        size = m.get("cssContentSize") or m["contentSize"]  # older builds lack the former
        shot.update(captureBeyondViewport=True,
                    clip={"x": 0, "y": 0, "width": math.ceil(size["width"]),
                          "height": math.ceil(size["height"]), "scale": 1})
    png = base64.b64decode(cdp.call("Page.captureScreenshot", **shot)["data"])
    with open(args.screenshot, "wb") as f:
        f.write(png)
    w, h = png_size(args.screenshot)
    print(json.dumps({"url": args.url, "status": status, "title": title, "eval": results,
                      "screenshot": args.screenshot, "png_width": w, "png_height": h}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("--screenshot", required=True, metavar="OUT.png")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--full-page", action="store_true")
    ap.add_argument("--eval", action="append", default=[], metavar="JS")
    ap.add_argument("--timeout", type=float, default=30, metavar="SECONDS")
    ap.add_argument("--console", action="store_true")
    args = ap.parse_args()

    def on_signal(signum, _frame):
        raise Failure(f"terminated by signal {signum}")
    # timeout(1) and test harnesses send SIGTERM: turn it into an exception so cleanup runs.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:  # PR_SET_CHILD_SUBREAPER: Chromium's orphans become ours to kill and reap
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    tmp = tempfile.mkdtemp(prefix="browser-py.")
    state = {}
    try:
        browse(args, tmp, state)
        return 0
    except Failure as e:
        print(f"browser.py: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("browser.py: interrupted", file=sys.stderr)
    except (OSError, ValueError) as e:  # e.g. DevTools connection reset, unwritable OUT.png
        print(f"browser.py: {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let nothing interrupt the cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        kill_chromium(state)
        # Renderers killed a moment ago may still write into the profile: retry a little.
        for _ in range(20):
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.exists(tmp):
                break
            time.sleep(0.05)
    return 1


if __name__ == "__main__":
    sys.exit(main())
