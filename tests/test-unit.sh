#!/bin/bash
# test-unit.sh: the systemd integration files in etc/.
#
# Substitutes etc/mmsegd.service.in the way the build does, then checks
# that systemd-analyze verifies it cleanly, that its security exposure
# stays at or under MAX_EXPOSURE (the figure is printed: it is tracked),
# and that the sysusers.d and tmpfiles.d snippets create the user and
# the drop folder in a scratch root.  TAP output, for Automake's
# tap-driver; run from the build directory with srcdir set.

set -u

MAX_EXPOSURE=2.0
srcdir=${srcdir:-.}
etc=$srcdir/etc

if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "1..0 # SKIP systemd-analyze not found"
	exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-unit.XXXXXX") || {
	echo "Bail out! mktemp failed"
	exit 1
}
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

export SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 SYSTEMD_LOG_COLOR=0

n=0
failed=0

# diag TEXT: print TEXT, possibly several lines, as TAP diagnostics.
diag() {
	printf '%s\n' "$1" | sed 's/^/# /'
}

# ok STATUS DESCRIPTION: one test line; STATUS 0 passes.
ok() {
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		failed=1
	fi
}

# skip REASON: one skipped test line.
skip() {
	n=$((n + 1))
	echo "ok $n # SKIP $1"
}

echo "1..5"

# --- Substitute the unit as the build does.
bindir=$tmp/bin
sysconfdir=$tmp/etc
unitdir=$tmp/unit
mkdir -p "$bindir" "$sysconfdir/mmsegd" "$unitdir"
if [ -f ./mmsegd ] && [ -x ./mmsegd ]; then
	cp ./mmsegd "$bindir/mmsegd"
else
	cp /bin/true "$bindir/mmsegd"
fi
if [ -f "$etc/mmsegd.ini" ]; then
	cp "$etc/mmsegd.ini" "$sysconfdir/mmsegd/mmsegd.ini"
else
	: >"$sysconfdir/mmsegd/mmsegd.ini"
fi
unit=$unitdir/mmsegd.service
if ! sed -e "s|@bindir@|$bindir|g" -e "s|@sysconfdir@|$sysconfdir|g" \
	"$etc/mmsegd.service.in" >"$unit"; then
	echo "Bail out! cannot substitute $etc/mmsegd.service.in"
	exit 1
fi

# --- 1. systemd-analyze verify: exit 0 and not a word of output.
out=$(systemd-analyze verify "$unit" 2>&1)
rc=$?
if [ $rc -eq 0 ] && [ -z "$out" ]; then
	ok 0 "systemd-analyze verify is clean"
else
	ok 1 "systemd-analyze verify is clean"
	diag "exit status $rc"
	[ -n "$out" ] && diag "$out"
fi

# --- 2. systemd-analyze security: the exposure figure.
version=$(systemd-analyze --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')
if [ -z "$version" ] || [ "$version" -lt 250 ]; then
	skip "systemd-analyze security --offline needs systemd 250 (have ${version:-unknown})"
else
	out=$(systemd-analyze security --no-pager --offline=true "$unit" 2>&1)
	rc=$?
	exposure=$(printf '%s\n' "$out" |
		sed -n 's/.*Overall exposure level for mmsegd\.service: \([0-9][0-9]*\.[0-9]\).*/\1/p')
	if [ -z "$exposure" ]; then
		ok 1 "security exposure unparseable"
		diag "exit status $rc"
		diag "$out"
	else
		diag "exposure $exposure"
		if awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e + 0 <= m + 0) }'; then
			ok 0 "security exposure $exposure <= $MAX_EXPOSURE"
		else
			ok 1 "security exposure $exposure <= $MAX_EXPOSURE"
			diag "$out"
		fi
	fi
fi

# --- 3. Only the variables the build substitutes appear in the unit.
left=$(grep -n '@[A-Za-z_][A-Za-z_]*@' "$unit")
if [ -z "$left" ]; then
	ok 0 "no unsubstituted @VAR@ in the unit"
else
	ok 1 "no unsubstituted @VAR@ in the unit"
	diag "$left"
fi

# --- 4 and 5. sysusers.d and tmpfiles.d, applied to a scratch root.
# With --root, both tools read their configuration and the user
# database from inside the root, so the snippets are installed there
# under their usual names and the host is not touched.
root=$tmp/root
mkdir -p "$root/etc" "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d"
cp "$etc/mmsegd.sysusers" "$root/usr/lib/sysusers.d/mmsegd.conf"
cp "$etc/mmsegd.tmpfiles" "$root/usr/lib/tmpfiles.d/mmsegd.conf"
have_user=0

if ! command -v systemd-sysusers >/dev/null 2>&1; then
	skip "systemd-sysusers not found"
else
	out=$(systemd-sysusers --root="$root" mmsegd.conf 2>&1)
	rc=$?
	pw=$(grep '^mmsegd:' "$root/etc/passwd" 2>/dev/null)
	gr=$(grep '^mmsegd:' "$root/etc/group" 2>/dev/null)
	uid=$(printf '%s\n' "$pw" | cut -d: -f3)
	gid=$(printf '%s\n' "$pw" | cut -d: -f4)
	home=$(printf '%s\n' "$pw" | cut -d: -f6)
	shell=$(printf '%s\n' "$pw" | cut -d: -f7)
	ggid=$(printf '%s\n' "$gr" | cut -d: -f3)
	if [ $rc -eq 0 ] && [ -n "$pw" ] && [ -n "$gr" ] &&
		[ "$gid" = "$ggid" ] && [ "$uid" -lt 1000 ] &&
		[ "$home" = /var/lib/mmsegd ] && [ "${shell##*/}" = nologin ]; then
		ok 0 "sysusers: system user mmsegd ($uid:$gid), home $home, $shell"
		have_user=1
	else
		ok 1 "sysusers: system user and group mmsegd, home /var/lib/mmsegd, nologin"
		diag "exit status $rc"
		[ -n "$out" ] && diag "$out"
		diag "passwd: ${pw:-(none)}"
		diag "group: ${gr:-(none)}"
	fi
fi

if ! command -v systemd-tmpfiles >/dev/null 2>&1; then
	skip "systemd-tmpfiles not found"
elif [ "$(id -u)" -ne 0 ]; then
	skip "tmpfiles: setting ownership needs root"
elif [ $have_user -ne 1 ]; then
	skip "tmpfiles: no mmsegd user in the scratch root (test 4)"
else
	out=$(systemd-tmpfiles --root="$root" --create mmsegd.conf 2>&1)
	rc=$?
	want="750 $uid:$gid
2770 $uid:$gid"
	got=$(stat -c '%a %u:%g' "$root/var/spool/mmsegd" \
		"$root/var/spool/mmsegd/drop" 2>&1)
	if [ $rc -eq 0 ] && [ -z "$out" ] && [ "$got" = "$want" ]; then
		ok 0 "tmpfiles: /var/spool/mmsegd 0750, drop 2770, owned by mmsegd"
	else
		ok 1 "tmpfiles: /var/spool/mmsegd 0750, drop 2770, owned by mmsegd"
		diag "exit status $rc"
		[ -n "$out" ] && diag "$out"
		diag "want:"
		diag "$want"
		diag "got:"
		diag "$got"
	fi
fi

exit $failed
