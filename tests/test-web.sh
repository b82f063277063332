#!/bin/bash
# The HTTP side of `mmsegd serve` (metrics_listen; daemon/web.c on libmicrohttpd), with curl
# and plain sockets:
#  a) /healthz answers 200 "ok" with the loop, the index and the model fine; / is the status
#     page (HTML); /metrics the Prometheus text;
#  b) a CT series received (3 instances): the page has its row and, by default, neither the
#     patient's name nor ID; a description that is markup is escaped; after SIGHUP with
#     status_page_phi = yes the name and ID are shown;
#  c) no URL reaches a file: /preview/ with "..", encoded slashes, a leading zero, a job that
#     does not exist, other paths: 404;
#  d) only GET and HEAD: POST is 405; a GET with a body 413; a request head over 16 KiB 431;
#  e) limits: 8 idle connections from one address, and a 9th from it is refused while another
#     address is served; after the 10 s idle timeout the address is served again; 16 in all,
#     and a 17th is refused; 16 closed at once, and the next request is served at once;
#  f) the model file removed: /healthz 503 naming it; put back: 200.
set -u
. "$(dirname "$0")/find-testdata.sh"
. "$(dirname "$0")/serve-util.sh"
require_testdata
for t in storescu dcmodify curl; do
    command -v $t >/dev/null || { echo "1..0 # SKIP $t is not installed (DCMTK tools, curl)"; exit 0; }
done
mmsegd=${MMSEGD:-./mmsegd}
python=${PYTHON3:-/usr/bin/python3}
src=${srcdir:-.}
ct=$td/dcmqi/data/segmentations/ct-3slice
tmp=$(mktemp -d)
trap serve_cleanup EXIT
echo "1..21"

port=$(free_port)
mport=$(free_port)
url=http://127.0.0.1:$mport
cp "$src/models/demo.safetensors" "$tmp/model.safetensors"
write_config() { # PHI (yes or no)
    serve_config "$tmp/mmsegd.ini" "$tmp/state" "$port" "metrics_listen = 127.0.0.1:$mport" \
        "status_page_phi = $1" <<INI
[series]
stable_age_s = 3600
[infer]
model = $tmp/model.safetensors
INI
}
write_config no
if start; then result OK "the daemon starts, HTTP on 127.0.0.1:$mport"; else
    result FAIL "the daemon starts"
    sed 's/^/# /' "$tmp/log" | tail -20
    exit 1
fi
code() { # ARGS...: the HTTP status curl got (000: no answer)
    curl -s -o "$tmp/body" -w '%{http_code}' --max-time 20 "$@"
}

# ---------------------------------------------------------------------------- a)
c=$(code "$url/healthz")
[ "$c" = 200 ] && [ "$(head -1 "$tmp/body")" = ok ] && grep -q "^model: ok" "$tmp/body" &&
    result OK "a) /healthz: 200 ok (loop, index, model)" ||
    result FAIL "a) /healthz: 200 ok (got $c: $(tr '\n' ' ' <"$tmp/body"))"
c=$(code -D "$tmp/head" "$url/")
[ "$c" = 200 ] && grep -qi '^content-type: text/html' "$tmp/head" &&
    grep -q '<table id="series">' "$tmp/body" && ! grep -qi '<script' "$tmp/body" &&
    result OK "a) /: the status page, HTML without script" ||
    result FAIL "a) /: the status page (got $c)"
c=$(code "$url/metrics")
[ "$c" = 200 ] && grep -q '^mmsegd_index_ok 1$' "$tmp/body" &&
    result OK "a) /metrics: the Prometheus text" || result FAIL "a) /metrics (got $c)"

# ---------------------------------------------------------------------------- b)
storescu -aec MMSEGD 127.0.0.1 "$port" "$ct"/*.dcm >"$tmp/storescu.out" 2>&1
series_uid=$(dcmdump +P SeriesInstanceUID "$ct/01.dcm" | sed -n 's/.*\[\(.*\)\].*/\1/p')
name=$(dcmdump +P PatientName "$ct/01.dcm" | sed -n 's/.*\[\(.*\)\].*/\1/p')
pid_=$(dcmdump +P PatientID "$ct/01.dcm" | sed -n 's/.*\[\(.*\)\].*/\1/p')
page_has_series() { code "$url/" >/dev/null && grep -qF "$series_uid" "$tmp/body"; }
if wait_for 20 page_has_series; then
    row=$(grep -c '<tr class="series">' "$tmp/body")
    [ "$row" = 1 ] && result OK "b) the page has the series received ($series_uid)" ||
        result FAIL "b) one series row (got $row)"
else
    result FAIL "b) the page has the series received"
fi
[ -n "$name" ] && [ -n "$pid_" ] && ! grep -qF "$name" "$tmp/body" && ! grep -qF "$pid_" "$tmp/body" &&
    ! grep -q '<th>Patient' "$tmp/body" &&
    result OK "b) by default no patient name ($name) or ID ($pid_) on the page" ||
    result FAIL "b) by default no patient name ('$name') or ID ('$pid_') on the page"
# received text is escaped: a series whose description is markup
mkdir -p "$tmp/xss"
cp "$ct"/*.dcm "$tmp/xss/"
dcmodify -nb -m "(0008,103E)=<script>alert(1)</script><img src=x>&amp;" \
    -m "(0020,000E)=2.25.1234567890" -gin "$tmp/xss"/*.dcm >/dev/null 2>&1
storescu -aec MMSEGD 127.0.0.1 "$port" "$tmp/xss"/*.dcm >>"$tmp/storescu.out" 2>&1
page_has_xss() { code "$url/" >/dev/null && grep -qF "2.25.1234567890" "$tmp/body"; }
wait_for 20 page_has_xss && ! grep -qi '<script\|<img src=x' "$tmp/body" &&
    grep -qF '&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x&gt;&amp;amp;' "$tmp/body" &&
    result OK "b) a description that is markup is shown escaped" ||
    result FAIL "b) a description that is markup is shown escaped"
write_config yes
kill -HUP "$pid"
phi_shown() { code "$url/" >/dev/null && grep -qF "<td>$name</td><td>$pid_</td>" "$tmp/body"; }
wait_for 20 phi_shown && result OK "b) status_page_phi = yes (SIGHUP): the name and ID are shown" ||
    result FAIL "b) status_page_phi = yes (SIGHUP): the name and ID are shown"
write_config no
kill -HUP "$pid"
phi_gone() { code "$url/" >/dev/null && ! grep -qF "$name" "$tmp/body"; }
wait_for 20 phi_gone && result OK "b) status_page_phi = no again: gone" ||
    result FAIL "b) status_page_phi = no again: gone"

# ---------------------------------------------------------------------------- c)
bad=0 seen=""
for p in "/preview/../../../../etc/passwd" "/preview/..%2f..%2f..%2fetc%2fpasswd" \
    "/preview/%2e%2e/%2e%2e/etc/passwd" "/preview/1.png/../../../../etc/passwd" \
    "/preview/01.png" "/preview/1.png" "/preview/-1.png" "/preview/1.png%00.txt" \
    "/preview/99999999999999999999.png" "/../../etc/passwd" "/etc/passwd" "/preview/"; do
    c=$(code --path-as-is "$url$p")
    seen="$seen $c"
    { [ "$c" = 404 ] && ! grep -q "root:" "$tmp/body"; } || bad=1
done
[ $bad = 0 ] && result OK "c) 12 preview and path traversal URLs: all 404" ||
    result FAIL "c) 12 preview and path traversal URLs: all 404 (got$seen)"

# ---------------------------------------------------------------------------- d)
c=$(code -X POST -d x "$url/metrics")
[ "$c" = 405 ] && result OK "d) POST: 405" || result FAIL "d) POST: 405 (got $c)"
c=$(code -X GET -d hello "$url/metrics")
[ "$c" = 413 ] && result OK "d) GET with a body: 413" || result FAIL "d) GET with a body: 413 (got $c)"
c=$(code -H "X-Large: $(head -c 20000 /dev/zero | tr '\0' a)" "$url/metrics")
[ "$c" = 431 ] && result OK "d) a 20 KB request head: 431" ||
    result FAIL "d) a 20 KB request head: 431 (got $c)"

# ---------------------------------------------------------------------------- e)
# hold SECONDS ADDRESS...: one connection from each address that sends nothing, held in the
# background (pid in idle)
hold() {
    : >"$tmp/idle.out"
    "$python" - "$mport" "$@" >"$tmp/idle.out" 2>&1 <<'PY' &
import socket, sys, time
held = []
for a in sys.argv[3:]:
    s = socket.socket()
    s.bind((a, 0))
    s.connect(("127.0.0.1", int(sys.argv[1])))
    held.append(s)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
PY
    idle=$!
    wait_for 10 grep -q held "$tmp/idle.out"
    sleep 0.5
}
hold 15 127.0.0.1 127.0.0.1 127.0.0.1 127.0.0.1 127.0.0.1 127.0.0.1 127.0.0.1 127.0.0.1
c1=$(code --max-time 5 "$url/metrics")
c2=$(code --max-time 5 --interface 127.0.0.2 "$url/metrics")
[ "$c1" = 000 ] && [ "$c2" = 200 ] &&
    result OK "e) 8 idle connections from 127.0.0.1: a 9th from it refused, 127.0.0.2 served" ||
    result FAIL "e) 8 idle connections from 127.0.0.1: 9th refused, 127.0.0.2 served (got $c1, $c2)"
served_again() { [ "$(code --max-time 5 "$url/metrics")" = 200 ]; }
t0=$SECONDS
wait_for 14 served_again && result OK "e) the idle ones closed after the timeout: served again ($((SECONDS - t0)) s)" ||
    result FAIL "e) the idle ones closed after the timeout: served again"
kill "$idle" 2>/dev/null
wait "$idle" 2>/dev/null
# 16 connections at most in all: from four addresses, 4 each, then a 17th
four() { for _ in 1 2 3 4; do printf '%s ' "$1"; done; }
# shellcheck disable=SC2046 # the addresses are words
hold 12 $(four 127.0.0.10) $(four 127.0.0.11) $(four 127.0.0.12) $(four 127.0.0.13)
c=$(code --max-time 5 --interface 127.0.0.3 "$url/metrics")
[ "$c" = 000 ] && result OK "e) 16 idle connections in all: a 17th refused" ||
    result FAIL "e) 16 idle connections in all: a 17th refused (got $c)"
kill "$idle" 2>/dev/null
wait "$idle" 2>/dev/null
wait_for 14 served_again && result OK "e) served again once they are gone" ||
    result FAIL "e) served again once they are gone"

# at the limit libmicrohttpd stops listening until closed connections are cleaned up: 20
# rounds of 16 connections opened and closed at once, each followed by a request
stuck=0
for _ in $(seq 20); do
    "$python" - "$mport" <<'PY'
import socket, sys, time
held = []
for a in range(16):
    s = socket.socket()
    s.bind(("127.0.0.%d" % (10 + a // 4), 0))
    s.connect(("127.0.0.1", int(sys.argv[1])))
    held.append(s)
time.sleep(0.2)
for s in held:
    s.close()
PY
    [ "$(code --max-time 3 "$url/healthz")" = 200 ] || stuck=$((stuck + 1))
done
[ $stuck = 0 ] && result OK "e) 20 times 16 connections closed at once: served right after each" ||
    result FAIL "e) 20 times 16 connections closed at once: no answer within 3 s after $stuck"

# ---------------------------------------------------------------------------- f)
mv "$tmp/model.safetensors" "$tmp/model.moved"
c=$(code "$url/healthz")
[ "$c" = 503 ] && [ "$(head -1 "$tmp/body")" = unhealthy ] &&
    grep -qiF "model: $tmp/model.safetensors: no such file or directory" "$tmp/body" &&
    result OK "f) model file missing: /healthz 503 naming it" ||
    result FAIL "f) model file missing: /healthz 503 (got $c: $(tr '\n' ' ' <"$tmp/body"))"
mv "$tmp/model.moved" "$tmp/model.safetensors"
c=$(code "$url/healthz")
[ "$c" = 200 ] && result OK "f) put back: 200" || result FAIL "f) put back: 200 (got $c)"
kill -0 "$pid" 2>/dev/null && result OK "the daemon is still running" ||
    result FAIL "the daemon is still running"
stop
if [ $failed = 1 ]; then sed 's/^/# log: /' "$tmp/log" | tail -30; fi
exit $failed
