#!/bin/bash
# test-unit.sh: the systemd integration files as `make install` installs them.
#
# Runs `make install DESTDIR=...` in the build directory, then checks the
# INSTALLED unit (not a copy substituted here): that ExecStart names the
# configured bindir, that systemd-analyze verifies it cleanly, that its
# security exposure stays at or under MAX_EXPOSURE (the figure is printed:
# it is tracked), and that the installed sysusers.d and tmpfiles.d
# snippets create the user, the state directory and the drop folder in a
# scratch root.  TAP output, for Automake's tap-driver; run from the build
# directory (top_builddir) with srcdir set.

set -u

MAX_EXPOSURE=2.0

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

. "$(dirname "$0")/tap-util.sh"

echo "1..7"

# --- Install into a scratch DESTDIR, as a package build would.
# MAKEFLAGS from an enclosing `make check` may name a jobserver that this
# make cannot reach; the tree is built already, so a plain make is enough.
builddir=${top_builddir:-.}
dest=$tmp/dest
if ! out=$(cd "$builddir" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL "${MAKE:-make}" -s \
	install DESTDIR="$dest" 2>&1); then
	echo "Bail out! make install DESTDIR=$dest failed"
	diag "$out"
	exit 1
fi
# The configured directories, from the Makefile itself (expanded by make).
dirs=$(cd "$builddir" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL "${MAKE:-make}" -s --no-print-directory \
	-f Makefile -f - print-dirs <<'MK'
print-dirs:
	@echo "$(bindir)"; echo "$(sysconfdir)"; echo "$(prefix)"; echo "$(mandir)"
MK
)
bindir=$(printf '%s\n' "$dirs" | sed -n 1p)
sysconfdir=$(printf '%s\n' "$dirs" | sed -n 2p)
prefix=$(printf '%s\n' "$dirs" | sed -n 3p)
mandir=$(printf '%s\n' "$dirs" | sed -n 4p)
# Documentation=man:mmsegd(1): systemd-analyze verify runs man(1), which finds the page
# installed under DESTDIR through MANPATH.
if [ ! -f "$dest$mandir/man1/mmsegd.1" ]; then
	echo "Bail out! no installed manual page at $dest$mandir/man1/mmsegd.1"
	exit 1
fi
export MANPATH=$dest$mandir
unit=$dest$prefix/lib/systemd/system/mmsegd.service
if [ -z "$bindir" ] || [ ! -f "$unit" ]; then
	echo "Bail out! no installed unit at $unit (bindir '${bindir}')"
	exit 1
fi

# --- 1. ExecStart names the installed binary by its configured path.
want="ExecStart=$bindir/mmsegd serve -c $sysconfdir/mmsegd/mmsegd.ini"
got=$(grep '^ExecStart=' "$unit")
if [ "$got" = "$want" ] && [ -x "$dest$bindir/mmsegd" ]; then
	ok 0 "installed ExecStart names $bindir/mmsegd, installed and executable"
else
	ok 1 "installed ExecStart names $bindir/mmsegd, installed and executable"
	diag "want: $want"
	diag "got:  $got"
fi

# --- 2. systemd-analyze verify on the installed unit, as installed.
# The binary is under DESTDIR, not at $bindir on this machine, so the one
# complaint allowed is that $bindir/mmsegd is not there; anything else
# (such as "Neither a valid executable name nor an absolute path" for an
# unsubstituted @bindir@) fails.
out=$(systemd-analyze verify "$unit" 2>&1)
rc=$?
other=$(printf '%s\n' "$out" | grep -v -F "Command $bindir/mmsegd is not executable" | grep .)
if [ -z "$other" ]; then
	ok 0 "systemd-analyze verify on the installed unit: nothing but the absent $bindir/mmsegd"
else
	ok 1 "systemd-analyze verify on the installed unit: nothing but the absent $bindir/mmsegd"
	diag "exit status $rc"
	diag "$out"
fi

# --- 3. systemd-analyze verify, clean, with ExecStart pointing into DESTDIR.
# systemd-analyze --root would also look for sysinit.target and /bin/kill
# inside DESTDIR, so instead the installed unit is copied with only the
# ExecStart binary path prefixed by DESTDIR (the rest, byte for byte, is the
# installed file): now verify must say nothing at all.
copy=$tmp/mmsegd.service
sed "s|^ExecStart=$bindir/mmsegd |ExecStart=$dest$bindir/mmsegd |" "$unit" >"$copy"
out=$(systemd-analyze verify "$copy" 2>&1)
rc=$?
if [ $rc -eq 0 ] && [ -z "$out" ] && ! cmp -s "$unit" "$copy"; then
	ok 0 "systemd-analyze verify is clean with the DESTDIR binary"
else
	ok 1 "systemd-analyze verify is clean with the DESTDIR binary"
	diag "exit status $rc"
	[ -n "$out" ] && diag "$out"
fi

# --- 4. systemd-analyze security on the installed unit: the exposure figure.
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

# --- 5. No @VAR@ is left in the installed unit.
left=$(grep -n '@[A-Za-z_][A-Za-z_]*@' "$unit")
if [ -z "$left" ]; then
	ok 0 "no unsubstituted @VAR@ in the installed unit"
else
	ok 1 "no unsubstituted @VAR@ in the installed unit"
	diag "$left"
fi

# --- 6 and 7. The installed sysusers.d and tmpfiles.d snippets, applied to a scratch root.
# With --root, both tools read their configuration and the user
# database from inside the root, so the snippets are installed there
# under their usual names and the host is not touched.
root=$tmp/root
mkdir -p "$root/etc" "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d"
cp "$dest$prefix/lib/sysusers.d/mmsegd.conf" "$root/usr/lib/sysusers.d/mmsegd.conf" &&
	cp "$dest$prefix/lib/tmpfiles.d/mmsegd.conf" "$root/usr/lib/tmpfiles.d/mmsegd.conf" || {
	echo "Bail out! the snippets are not installed under $dest$prefix/lib"
	exit 1
}
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
	skip "tmpfiles: no mmsegd user in the scratch root (test 6)"
else
	out=$(systemd-tmpfiles --root="$root" --create mmsegd.conf 2>&1)
	rc=$?
	want="750 $uid:$gid
750 $uid:$gid
2770 $uid:$gid"
	got=$(stat -c '%a %u:%g' "$root/var/lib/mmsegd" "$root/var/spool/mmsegd" \
		"$root/var/spool/mmsegd/drop" 2>&1)
	if [ $rc -eq 0 ] && [ -z "$out" ] && [ "$got" = "$want" ]; then
		ok 0 "tmpfiles: /var/lib/mmsegd 0750, /var/spool/mmsegd 0750, drop 2770, owned by mmsegd"
	else
		ok 1 "tmpfiles: /var/lib/mmsegd 0750, /var/spool/mmsegd 0750, drop 2770, owned by mmsegd"
		diag "exit status $rc"
		[ -n "$out" ] && diag "$out"
		diag "want:"
		diag "$want"
		diag "got:"
		diag "$got"
	fi
fi

exit $failed
