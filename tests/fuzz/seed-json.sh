#!/bin/bash
# tests/fuzz/seed-json.sh OUT: the seed corpus of fuzz-json: the JSON header and the card of
# every model fixture and of the demo model (the malformed fixtures' headers included), as
# they are stored.
set -u
out=$1
mkdir -p "$out"
top=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON3:-/usr/bin/python3}
"$python" - "$out" "$top"/tests/fixtures/mmunet/*.safetensors "$top"/tests/fixtures/mmunet/malformed/* \
    "$top"/models/demo.safetensors <<'PY' || exit 0
import json, os, struct, sys
out = sys.argv[1]
for i, path in enumerate(sys.argv[2:]):
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if n > (4 << 20):
                continue
            head = f.read(n)
    except (OSError, struct.error):
        continue
    base = "%02d-%s" % (i, os.path.basename(path))
    with open(os.path.join(out, base + ".header.json"), "wb") as f:
        f.write(head)
    try:
        card = json.loads(head)["__metadata__"]["mmsegd.model"]
    except (ValueError, KeyError, TypeError):
        continue
    with open(os.path.join(out, base + ".card.json"), "w") as f:
        f.write(card)
PY
exit 0
