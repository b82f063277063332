#!/bin/bash
# tests/fuzz/seed-outputs.sh OUT: the seed corpus of fuzz-outputs: inputs of 16 to 1,400 bytes
# from a fixed pseudo-random sequence (the target reads any bytes as geometry, labels and
# segments), and the corner cases: all zero bytes (patient axes, smallest spacing, no label)
# and all 0xFF bytes (largest spacing and tilt, every voxel labelled).
set -u
out=$1
mkdir -p "$out"
python=${PYTHON3:-/usr/bin/python3}
"$python" - "$out" <<'PY' || exit 0
import os, random, sys
out = sys.argv[1]
rnd = random.Random(20261205)
for i, n in enumerate((16, 40, 64, 100, 200, 400, 800, 1400)):
    with open(os.path.join(out, "random-%d" % i), "wb") as f:
        f.write(bytes(rnd.randrange(256) for _ in range(n)))
for name, b in (("zeros", 0), ("ones", 0xFF)):
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([b]) * 64)
PY
exit 0
