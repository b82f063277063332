#!/bin/bash
# tests/fuzz/seed-model.sh OUT: the seed corpus of fuzz-model: the model fixtures up to 4 MiB
# (malformed ones included) and the demo model; larger files would slow every mutation.
set -u
out=$1
mkdir -p "$out"
top=$(cd "$(dirname "$0")/../.." && pwd)
for f in "$top"/tests/fixtures/mmunet/*.safetensors "$top"/tests/fixtures/mmunet/malformed/* \
    "$top"/models/demo.safetensors; do
    [ -f "$f" ] || continue
    [ "$(stat -c %s "$f")" -le $((4 << 20)) ] || continue
    cp "$f" "$out/$(basename "$(dirname "$f")")-$(basename "$f")"
done
exit 0
