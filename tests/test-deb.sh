#!/bin/bash
# test-deb.sh: the Debian packages (debian/), built, checked, installed and purged.
#
# Clones the committed source (uncommitted changes are not in the clone) into a temporary
# folder, builds it with dpkg-buildpackage -us -uc -b, runs lintian on the result (any E:
# line fails; warnings are printed), and prints the build time and the packages' sizes.
# As root it then installs the packages with dpkg and checks what the installation made (the
# user, the state and drop folders, the unit, the conffile, the demo model, check-config and
# systemd-analyze verify), removes mmsegd-cuda, purges mmsegd and checks that received data
# stayed, then reinstalls it and purges with MMSEGD_PURGE_DATA=yes and checks that it went.
# Whatever happens, the machine is left as found: the packages purged, the user it made and
# the folders it made removed.
#
# Forms: the full one (make deb) builds with the CUDA package where nvcc is present and runs
# the build-time tests; DEB_SHORT=1 (tools/check.sh) sets nocheck and the pkg.mmsegd.nocuda
# profile. Both build with parallel=$(nproc). DEB_OUT=DIR keeps the .deb and .changes files
# there. TAP output; run from anywhere, with srcdir naming the source tree (default: this
# script's parent folder).

set -u

script_dir=$(cd "$(dirname "$0")" && pwd)
src=$(cd "${srcdir:-$script_dir/..}" && pwd -P)
short=${DEB_SHORT:-}
[ "$short" = 0 ] && short=

. "$(dirname "$0")/tap-util.sh"

# bail REASON: stop here, failing (the cleanup trap still runs).
bail() {
	echo "Bail out! $1"
	exit 1
}

# --- Preconditions that make the whole test meaningless: skip, with the reason.
if ! top=$(git -C "$src" rev-parse --show-toplevel 2>/dev/null) || [ "$top" != "$src" ]; then
	echo "1..0 # SKIP $src is not the top of a git checkout: the packages are built from a clone"
	exit 0
fi
for tool in dpkg-buildpackage dh dpkg-deb; do
	if ! command -v $tool >/dev/null 2>&1; then
		echo "1..0 # SKIP $tool not found (tools/install-deps.sh installs dpkg-dev and debhelper)"
		exit 0
	fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-deb.XXXXXX") || bail "mktemp failed"

# What the installation tests may create, recorded before anything is installed, so that the
# cleanup removes exactly that. The packages are installed only where none of their paths
# exist yet: a `make install` or an operator's mmsegd on this machine is never touched.
installed_here=0
made_user=0
made_group=0
cleanup() {
	if [ $installed_here -eq 1 ]; then
		dpkg --purge mmsegd-cuda >/dev/null 2>&1
		MMSEGD_PURGE_DATA=yes dpkg --purge mmsegd >/dev/null 2>&1
		# the purge keeps no data with MMSEGD_PURGE_DATA=yes; these are for a failed purge
		rm -rf /var/lib/mmsegd /var/spool/mmsegd /etc/mmsegd /usr/lib/mmsegd
		[ $made_user -eq 1 ] && getent passwd mmsegd >/dev/null && userdel mmsegd >/dev/null 2>&1
		[ $made_group -eq 1 ] && getent group mmsegd >/dev/null && groupdel mmsegd >/dev/null 2>&1
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

export SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 SYSTEMD_LOG_COLOR=0 LC_ALL=C.UTF-8

# --- 1. The changelog's version is configure.ac's AC_INIT version (a native package).
ac_version=$(sed -n 's/^AC_INIT(\[mmsegd\], \[\([^]]*\)\].*/\1/p' "$src/configure.ac")
deb_version=$(cd "$src" && dpkg-parsechangelog -S Version 2>/dev/null)
[ -n "$ac_version" ] && [ "$deb_version" = "$ac_version" ]
ok $? "debian/changelog version ${deb_version:-?} is configure.ac's ${ac_version:-?}"

# --- 2. Build from a clone.
if [ -n "$(git -C "$src" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	diag "note: $src has uncommitted changes; the clone builds HEAD ($(git -C "$src" rev-parse --short HEAD))"
fi
if ! git clone -q "$src" "$tmp/mmsegd" 2>"$tmp/clone.err"; then
	diag "$(cat "$tmp/clone.err")"
	bail "git clone $src failed"
fi
jobs=$(nproc)
opts="parallel=$jobs"
profiles=
if [ -n "$short" ]; then
	form="short (DEB_SHORT=1: nocheck, profile pkg.mmsegd.nocuda)"
	opts="$opts nocheck"
	profiles=pkg.mmsegd.nocuda
else
	form="full (with CUDA where nvcc is present, build-time tests)"
fi
cuda_home=${CUDA_HOME:-/usr/local/cuda}
want_cuda=0
if [ -z "$short" ]; then
	if [ -x "$cuda_home/bin/nvcc" ] || command -v nvcc >/dev/null 2>&1; then
		want_cuda=1
	else
		diag "no nvcc under $cuda_home or on PATH: debian/rules skips mmsegd-cuda"
	fi
fi
diag "form: $form; DEB_BUILD_OPTIONS=$opts"
start=$(date +%s)
(cd "$tmp/mmsegd" && DEB_BUILD_OPTIONS="$opts" DEB_BUILD_PROFILES="$profiles" \
	dpkg-buildpackage -us -uc -b ${profiles:+-P$profiles}) >"$tmp/build.log" 2>&1
rc=$?
build_s=$(($(date +%s) - start))
diag "build time: ${build_s} s ($form, $jobs jobs)"
changes=$(ls "$tmp"/mmsegd_*.changes 2>/dev/null | head -1)
if [ $rc -ne 0 ] || [ -z "$changes" ]; then
	ok 1 "dpkg-buildpackage -us -uc -b"
	diag "exit status $rc; the end of the log:"
	diag "$(tail -60 "$tmp/build.log")"
	bail "the packages did not build"
fi
ok 0 "dpkg-buildpackage -us -uc -b (${build_s} s)"
# the build-time tests' summary, where they ran
summary=$(grep -E '^# (TOTAL|PASS|FAIL|SKIP|ERROR):' "$tmp/build.log")
[ -n "$summary" ] && diag "build-time tests: $(printf '%s\n' "$summary" | tr -s ' ' | tr '\n' ' ')"

deb_main=$(ls "$tmp"/mmsegd_*.deb 2>/dev/null | head -1)
deb_cuda=$(ls "$tmp"/mmsegd-cuda_*.deb 2>/dev/null | head -1)
if [ $want_cuda -eq 1 ]; then
	[ -n "$deb_main" ] && [ -n "$deb_cuda" ]
	ok $? "built mmsegd and mmsegd-cuda"
else
	why="no nvcc"
	[ -n "$short" ] && why="the pkg.mmsegd.nocuda profile"
	[ -n "$deb_main" ] && [ -z "$deb_cuda" ]
	ok $? "built mmsegd, and no mmsegd-cuda ($why)"
fi
for deb in "$tmp"/*.deb; do
	[ -f "$deb" ] || continue
	size=$(dpkg-deb -I "$deb" | sed -n 's/^ *size \([0-9]*\) bytes.*/\1/p')
	isize=$(dpkg-deb -f "$deb" Installed-Size)
	diag "$(basename "$deb"): $((size / 1024)) KiB ($(du -h "$deb" | cut -f1)), installed $isize KiB"
done
if [ -n "${DEB_OUT:-}" ]; then
	mkdir -p "$DEB_OUT" && cp "$tmp"/*.deb "$tmp"/*.changes "$tmp"/*.buildinfo "$DEB_OUT"/ &&
		diag "packages copied to $DEB_OUT"
fi

# --- 3. The CPU package links no CUDA library, and the CUDA one carries no RUNPATH.
x=$tmp/x
mkdir -p "$x/main"
dpkg-deb -x "$deb_main" "$x/main"
need=$(objdump -p "$x/main/usr/bin/mmsegd" 2>/dev/null | awk '$1 == "NEEDED" {print $2}')
[ -n "$need" ] && ! printf '%s\n' "$need" | grep -qiE 'cuda|cudnn|cublas'
ok $? "mmsegd's /usr/bin/mmsegd needs no CUDA library"
if [ -n "$deb_cuda" ]; then
	mkdir -p "$x/cuda"
	dpkg-deb -x "$deb_cuda" "$x/cuda"
	dyn=$(objdump -p "$x/cuda/usr/libexec/mmsegd/mmsegd-cuda" 2>/dev/null)
	printf '%s\n' "$dyn" | grep -q 'NEEDED *libcudnn' && ! printf '%s\n' "$dyn" | grep -qE 'RPATH|RUNPATH'
	ok $? "mmsegd-cuda's binary links cuDNN and has no RPATH/RUNPATH"
	diag "mmsegd-cuda: Depends: $(dpkg-deb -f "$deb_cuda" Depends)"
	diag "mmsegd-cuda: Recommends: $(dpkg-deb -f "$deb_cuda" Recommends)"
else
	skip "no mmsegd-cuda package in this form"
fi

# --- 4. lintian: no error; every other tag (warnings, notes, pedantic, experimental) is printed.
if ! command -v lintian >/dev/null 2>&1; then
	skip "lintian not found (tools/install-deps.sh installs it)"
else
	lintian --info --display-info --display-experimental --pedantic "$changes" >"$tmp/lintian.out" 2>&1
	lrc=$?
	# (lintian warns that it runs as root; that is not about the packages)
	grep -v 'running with root privileges' "$tmp/lintian.out" | grep -E '^[EWIPXO]:' >"$tmp/lintian.tags"
	errors=$(grep -c '^E:' "$tmp/lintian.tags")
	warnings=$(grep -c '^W:' "$tmp/lintian.tags")
	[ -s "$tmp/lintian.tags" ] && diag "$(cat "$tmp/lintian.tags")"
	# lintian exits 2 when it could not check (1 is "tags emitted")
	[ "$errors" -eq 0 ] && [ $lrc -ne 2 ]
	ok $? "lintian: $errors errors, $warnings warnings"
	[ $lrc -eq 2 ] && diag "$(tail -20 "$tmp/lintian.out")"
fi

# --- 5 and after: install, check, purge. Only as root, on a machine without mmsegd.
finish() {
	echo "1..$n"
	exit $failed
}
if [ "$(id -u)" -ne 0 ]; then
	skip "installing the packages needs root"
	finish
fi
present=
for p in /usr/bin/mmsegd /usr/lib/mmsegd /etc/mmsegd /var/lib/mmsegd /var/spool/mmsegd \
	/lib/systemd/system/mmsegd.service /usr/lib/systemd/system/mmsegd.service \
	/etc/systemd/system/mmsegd.service; do
	[ -e "$p" ] && present="$present $p"
done
for pkg in mmsegd mmsegd-cuda; do
	st=$(dpkg-query -W -f='${db:Status-Status}' $pkg 2>/dev/null)
	[ -n "$st" ] && [ "$st" != not-installed ] && present="$present package:$pkg($st)"
done
if [ -n "$present" ]; then
	skip "mmsegd is on this machine already ($present ): installing and purging would change it"
	finish
fi
getent passwd mmsegd >/dev/null || made_user=1
getent group mmsegd >/dev/null || made_group=1
installed_here=1

debs="$deb_main${deb_cuda:+ $deb_cuda}"
# shellcheck disable=SC2086 # two paths without spaces (mktemp's)
out=$(dpkg -i $debs 2>&1)
rc=$?
if [ $rc -ne 0 ]; then
	ok 1 "dpkg -i $(basename -a $debs | tr '\n' ' ')"
	diag "$out"
	diag "(a missing dependency: apt-get -f install, or tools/install-deps.sh)"
	bail "the packages did not install"
fi
ok 0 "dpkg -i $(basename -a $debs | tr '\n' ' ')"
[ -n "$out" ] && diag "$(printf '%s\n' "$out" | grep -vE '^(Selecting|\(Reading|Preparing|Unpacking|Setting up|Processing)')"

# The user and group, as sysusers.d made them.
pw=$(getent passwd mmsegd)
gr=$(getent group mmsegd)
uid=$(printf '%s' "$pw" | cut -d: -f3)
gid=$(printf '%s' "$pw" | cut -d: -f4)
[ -n "$pw" ] && [ -n "$gr" ] && [ "$gid" = "$(printf '%s' "$gr" | cut -d: -f3)" ] &&
	[ "$uid" -lt 1000 ] && [ "$(printf '%s' "$pw" | cut -d: -f6)" = /var/lib/mmsegd ] &&
	[ "$(basename "$(printf '%s' "$pw" | cut -d: -f7)")" = nologin ]
ok $? "system user and group mmsegd ($uid:$gid), home /var/lib/mmsegd, nologin"

# The folders, as tmpfiles.d made them.
got=$(stat -c '%n %a %U:%G' /var/lib/mmsegd /var/spool/mmsegd /var/spool/mmsegd/drop 2>&1)
want="/var/lib/mmsegd 750 mmsegd:mmsegd
/var/spool/mmsegd 750 mmsegd:mmsegd
/var/spool/mmsegd/drop 2770 mmsegd:mmsegd"
[ "$got" = "$want" ]
ok $? "/var/lib/mmsegd 0750, /var/spool/mmsegd 0750, drop 2770, all mmsegd:mmsegd"
[ "$got" = "$want" ] || diag "got: $got"

# The unit, the conffile and the model.
unit=/lib/systemd/system/mmsegd.service
exec_line="ExecStart=/usr/bin/mmsegd serve -c /etc/mmsegd/mmsegd.ini"
[ -f "$unit" ] && grep -qxF "$exec_line" "$unit" && [ "$(dpkg -S "$unit" 2>/dev/null | cut -d: -f1)" = mmsegd ]
ok $? "the unit $unit, from mmsegd, runs /usr/bin/mmsegd serve"
dpkg-query -W -f='${Conffiles}\n' mmsegd | grep -q '^ /etc/mmsegd/mmsegd.ini '
ok $? "/etc/mmsegd/mmsegd.ini is a conffile"
model=/usr/share/mmsegd/models/demo.safetensors
out=$(runuser -u mmsegd -- /usr/bin/mmsegd model-info "$model" 2>&1)
rc=$?
[ $rc -eq 0 ] && cmp -s "$model" "$src/models/demo.safetensors"
ok $? "the demo model at $model (model-info as mmsegd: exit $rc)"
[ $rc -eq 0 ] || diag "$out"

# The installed default configuration, read as the service reads it: by user mmsegd.
out=$(runuser -u mmsegd -- /usr/bin/mmsegd check-config -c /etc/mmsegd/mmsegd.ini 2>&1)
rc=$?
[ $rc -eq 0 ] && printf '%s\n' "$out" | grep -qxF "model = $model"
ok $? "mmsegd check-config /etc/mmsegd/mmsegd.ini as user mmsegd (exit $rc), model = $model"
[ $rc -eq 0 ] || diag "$out"

# systemd-analyze verify reads the unit file (and the drop-ins of its name) without a
# running systemd, as in tests/test-unit.sh: with the binaries installed it must say nothing.
if ! command -v systemd-analyze >/dev/null 2>&1; then
	skip "systemd-analyze not found"
else
	out=$(systemd-analyze verify "$unit" 2>&1)
	rc=$?
	[ $rc -eq 0 ] && [ -z "$out" ]
	ok $? "systemd-analyze verify $unit is clean"
	[ -n "$out" ] && diag "exit status $rc: $out"
fi

# Nothing enabled or started: the default configuration refuses every caller.
[ ! -e /etc/systemd/system/multi-user.target.wants/mmsegd.service ]
ok $? "the service is not enabled on installation"

# mmsegd-cuda: the binary, the drop-in, and the way back to the CPU build on removal.
dropin=/lib/systemd/system/mmsegd.service.d/cuda.conf
if [ -n "$deb_cuda" ]; then
	cuda_exec="ExecStart=/usr/libexec/mmsegd/mmsegd-cuda serve -c /etc/mmsegd/mmsegd.ini"
	missing=$(ldd /usr/libexec/mmsegd/mmsegd-cuda 2>&1 | grep 'not found')
	v=$(/usr/libexec/mmsegd/mmsegd-cuda --version 2>&1 | head -1)
	[ -f "$dropin" ] && grep -qxF "$cuda_exec" "$dropin" && grep -qx 'ExecStart=' "$dropin" &&
		[ -z "$missing" ] && [ "$v" = "mmsegd $ac_version" ]
	ok $? "mmsegd-cuda: $dropin runs /usr/libexec/mmsegd/mmsegd-cuda ($v)"
	[ -n "$missing" ] && diag "$missing"
	out=$(dpkg -r mmsegd-cuda 2>&1)
	rc=$?
	[ $rc -eq 0 ] && [ ! -e "$dropin" ] && [ ! -e /usr/libexec/mmsegd ] && [ -f "$unit" ]
	ok $? "dpkg -r mmsegd-cuda removes the drop-in and the binary, the unit stays"
	[ $rc -eq 0 ] || diag "$out"
else
	skip "no mmsegd-cuda package in this form"
fi

# --- Purge, keeping the received data (the default).
data=/var/lib/mmsegd/test-deb-received.dcm
printf 'received\n' >"$data" && chown mmsegd:mmsegd "$data"
out=$(env -u MMSEGD_PURGE_DATA dpkg --purge mmsegd 2>&1)
rc=$?
gone=
for p in /usr/bin/mmsegd /etc/mmsegd "$unit" /usr/lib/sysusers.d/mmsegd.conf \
	/usr/lib/tmpfiles.d/mmsegd.conf /usr/share/mmsegd /usr/share/doc/mmsegd; do
	[ -e "$p" ] && gone="$gone $p"
done
[ $rc -eq 0 ] && [ -z "$gone" ]
ok $? "dpkg --purge mmsegd removes the binary, configuration, unit, snippets and model"
[ $rc -eq 0 ] || diag "$out"
[ -n "$gone" ] && diag "still there:$gone"
[ -f "$data" ] && [ ! -e /var/spool/mmsegd ] && printf '%s\n' "$out" | grep -q 'MMSEGD_PURGE_DATA=yes'
ok $? "the purge keeps /var/lib/mmsegd with its data, says how to remove it, removes the empty spool"
getent passwd mmsegd >/dev/null
ok $? "the purge keeps the system user mmsegd (Debian practice)"

# --- Reinstall over the kept data, then purge with the operator's "remove the data too".
out=$(dpkg -i "$deb_main" 2>&1)
rc=$?
[ $rc -eq 0 ] && [ -f "$data" ] && [ "$(stat -c '%U %a' /var/lib/mmsegd)" = "mmsegd 750" ]
ok $? "dpkg -i again: the kept data is there, /var/lib/mmsegd still mmsegd 0750"
[ $rc -eq 0 ] || diag "$out"
out=$(MMSEGD_PURGE_DATA=yes dpkg --purge mmsegd 2>&1)
rc=$?
[ $rc -eq 0 ] && [ ! -e /var/lib/mmsegd ] && [ ! -e /var/spool/mmsegd ] &&
	[ ! -e /usr/bin/mmsegd ]
ok $? "MMSEGD_PURGE_DATA=yes dpkg --purge mmsegd removes /var/lib/mmsegd and /var/spool/mmsegd"
[ $rc -eq 0 ] || diag "$out"

finish
