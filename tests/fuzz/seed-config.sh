#!/bin/bash
# tests/fuzz/seed-config.sh OUT: the seed corpus of fuzz-config: the shipped configurations.
set -u
out=$1
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
cp "$here"/../../etc/*.ini "$out/"
exit 0
