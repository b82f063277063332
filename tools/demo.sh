#!/bin/bash
# README command 1: install, build, and run the daemon with the demo configuration in the
# foreground (Ctrl-C stops it). The state goes to demo-state/ in the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
autoreconf -fi
mkdir -p _build/demo
cd _build/demo
[ -f Makefile ] || ../../configure --with-cuda=auto
make -j"$(nproc)"
echo "demo: starting mmsegd serve -c etc/demo.ini (Ctrl-C stops it)"
exec ./mmsegd serve -c ../../etc/demo.ini
