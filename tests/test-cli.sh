#!/bin/bash
# The command line: version, help, exit codes, check-config on the shipped files, that
# etc/mmsegd.ini documents every key of the configuration table with its default, and
# model-info on the demo model and a malformed one.
set -u
srcdir=${srcdir:-.}
MMSEGD=${MMSEGD:-./mmsegd}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-cli.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

n=0
failed=0
ok() { # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi
}
diag() { printf '%s\n' "$1" | sed 's/^/# /'; }

echo "1..27"

# the first line; a build with --enable-crash-points adds "crash points: yes" below it
out=$("$MMSEGD" --version); rc=$?
first=${out%%$'\n'*}
[ $rc -eq 0 ] && [[ $first =~ ^mmsegd\ [0-9]+\.[0-9]+\.[0-9]+$ ]]; ok $? "--version: $first"

out=$("$MMSEGD" --help); rc=$?
cmds=$(printf '%s\n' "$out" | sed -n '/^Commands:/,/^$/p' | awk 'NF && !/^Commands:/ {print $1}' | tr '\n' ' ')
[ $rc -eq 0 ] && [ "$cmds" = "serve check-config model-info status inspect segment resend " ]; ok $? "--help lists the working commands: $cmds"

out=$("$MMSEGD" serve --help); rc=$?
[ $rc -eq 0 ] && [[ $out == "Usage: mmsegd serve "* ]]; ok $? "serve --help"
out=$("$MMSEGD" help check-config); rc=$?
[ $rc -eq 0 ] && [[ $out == "Usage: mmsegd check-config "* ]]; ok $? "help check-config"

"$MMSEGD" frobnicate >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ]; ok $? "an unknown command exits 2 (got $rc)"
"$MMSEGD" serve --bogus >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ]; ok $? "an unknown option exits 2 (got $rc)"

"$MMSEGD" check-config -c "$srcdir/etc/mmsegd.ini" >"$tmp/shipped.out" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ]; ok $? "check-config accepts etc/mmsegd.ini"
[ $rc -eq 0 ] || diag "$(cat "$tmp/err")"
"$MMSEGD" check-config -c "$srcdir/etc/demo.ini" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ]; ok $? "check-config accepts etc/demo.ini"
[ $rc -eq 0 ] || diag "$(cat "$tmp/err")"

# Every key, with its default, in etc/mmsegd.ini: the commented "key = value" lines of the
# main sections must be exactly what check-config prints for an empty file.
: >"$tmp/empty.ini"
"$MMSEGD" check-config -c "$tmp/empty.ini" >"$tmp/defaults.out"
# ([daemon] node defaults to the host name: check-config prints the name it resolved)
awk '/^\[/ {sec=$0; next} /^[a-z_]+ = / {print sec " " $0}' "$tmp/defaults.out" |
    sed "s/^\[daemon\] node = $(hostname -s)\$/[daemon] node = /" | sort >"$tmp/want"
awk '/^;?\[destination/ {exit} /^\[/ {sec=$0; next} /^;[a-z_]+ =/ {sub(/^;/, ""); sub(/ =$/, " = "); print sec " " $0}' \
    "$srcdir/etc/mmsegd.ini" | sort >"$tmp/doc"
d=$(diff "$tmp/want" "$tmp/doc")
[ -z "$d" ] && [ -s "$tmp/want" ]; ok $? "etc/mmsegd.ini documents every key with its default ($(wc -l <"$tmp/want") keys)"
[ -z "$d" ] || diag "< table, > etc/mmsegd.ini: $d"

# The printed configuration loads back to itself.
"$MMSEGD" check-config -c "$tmp/defaults.out" >"$tmp/again.out" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] && diff <(tail -n +2 "$tmp/defaults.out") <(tail -n +2 "$tmp/again.out") >/dev/null
ok $? "check-config output loads back to the same values"

printf '[daemon]\nlog_level = loud\n' >"$tmp/bad.ini"
"$MMSEGD" check-config -c "$tmp/bad.ini" >/dev/null 2>"$tmp/err"; rc=$?
grep -qF "$tmp/bad.ini:2: [daemon] log_level: 'loud' is not one of" "$tmp/err"
[ $? -eq 0 ] && [ $rc -eq 2 ]; ok $? "an invalid file: exit 2 (got $rc), file, line and key on stderr"
"$MMSEGD" serve -c "$tmp/bad.ini" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -qF "bad.ini:2:" "$tmp/err"; ok $? "serve refuses an invalid file with exit 2 (got $rc)"
# a file where a state folder goes: serve stops at start, naming it
mkdir -p "$tmp/state" && touch "$tmp/state/instances"
printf '[daemon]\nstate_dir = %s/state\n[scp]\nport = 1\nbind = 127.0.0.1\nallowed_hosts = 127.0.0.0/8\nallowed_calling_aes = any\n' \
    "$tmp" >"$tmp/state.ini"
timeout 20 "$MMSEGD" serve -c "$tmp/state.ini" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -qF "$tmp/state/instances: not a directory" "$tmp/err"
ok $? "serve stops when a file stands where a state folder goes (exit $rc: $(grep -m1 -o 'instances: .*' "$tmp/err"))"
"$MMSEGD" check-config -c "$tmp/missing.ini" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -qF "cannot open" "$tmp/err"; ok $? "a missing file: exit 2 (got $rc)"

# deny by default: check-config says what the lists let in; what serve would refuse at start
# (a prefix over 32, a metrics port over 65535) check-config refuses with exit 2 too
grep -qF '; allowed_hosts: none (every association is refused; write `any` to accept any host)' \
    "$tmp/defaults.out"
ok $? "check-config explains empty allowed_hosts: every association is refused"
"$MMSEGD" check-config -c "$srcdir/etc/demo.ini" >"$tmp/demo.out" 2>/dev/null
grep -qF '; allowed_hosts: 127.0.0.0/8 only' "$tmp/demo.out"
ok $? "etc/demo.ini allows loopback only"
printf '[scp]\nallowed_hosts = 127.0.0.1/33\n[daemon]\nmetrics_listen = :99999\n' >"$tmp/net.ini"
"$MMSEGD" check-config -c "$tmp/net.ini" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -qF "net.ini:2: [scp] allowed_hosts:" "$tmp/err" &&
    grep -qF "net.ini:4: [daemon] metrics_listen:" "$tmp/err"
ok $? "allowed_hosts 127.0.0.1/33 and metrics_listen :99999: check-config exits 2 (got $rc)"

# model-info: the card, the counts and the file's SHA-256; a malformed file exits 1 naming the
# file and the tensor; a missing operand is a usage error.
demo="$srcdir/models/demo.safetensors"
"$MMSEGD" model-info "$demo" >"$tmp/info.out" 2>"$tmp/err"; rc=$?
sum=$(sha256sum "$demo" | cut -d' ' -f1)
[ $rc -eq 0 ] && grep -q '"name":[[:space:]]*"mmunet-demo-ct"' "$tmp/info.out" &&
    [ "$(tail -n 2 "$tmp/info.out")" = "tensors: 126, parameters: 426802, bytes: 1707208
sha256: $sum" ]
ok $? "model-info on models/demo.safetensors: card, counts, sha256 (exit $rc)"
[ $rc -eq 0 ] || diag "$(tail -n 3 "$tmp/info.out"; cat "$tmp/err")"
ens="$srcdir/tests/fixtures/mmunet/tiny-ensemble.safetensors"
"$MMSEGD" model-info "$ens" >"$tmp/info.out" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] && [ "$(tail -n 3 "$tmp/info.out" | head -n 2)" = "ensemble: 2 members (fold_0, fold_3), logits averaged
tensors: 408, parameters: 83990, bytes: 335960" ]
ok $? "model-info on a fold ensemble names its members (exit $rc)"
[ $rc -eq 0 ] || diag "$(tail -n 4 "$tmp/info.out"; cat "$tmp/err")"
bad="$srcdir/tests/fixtures/mmunet/malformed/hole.safetensors"
"$MMSEGD" model-info "$bad" >"$tmp/info.out" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && [ ! -s "$tmp/info.out" ] &&
    grep -qxF "mmsegd: model-info: $bad: tensor 'head.weight': data at 5408, expected 5404 (hole)" "$tmp/err"
ok $? "model-info on a malformed file: exit 1 (got $rc) and the reason"
[ $rc -eq 1 ] || diag "$(cat "$tmp/err")"
"$MMSEGD" model-info >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -qF "a model FILE is required" "$tmp/err"; ok $? "model-info without FILE exits 2 (got $rc)"
out=$("$MMSEGD" help model-info); rc=$?
[ $rc -eq 0 ] && [[ $out == "Usage: mmsegd model-info [-c FILE] [--backend NAME] [--precision P] FILE"* ]]
ok $? "help model-info"

# The backend model-info reports: the one [infer] backend opens (--backend, --precision
# override the file); a bad value is a usage error naming the key.
"$MMSEGD" model-info --backend cpu --precision fp32 "$demo" >"$tmp/info.out" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] && [ "$(tail -n 3 "$tmp/info.out" | head -1)" = "backend: cpu, precision fp32" ]
ok $? "model-info --backend cpu --precision fp32: 'backend: cpu, precision fp32' (exit $rc)"
[ $rc -eq 0 ] || diag "$(tail -n 3 "$tmp/info.out"; cat "$tmp/err")"
printf '[infer]\nbackend = cpu\nprecision = fp16\n' >"$tmp/cpu.ini"
"$MMSEGD" model-info -c "$tmp/cpu.ini" "$demo" >"$tmp/info.out" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "backend cpu: fp16 runs on CUDA only" "$tmp/err"
ok $? "model-info -c FILE: its [infer] backend and precision (cpu, fp16: refused, exit $rc)"
"$MMSEGD" model-info --backend gpu "$demo" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -qF "[infer] backend: 'gpu' is not one of auto, cpu, cuda" "$tmp/err"
ok $? "model-info --backend gpu exits 2 (got $rc) naming the key"
"$MMSEGD" segment --precision fp8 --nifti "$tmp/seg" "$tmp" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 2 ] && grep -qF "[infer] precision: 'fp8' is not one of fp32, fp16, bf16" "$tmp/err"
ok $? "segment --precision fp8 exits 2 (got $rc) naming the key"

# README command 2 is what CI runs, verbatim.
readme_cmd=$(awk '/^```/ {f++; next} f == 1 && NF && !/^#/' "$srcdir/README.md" | sed -n 2p)
ci_cmd=$(grep -vE '^[[:space:]]*(#|$|set )' "$srcdir/.ci/run")
[ -n "$readme_cmd" ] && [ "$readme_cmd" = "$ci_cmd" ]; ok $? ".ci/run runs README command 2 verbatim"
[ "$readme_cmd" = "$ci_cmd" ] || diag "README: $readme_cmd | .ci/run: $ci_cmd"
exit $failed
