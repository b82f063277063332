#!/bin/bash
# DICOM TLS end to end (design.md section 9), with certificates made here by openssl
# (tests/tls-certs.sh), DCMTK's echoscu/storescu and real Orthanc servers (Debian's) with
# DicomTlsEnabled:
#  a) the Store SCP: echoscu and storescu with a certificate of our CA are served (the CT is
#     stored); a certificate of another CA, an expired one, no certificate and plain DICOM are
#     each refused, logged with the reason and counted under reason "tls"; a client that does
#     not trust our CA gives up; a connection that never says hello is closed after
#     assoc_timeout_s, and meanwhile a TLS C-ECHO is answered;
#  b) the sender: a SEG queued for a TLS Orthanc is delivered; an Orthanc that does not trust
#     our CA, one that serves an expired certificate and one whose CA we do not trust (yet)
#     are transient failures, retried, with the reason ("certificate has expired", "unable to
#     get local issuer certificate", the peer's alert "unknown CA");
#  c) SIGHUP: a renewed certificate (same key, new serial) is served to new connections; a key
#     that does not match is refused and the running certificate kept; our CA file extended
#     with the peer's CA lets the queued send reach that Orthanc;
#  d) check-config names a bad key file.
set -u
. "$(dirname "$0")/find-testdata.sh"
. "$(dirname "$0")/serve-util.sh"
. "$(dirname "$0")/tls-certs.sh"
require_testdata
orthanc=${ORTHANC:-$(command -v Orthanc || echo /usr/sbin/Orthanc)}
for t in "$orthanc" echoscu storescu openssl curl; do
    if ! command -v "$t" >/dev/null; then
        echo "1..0 # SKIP $t is not installed (Debian packages orthanc, dcmtk, openssl, curl)"
        exit 0
    fi
done
mmsegd=${MMSEGD:-./mmsegd}
outbox_put=${OUTBOX_PUT:-${top_builddir:-.}/tests/outbox-put}
python=${PYTHON3:-/usr/bin/python3}
ct=$td/dcmqi/data/segmentations/ct-3slice
tmp=$(mktemp -d)
pid=
trap serve_cleanup EXIT
check() { # TEXT COMMAND...: OK when the command succeeds
    local text=$1
    shift
    if "$@" >/dev/null 2>&1; then result OK "$text"; else result FAIL "$text"; fi
}

echo "1..30"
c=$tmp/certs
if ! tls_certs "$c"; then
    echo "Bail out! openssl could not make the test certificates"
    sed 's/^/# /' "$c/openssl.log" | tail -20
    exit 1
fi
# our files: the daemon reads these paths; the tests rewrite them for the reloads
cp "$c/srv.crt" "$tmp/node.crt"
cp "$c/srv.key" "$tmp/node.key"
cp "$c/ca.crt" "$tmp/trusted.crt"

# ---------------------------------------------------------------------------- Orthanc
tls_json() { # CERT KEY TRUSTED
    printf ',\n  "DicomTlsEnabled": true, "DicomTlsCertificate": "%s",
  "DicomTlsPrivateKey": "%s", "DicomTlsTrustedCertificates": "%s",
  "DicomTlsRemoteCertificateRequired": true' "$1" "$2" "$3"
}
orthanc_config good "$(tls_json "$c/orthanc.crt" "$c/orthanc.key" "$c/ca.crt")"
orthanc_config distrust "$(tls_json "$c/orthanc.crt" "$c/orthanc.key" "$c/ca2.crt")"
orthanc_config expired "$(tls_json "$c/exp.crt" "$c/exp.key" "$c/ca.crt")"
orthanc_config foreign "$(tls_json "$c/rogue.crt" "$c/rogue.key" "$c/ca.crt")"
for o in good distrust expired foreign; do
    if ! orthanc_start $o; then
        echo "Bail out! Orthanc '$o' did not start"
        sed 's/^/# /' "$tmp/$o/log" | tail -20
        exit 1
    fi
done
result OK "four TLS Orthanc servers listen (good, distrust, expired, foreign)"

# ---------------------------------------------------------------------------- mmsegd
port=$(free_port)
mport=$(free_port)
state=$tmp/state
dest() { # NAME PORT
    printf '[destination %s]\ntype = dicom\nae_title = ORTHANC\nhost = 127.0.0.1\nport = %s\n' "$1" "$2"
    printf 'tls = yes\nretry_initial_s = 1\nretry_multiplier = 1.0\nretry_max_s = 1\n'
}
serve_config "$tmp/mmsegd.ini" "$state" "$port" "log_level = info" \
    "metrics_listen = 127.0.0.1:$mport" <<INI
timeout_s = 5
assoc_timeout_s = 2
tls_cert = $tmp/node.crt
tls_key = $tmp/node.key
tls_ca = $tmp/trusted.crt
$(dest good "$dicom_good")
$(dest distrust "$dicom_distrust")
$(dest expired "$dicom_expired")
$(dest foreign "$dicom_foreign")
INI
if start; then result OK "the daemon starts with DICOM TLS"; else
    result FAIL "the daemon starts with DICOM TLS"
    sed 's/^/# /' "$tmp/log" | tail -20
    exit 1
fi
grep -q "listening on 127.0.0.1 port $port (DICOM TLS)" "$tmp/log" &&
    grep -q "DICOM TLS certificate: subject /CN=srv, issuer /CN=mmsegd test CA, serial 1001" "$tmp/log" &&
    result OK "its log names the Store SCP as TLS and our certificate" ||
    result FAIL "its log names the Store SCP as TLS and our certificate"

expiry=$(curl -sf "http://127.0.0.1:$mport/metrics" | sed -n 's/^mmsegd_tls_certificate_expiry_seconds //p')
[ -n "$expiry" ] && [ "$expiry" -gt 86400 ] && [ "$expiry" -le 172800 ] &&
    result OK "the metrics give the certificate's remaining time ($expiry s)" ||
    result FAIL "the metrics give the certificate's remaining time ('$expiry')"

# ---------------------------------------------------------------------------- a) Store SCP
tls_as() { echo "+tls $c/$1.key $c/$1.crt +cf $c/ca.crt"; }
refused() { curl -sf "http://127.0.0.1:$mport/metrics" |
    sed -n "s/^mmsegd_associations_refused_total{reason=\"$1\"} //p"; }
# shellcheck disable=SC2046
check "a) echoscu with a certificate of our CA (BCP 195 profile) is answered" \
    echoscu -to 5 -aet TESTSCU -aec MMSEGD $(tls_as cli) +px 127.0.0.1 "$port"
# shellcheck disable=SC2046
storescu -to 5 -aet TESTSCU -aec MMSEGD $(tls_as cli) 127.0.0.1 "$port" +sd "$ct" >"$tmp/scu.log" 2>&1
rc=$?
[ $rc = 0 ] && wait_for 5 grep -q "TESTSCU@127.0.0.1 released; 3 instances stored" "$tmp/log" &&
    result OK "a) storescu +tls (default profile) stores the 3 CT instances" ||
    result FAIL "a) storescu +tls stores the 3 CT instances (rc $rc)"
grep -q "connection from 127.0.0.1: TLSv1.[23] .*, peer /CN=cli" "$tmp/log" &&
    result OK "a) the log has the protocol, cipher and the peer's subject" ||
    result FAIL "a) the log has the protocol, cipher and the peer's subject"
before=$(refused tls)
# each refused: the client's exit status, and the daemon's reason
refuse_case() { # TEXT EXPECTED_LOG ECHOSCU_ARGS...
    local text=$1 want=$2
    shift 2
    if echoscu -to 5 -aet TESTSCU -aec MMSEGD "$@" 127.0.0.1 "$port" >/dev/null 2>&1; then
        result FAIL "a) $text: refused (echoscu succeeded)"
    elif wait_for 5 grep -q "closed: TLS: $want" "$tmp/log"; then
        result OK "a) $text: refused, logged as \"$want\""
    else
        result FAIL "a) $text: refused, logged as \"$want\""
    fi
}
# shellcheck disable=SC2046
refuse_case "a certificate of another CA" "the peer's certificate: unable to get local issuer certificate" \
    +tls "$c/rogue.key" "$c/rogue.crt" +cf "$c/ca.crt"
refuse_case "an expired certificate" "the peer's certificate: certificate has expired" \
    +tls "$c/exp.key" "$c/exp.crt" +cf "$c/ca.crt"
refuse_case "no certificate (+tla)" "peer did not return a certificate" +tla +cf "$c/ca.crt"
refuse_case "plain DICOM" "wrong version number"
# a port probe (connect, close) is no TLS failure
"$python" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1]))).close()' "$port"
wait_for 5 grep -q "connection from 127.0.0.1 closed before an association request" "$tmp/log"
after=$(refused tls)
[ -n "$before" ] && [ "$((after - before))" = 4 ] &&
    result OK "a) the four are counted under reason \"tls\", a port probe is not ($before -> $after)" ||
    result FAIL "a) the four are counted under reason \"tls\", a port probe is not ('$before' -> '$after')"
if echoscu -to 5 -aet TESTSCU -aec MMSEGD +tls "$c/cli.key" "$c/cli.crt" +cf "$c/ca2.crt" \
    127.0.0.1 "$port" >"$tmp/ca2.log" 2>&1; then
    result FAIL "a) a client that trusts another CA refuses our certificate"
else
    grep -q "certificate verify failed" "$tmp/ca2.log" &&
        result OK "a) a client that trusts another CA refuses our certificate" ||
        result FAIL "a) a client that trusts another CA refuses our certificate ($(tail -1 "$tmp/ca2.log"))"
fi
# a connection that never sends its hello: closed after assoc_timeout_s (2 s)
t_before=$(refused timeout)
"$python" -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
time.sleep(4)
' "$port" &
hold=$!
sleep 0.5
# shellcheck disable=SC2046
check "a) during a silent connection a TLS C-ECHO is answered" \
    echoscu -to 5 -aet TESTSCU -aec MMSEGD $(tls_as cli) 127.0.0.1 "$port"
wait $hold
t_after=$(refused timeout)
[ -n "$t_before" ] && [ "$((t_after - t_before))" = 1 ] &&
    result OK "a) the silent connection is closed after assoc_timeout_s, counted under \"timeout\"" ||
    result FAIL "a) the silent connection is closed after assoc_timeout_s ('$t_before' -> '$t_after')"

# ---------------------------------------------------------------------------- b) sender
if ! "$mmsegd" segment --model "${srcdir:-.}/models/demo.safetensors" -o "$tmp/seg" "$ct" \
    >"$tmp/segment.log" 2>&1; then
    echo "Bail out! mmsegd segment failed"
    sed 's/^/# /' "$tmp/segment.log" | tail
    exit 1
fi
seg=$(ls "$tmp"/seg/*.seg.dcm)
uid=$(dcmdump +P 0008,0018 "$seg" | sed 's/.*\[\(.*\)\].*/\1/')
series=$(dcmdump +P 0020,000e "$ct/01.dcm" | sed 's/.*\[\(.*\)\].*/\1/')
put() { "$outbox_put" "$state" "$@"; }
put 101 "$series" good "$seg"
put 102 "$series" distrust "$seg"
put 103 "$series" expired "$seg"
put 104 "$series" foreign "$seg"
if wait_for 20 send_is 101 good done; then
    result OK "b) the SEG is delivered to the TLS Orthanc"
else
    result FAIL "b) the SEG is delivered to the TLS Orthanc ($(send_field 101 good state reason))"
fi
[ "$(orthanc_find good "$uid" | wc -l)" = 1 ] &&
    result OK "b) Orthanc holds it once" || result FAIL "b) Orthanc holds it once"
reason_is() { # JOB DEST PATTERN TEXT
    if wait_for 15 attempts_at_least "$1" "$2" 2 && send_is "$1" "$2" pending; then
        local r
        r=$(send_field "$1" "$2" reason)
        case $r in
        $3) result OK "b) $4: pending, retried, reason: $r" ;;
        *) result FAIL "b) $4: the reason matches '$3': '$r'" ;;
        esac
    else
        result FAIL "b) $4: pending and retried ($(send_field "$1" "$2" state attempts reason))"
    fi
}
# its alert "unknown CA" when read in time, else the hint
shopt -s extglob
reason_is 102 distrust "*@(the peer's TLS alert: unknown CA|the peer may have refused our certificate)*" \
    "an Orthanc that does not trust our CA"
reason_is 103 expired "*TLS handshake with ORTHANC@127.0.0.1:$dicom_expired failed*certificate has expired*" \
    "an Orthanc with an expired certificate"
reason_is 104 foreign "*TLS handshake*unable to get local issuer certificate*" \
    "an Orthanc whose CA we do not trust"

# ---------------------------------------------------------------------------- c) SIGHUP
served_serial() {
    openssl s_client -connect "127.0.0.1:$port" -cert "$c/cli.crt" -key "$c/cli.key" \
        -CAfile "$c/ca.crt" </dev/null 2>/dev/null | openssl x509 -noout -serial
}
[ "$(served_serial)" = "serial=1001" ] &&
    result OK "c) the SCP serves certificate serial 1001" ||
    result FAIL "c) the SCP serves certificate serial 1001 ($(served_serial))"
cp "$c/srv2.crt" "$tmp/node.crt"
kill -HUP "$pid"
if wait_for 10 grep -q "reload: DICOM TLS certificate: .*serial 1004" "$tmp/log" &&
    [ "$(served_serial)" = "serial=1004" ]; then
    result OK "c) after SIGHUP the renewed certificate (serial 1004) is served"
else
    result FAIL "c) after SIGHUP the renewed certificate (serial 1004) is served ($(served_serial))"
fi
# shellcheck disable=SC2046
check "c) a TLS C-ECHO is answered with it" \
    echoscu -to 5 -aet TESTSCU -aec MMSEGD $(tls_as cli) 127.0.0.1 "$port"
cp "$c/cli.key" "$tmp/node.key"
kill -HUP "$pid"
if wait_for 10 grep -q "reload of .* failed (DICOM TLS); keeping the running configuration" "$tmp/log" &&
    grep -q "reload: DICOM TLS: tls_key $tmp/node.key does not match tls_cert" "$tmp/log" &&
    [ "$(served_serial)" = "serial=1004" ]; then
    result OK "c) SIGHUP with a key that does not match: refused with the reason, serial 1004 still served"
else
    result FAIL "c) SIGHUP with a key that does not match: refused, the running certificate kept"
fi
cp "$c/srv.key" "$tmp/node.key"
cat "$c/ca.crt" "$c/ca2.crt" >"$tmp/trusted.crt"
kill -HUP "$pid"
if wait_for 20 send_is 104 foreign done; then
    result OK "c) our CA file extended with the peer's CA, SIGHUP: the queued send is delivered"
else
    result FAIL "c) after the CA file is extended and SIGHUP the queued send is delivered ($(send_field 104 foreign state reason))"
fi
[ "$(orthanc_find foreign "$uid" | wc -l)" = 1 ] &&
    result OK "c) that Orthanc holds the SEG once" || result FAIL "c) that Orthanc holds the SEG once"
# shellcheck disable=SC2046
check "c) the daemon still serves TLS clients of our CA" \
    echoscu -to 5 -aet TESTSCU -aec MMSEGD $(tls_as cli) 127.0.0.1 "$port"

# ---------------------------------------------------------------------------- d) check-config
sed "s|^tls_key = .*|tls_key = $c/cli.key|" "$tmp/mmsegd.ini" >"$tmp/bad.ini"
out=$("$mmsegd" check-config -c "$tmp/bad.ini" 2>&1)
rc=$?
[ $rc = 2 ] && case $out in *"tls_key $c/cli.key does not match tls_cert"*) true ;; *) false ;; esac &&
    result OK "d) check-config: a key of another certificate is an error (exit 2) that names it" ||
    result FAIL "d) check-config: a key of another certificate (exit $rc: $out)"
sed "s|^tls_ca = .*||" "$tmp/mmsegd.ini" >"$tmp/bad.ini"
out=$("$mmsegd" check-config -c "$tmp/bad.ini" 2>&1)
case $out in *"tls_ca is not set"*) result OK "d) check-config: tls_cert without tls_ca is an error" ;;
*) result FAIL "d) check-config: tls_cert without tls_ca ($out)" ;; esac
stop
grep -q "AddressSanitizer\|runtime error" "$tmp/log" &&
    result FAIL "the daemon's log has no sanitizer report" ||
    result OK "the daemon's log has no sanitizer report"
exit $failed
