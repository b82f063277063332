#!/bin/bash
# DICOMweb STOW-RS destinations (design.md section 8, daemon/stow.c) end to end: results put
# into the outbox as a job puts them (tests/outbox-put), sent by the daemon to real Orthanc
# servers with Debian's DICOMweb plugin, started here on loopback, and to a small HTTP stub
# (tests/http_stub.py) for the answers Orthanc cannot be made to give.
#  a) delivered: the SEG is in Orthanc (found by its SOP Instance UID through REST and QIDO-RS)
#     with the same pixel data; one request of one part;
#  b) basic authentication: right credentials delivered; a wrong password is permanent at once
#     (HTTP 401 in the reason), dead after one attempt;
#  c) outage: Orthanc stopped, attempts fail (connection refused) and are retried; started
#     again: delivered, and Orthanc holds the SEG once;
#  d) 503 and 429 with Retry-After: transient, and the next attempt waits the time asked
#     (longer than the destination's own delay); then delivered;
#  e) 409 with a reason, and a 202 whose Failed SOP Sequence names the instance (failure
#     reason 0x0110): permanent at once, the reason from the response in the dead letter;
#  f) max_request_mb: three label-map SEGs of 0.8 MB each to a destination of 1 MB go as three
#     requests of one part, each part byte-equal to its file (MD5), bearer token sent;
#  g) HTTPS with a test CA (openssl), in front of Orthanc (a TLS front of http_stub.py: Debian
#     12's Orthanc 1.10.1 crashes on HTTPS): delivered when the CA is trusted (ca_file);
#     refused with the certificate's reason, transient, when another CA is;
#  h) check-config refuses a dicomweb destination without url, auth without credentials_file,
#     a ca_file that cannot be read, and outputs that are unknown, not made, or a preview for
#     a destination other than a folder.
set -u
. "$(dirname "$0")/find-testdata.sh"
. "$(dirname "$0")/serve-util.sh"
require_testdata
orthanc=${ORTHANC:-$(command -v Orthanc || echo /usr/sbin/Orthanc)}
plugin=${ORTHANC_DICOMWEB:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}
for t in "$orthanc" dcmodify dcmdump curl openssl; do
    if ! command -v "$t" >/dev/null; then
        echo "1..0 # SKIP $t is not installed (Debian packages orthanc, dcmtk, curl, openssl)"
        exit 0
    fi
done
if [ ! -f "$plugin" ]; then
    echo "1..0 # SKIP the DICOMweb plugin $plugin is not installed (Debian package orthanc-dicomweb)"
    exit 0
fi
mmsegd=${MMSEGD:-./mmsegd}
outbox_put=${OUTBOX_PUT:-${top_builddir:-.}/tests/outbox-put}
python=${PYTHON3:-/usr/bin/python3}
src=${srcdir:-.}
model=$src/models/demo.safetensors
ct=$td/dcmqi/data/segmentations/ct-3slice
tmp=$(mktemp -d)
pid=
stub=
tlsproxy=
trap 'kill $stub $tlsproxy 2>/dev/null; serve_cleanup' EXIT
put() { "$outbox_put" "$state" "$@"; }
uid_of() { dcmdump +P 0008,0018 "$1" | sed 's/.*\[\(.*\)\].*/\1/'; }
reason_of() { send_field "$1" "$2" reason; }

# ---------------------------------------------------------------------------- inputs
if ! "$mmsegd" segment --model "$model" -o "$tmp/seg" "$ct" >"$tmp/segment.log" 2>&1; then
    result FAIL "mmsegd segment writes the SEG of ct-3slice"
    sed 's/^/# /' "$tmp/segment.log"
    echo "1..$n"
    exit 1
fi
seg=$(ls "$tmp"/seg/*.seg.dcm)
ct_series=$(dcmdump +P 0020,000e "$ct/01.dcm" | sed 's/.*\[\(.*\)\].*/\1/')
# variant JOB [labelmap]: a copy of the SEG (or of the label map) with its own SOP Instance UID
printf '[seg]\ntype = labelmap\n' >"$tmp/lm.ini"
"$mmsegd" segment -c "$tmp/lm.ini" --model "$model" -o "$tmp/lm" "$ct" >/dev/null 2>&1
lmseg=$(ls "$tmp"/lm/*.seg.dcm 2>/dev/null)
variant() {
    local d=$tmp/v$1 f
    mkdir -p "$d"
    f=$d/job$1.seg.dcm
    cp "${2:-$seg}" "$f"
    dcmodify -nb -gin "$f" >/dev/null 2>&1
    echo "$f"
}

# ---------------------------------------------------------------------------- servers
web="\"$plugin\""
orthanc_config web ', "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }' "$web"
orthanc_config auth ', "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
  "RegisteredUsers": { "mmsegd": "s3cret" }' "$web" true
# HTTPS: a test CA, a server certificate for localhost and 127.0.0.1, another CA
mkdir -p "$tmp/pki"
(
    cd "$tmp/pki" || exit 1
    for ca in ca other; do
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=mmsegd test $ca" \
            -keyout $ca.key -out $ca.pem 2>/dev/null || exit 1
    done
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key \
        -out server.csr 2>/dev/null &&
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext &&
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile san.ext -out server.crt 2>/dev/null &&
        cat server.crt server.key >server.pem
) && result OK "a test CA and a server certificate for localhost (openssl)" ||
    result FAIL "a test CA and a server certificate for localhost (openssl)"
ok_all=1
orthanc_start web || ok_all=0
orthanc_start auth mmsegd:s3cret || ok_all=0
[ $ok_all = 1 ] && result OK "two Orthanc servers with the DICOMweb plugin listen (HTTP $http_web, with authentication $http_auth)" ||
    { result FAIL "two Orthanc servers with the DICOMweb plugin listen"; tail -n 5 "$tmp"/*/log | sed 's/^/# /'; }
# HTTPS: Debian 12's Orthanc 1.10.1 ends with SIGSEGV on its first HTTPS request (SslEnabled),
# so a TLS front (tests/http_stub.py --tls-proxy, Python's ssl) serves the certificate and
# passes the bytes to the plain Orthanc "web"
"$python" "$src/tests/http_stub.py" --tls-proxy "$tmp/pki/server.pem" "$http_web" \
    "$tmp/tls.port" 2>"$tmp/tls.err" &
tlsproxy=$!
wait_for 10 test -s "$tmp/tls.port"
http_tls=$(cat "$tmp/tls.port" 2>/dev/null)
wait_for 10 curl -sf --cacert "$tmp/pki/ca.pem" "https://localhost:$http_tls/system" &&
    result OK "HTTPS in front of that Orthanc with the test CA's certificate (port $http_tls)" ||
    result FAIL "HTTPS in front of that Orthanc with the test CA's certificate"

cat >"$tmp/plan.json" <<'JSON'
{
 "/s503/studies": [{"status": 503, "headers": {"Retry-After": "4"}, "body": "busy"}],
 "/s429/studies": [{"status": 429, "headers": {"Retry-After": "3"}, "body": "slow down"}],
 "/s409/studies": [{"status": 409, "body": "conflict: the study is locked for reading"}],
 "/failed/studies": [{"status": 202, "body": "{\"00081198\": {\"vr\": \"SQ\", \"Value\": [{\"00081150\": {\"vr\": \"UI\", \"Value\": [\"1.2.840.10008.5.1.4.1.1.66.4\"]}, \"00081155\": {\"vr\": \"UI\", \"Value\": [\"FAILED_UID\"]}, \"00081197\": {\"vr\": \"US\", \"Value\": [272]}}]}}"}]
}
JSON
"$python" "$src/tests/http_stub.py" "$tmp/plan.json" "$tmp/stub.log" "$tmp/stub.port" \
    2>"$tmp/stub.err" &
stub=$!
wait_for 10 test -s "$tmp/stub.port"
sport=$(cat "$tmp/stub.port" 2>/dev/null)

printf 'mmsegd:s3cret\n' >"$tmp/good.cred"
printf 'mmsegd:wrong\n' >"$tmp/bad.cred"
printf 'token-0123456789\n' >"$tmp/bearer.cred"
chmod 600 "$tmp"/*.cred
state=$tmp/state
dest() { # dest NAME URL [KEY = VALUE...]
    local name=$1 url=$2
    shift 2
    printf '[destination %s]\ntype = dicomweb\nurl = %s\nretry_initial_s = 1\nretry_max_s = 1\n' \
        "$name" "$url"
    if [ $# -gt 0 ]; then printf '%s\n' "$@"; fi
}
{
    dest web "http://127.0.0.1:$http_web/dicom-web/studies"
    dest authok "http://127.0.0.1:$http_auth/dicom-web/studies" "auth = basic" \
        "credentials_file = $tmp/good.cred"
    dest authbad "http://127.0.0.1:$http_auth/dicom-web/studies" "auth = basic" \
        "credentials_file = $tmp/bad.cred"
    dest s503 "http://127.0.0.1:$sport/s503/studies"
    dest s429 "http://127.0.0.1:$sport/s429/studies"
    dest s409 "http://127.0.0.1:$sport/s409/studies"
    dest failed "http://127.0.0.1:$sport/failed/studies"
    dest split "http://127.0.0.1:$sport/split/studies" "max_request_mb = 1" "auth = bearer" \
        "credentials_file = $tmp/bearer.cred"
    dest tlsok "https://localhost:$http_tls/dicom-web/studies" "ca_file = $tmp/pki/ca.pem"
    dest tlsbad "https://localhost:$http_tls/dicom-web/studies" "ca_file = $tmp/pki/other.pem"
} | serve_config "$tmp/mmsegd.ini" "$state" "$(free_port)" "log_level = info"
sed -i 's/^\[scp\]$/[scp]\ntimeout_s = 5/' "$tmp/mmsegd.ini"
if start; then result OK "the daemon starts with ten DICOMweb destinations"; else
    result FAIL "the daemon starts with ten DICOMweb destinations"
    sed 's/^/# /' "$tmp/log" | tail -20
    echo "1..$n"
    exit 1
fi

# ---------------------------------------------------------------------------- a) delivered
put 1 "$ct_series" web "$seg"
uid1=$(uid_of "$seg")
if wait_for 20 send_is 1 web done; then
    result OK "a) job 1 delivered to Orthanc by STOW-RS"
else
    result FAIL "a) job 1 delivered to Orthanc by STOW-RS ($(reason_of 1 web))"
fi
id=$(orthanc_find web "$uid1")
qido=$(curl -sf "http://127.0.0.1:$http_web/dicom-web/instances?SOPInstanceUID=$uid1" |
    "$python" -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null)
mkdir -p "$tmp/pix"
pix() { dcmdump +P 7fe0,0010 +W "$tmp/pix" "$1" >/dev/null 2>&1 && md5sum <"$tmp/pix/$(ls "$tmp/pix" | head -1)" && rm -rf "$tmp/pix"/*; }
orthanc_get web "/instances/$id/file" >"$tmp/from-web.dcm" 2>/dev/null
[ -n "$id" ] && [ "$qido" = 1 ] && [ "$(pix "$seg")" = "$(pix "$tmp/from-web.dcm")" ] &&
    result OK "a) Orthanc holds SEG $uid1 (REST and QIDO-RS find it), with the same pixel data" ||
    result FAIL "a) Orthanc holds SEG $uid1 with the same pixel data (id '$id', QIDO '$qido')"
[ ! -e "$state/outbox/1" ] && result OK "a) the outbox of job 1 is removed" ||
    result FAIL "a) the outbox of job 1 is removed"

# ---------------------------------------------------------------------------- b) basic auth
f2=$(variant 2)
put 2 "$ct_series" authok,authbad "$f2"
if wait_for 20 send_is 2 authok done; then
    n_auth=$(curl -sf -u mmsegd:s3cret -d "{\"Level\":\"Instance\",\"Query\":{\"SOPInstanceUID\":\"$(uid_of "$f2")\"}}" \
        "http://127.0.0.1:$http_auth/tools/find" | "$python" -c 'import json,sys; print(len(json.load(sys.stdin)))')
    [ "$n_auth" = 1 ] && result OK "b) basic authentication with the right password: delivered" ||
        result FAIL "b) basic authentication with the right password: delivered, but Orthanc has '$n_auth'"
else
    result FAIL "b) basic authentication with the right password: delivered ($(reason_of 2 authok))"
fi
if wait_for 20 send_is 2 authbad dead; then
    r=$(reason_of 2 authbad)
    a=$(send_field 2 authbad attempts)
    case $r in
    *"HTTP 401"*) [ "$a" = 1 ] &&
        result OK "b) a wrong password is permanent after one attempt: \"$r\"" ||
        result FAIL "b) a wrong password is permanent after one attempt ($a attempts)" ;;
    *) result FAIL "b) a wrong password: the reason names HTTP 401 ('$r')" ;;
    esac
    grep -q "HTTP 401" "$state/dead/2-authbad/why" 2>/dev/null &&
        result OK "b) dead/2-authbad holds the SEG and the reason" ||
        result FAIL "b) dead/2-authbad holds the SEG and the reason"
else
    result FAIL "b) a wrong password is permanent ($(send_field 2 authbad state) $(reason_of 2 authbad))"
    result FAIL "b) dead/2-authbad holds the SEG and the reason"
fi

# ---------------------------------------------------------------------------- c) outage
orthanc_stop web
f3=$(variant 3)
put 3 "$ct_series" web "$f3"
if wait_for 20 attempts_at_least 3 web 2 && send_is 3 web pending; then
    result OK "c) Orthanc down: job 3 is retried and stays pending: \"$(reason_of 3 web)\""
else
    result FAIL "c) Orthanc down: job 3 is retried and stays pending ($(send_field 3 web state attempts) $(reason_of 3 web))"
fi
orthanc_start web
if wait_for 30 send_is 3 web done; then
    cnt=$(orthanc_find web "$(uid_of "$f3")" | wc -l)
    [ "$cnt" = 1 ] && result OK "c) Orthanc back: delivered, once" ||
        result FAIL "c) Orthanc back: delivered, but Orthanc holds it $cnt times"
else
    result FAIL "c) Orthanc back: delivered ($(reason_of 3 web))"
fi

# ---------------------------------------------------------------------------- d) Retry-After
put 4 "$ct_series" s503,s429 "$(variant 4)"
gap() { # gap PATH: seconds between the first two requests to PATH in the stub's log
    "$python" -c '
import json, sys
t = [json.loads(l)["time"] for l in open(sys.argv[1]) if json.loads(l)["path"] == sys.argv[2]]
print("%.1f" % (t[1] - t[0]) if len(t) > 1 else "none")' "$tmp/stub.log" "$1"
}
for m in "s503:4:503" "s429:3:429"; do
    d=${m%%:*} m=${m#*:}
    want=${m%%:*} code=${m#*:}
    if wait_for 30 send_is 4 "$d" done; then
        g=$(gap "/$d/studies")
        if awk -v g="$g" -v w="$want" 'BEGIN { exit !(g + 0.3 >= w) }'; then
            result OK "d) HTTP $code with Retry-After: $want: transient, the next attempt $g s later (retry_initial_s 1), then delivered"
        else
            result FAIL "d) HTTP $code with Retry-After: $want: the next attempt came after $g s"
        fi
    else
        result FAIL "d) HTTP $code with Retry-After: delivered in the end ($(send_field 4 "$d" state) $(reason_of 4 "$d"))"
    fi
done

# ---------------------------------------------------------------------------- e) permanent
put 5 "$ct_series" s409,failed "$(variant 5)"
for m in "s409:HTTP 409:conflict: the study is locked" "failed:HTTP 202:failure reason 0x0110"; do
    d=${m%%:*} m=${m#*:}
    code=${m%%:*} text=${m#*:}
    if wait_for 20 send_is 5 "$d" dead; then
        r=$(reason_of 5 "$d")
        case $r in
        *"$code"*"$text"*) [ "$(send_field 5 "$d" attempts)" = 1 ] &&
            result OK "e) $code is permanent after one attempt: \"$r\"" ||
            result FAIL "e) $code is permanent after one attempt ($(send_field 5 "$d" attempts))" ;;
        *) result FAIL "e) $code: the reason names it and its text ('$r')" ;;
        esac
    else
        result FAIL "e) $code is permanent ($(send_field 5 "$d" state) $(reason_of 5 "$d"))"
    fi
done

# ---------------------------------------------------------------------------- f) split
if [ -n "$lmseg" ]; then
    l1=$(variant 61 "$lmseg") l2=$(variant 62 "$lmseg") l3=$(variant 63 "$lmseg")
    put 6 "$ct_series" split "$l1" "$l2" "$l3"
    if wait_for 20 send_is 6 split done; then
        got=$("$python" -c '
import hashlib, json, sys
reqs = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["path"] == "/split/studies"]
want = sorted(hashlib.md5(open(f, "rb").read()).hexdigest() for f in sys.argv[2:])
got = sorted(p["md5"] for r in reqs for p in (r["parts"] or []))
ok = (len(reqs) == 3 and all(len(r["parts"] or []) == 1 for r in reqs) and got == want
      and all(r["content_type"].startswith("multipart/related") and "application/dicom" in
              r["content_type"] for r in reqs)
      and all(p["type"] == "application/dicom" for r in reqs for p in r["parts"])
      and all(r["authorization"] == "Bearer token-0123456789" for r in reqs))
print("ok" if ok else "not ok", len(reqs), [len(r["parts"] or []) for r in reqs],
      reqs[0]["content_type"] if reqs else "")' "$tmp/stub.log" "$l1" "$l2" "$l3")
        sz=$(stat -c %s "$l1")
        case $got in
        "ok "*) result OK "f) three label-map SEGs of $sz bytes, max_request_mb 1: ${got#ok } (requests, parts each, Content-Type); parts byte-equal to the files; bearer token sent" ;;
        *) result FAIL "f) max_request_mb 1: $got" ;;
        esac
    else
        result FAIL "f) three label-map SEGs to a 1 MB destination delivered ($(reason_of 6 split))"
    fi
else
    result FAIL "f) the label-map SEG of ct-3slice written"
fi

# ---------------------------------------------------------------------------- g) HTTPS
f7=$(variant 7)
put 7 "$ct_series" tlsok,tlsbad "$f7"
if wait_for 20 send_is 7 tlsok done; then
    [ -n "$(curl -sf --cacert "$tmp/pki/ca.pem" -d "{\"Level\":\"Instance\",\"Query\":{\"SOPInstanceUID\":\"$(uid_of "$f7")\"}}" \
        "https://localhost:$http_tls/tools/find" | "$python" -c 'import json,sys; print(*json.load(sys.stdin))')" ] &&
        result OK "g) HTTPS, the server's CA in ca_file: delivered" ||
        result FAIL "g) HTTPS, the server's CA in ca_file: delivered, but not found in Orthanc"
else
    result FAIL "g) HTTPS, the server's CA in ca_file: delivered ($(reason_of 7 tlsok))"
fi
if wait_for 20 attempts_at_least 7 tlsbad 2 && send_is 7 tlsbad pending; then
    r=$(reason_of 7 tlsbad)
    case $r in
    *certificate*) result OK "g) HTTPS, another CA: refused, transient (retried): \"$r\"" ;;
    *) result FAIL "g) HTTPS, another CA: the reason names the certificate ('$r')" ;;
    esac
else
    result FAIL "g) HTTPS, another CA: refused and retried ($(send_field 7 tlsbad state attempts) $(reason_of 7 tlsbad))"
fi
stop

# ---------------------------------------------------------------------------- h) check-config
check() { # check NAME WANT LINES...: check-config refuses a destination, naming WANT
    local name=$1 want=$2 out
    shift 2
    printf '[daemon]\nstate_dir = %s\n[destination x]\ntype = dicomweb\n' "$tmp/cc" >"$tmp/cc.ini"
    printf '%s\n' "$@" >>"$tmp/cc.ini"
    out=$("$mmsegd" check-config -c "$tmp/cc.ini" 2>&1)
    if [ $? -ne 0 ] && printf '%s' "$out" | grep -q "$want"; then
        result OK "h) check-config refuses $name: $(printf '%s' "$out" | grep "$want" | head -1)"
    else
        result FAIL "h) check-config refuses $name ($out)"
    fi
}
check "a dicomweb destination without url" "needs url"
check "an ftp:// url" "needs url" "url = ftp://pacs/studies"
check "auth basic without credentials_file" "needs credentials_file" \
    "url = http://127.0.0.1:1/studies" "auth = basic"
check "a credentials_file that cannot be read" "credentials_file" \
    "url = http://127.0.0.1:1/studies" "auth = bearer" "credentials_file = $tmp/none.cred"
check "a ca_file that cannot be read" "ca_file" \
    "url = https://127.0.0.1:1/studies" "ca_file = $tmp/none.pem"
check "outputs naming an unknown output" "is none of seg, rtstruct, sc, preview" \
    "url = http://127.0.0.1:1/studies" "outputs = seg, masks"
check "outputs = rtstruct without [seg] rtstruct = yes" "but \[seg\] rtstruct = no" \
    "url = http://127.0.0.1:1/studies" "outputs = rtstruct"
check "outputs = preview for a destination that is not a folder" "only a folder receives" \
    "url = http://127.0.0.1:1/studies" "outputs = preview"

echo "1..$n"
exit $failed
