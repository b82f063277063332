#!/bin/bash
# End-to-end proof of the nnU-Net v2 integration of MM-UNet (optional; not part of make check).
#
#   tools/mmunet/nnunet_proof.sh [--record FILE | --no-record]
#
# Sets up a virtual environment _build/venv-ref (Debian's /usr/bin/python3 with torch 2.x,
# nnunetv2 and safetensors from PyPI), then runs tools/mmunet/nnunet_proof.py: a synthetic
# dataset under _build/nnunet-proof, nnU-Net planning and preprocessing, two short epochs of
# nnUNetTrainerMMUNet_2epochs on the CPU, export to a model file, and the checks that the
# exported network equals the one in the nnU-Net checkpoint.  Versions and figures go to
# tests/fixtures/nnunet-proof.json unless --record or --no-record says otherwise.  The last
# line is "nnunet-proof: ok" or "nnunet-proof: FAILED: ..."; the exit status is 0 only for ok.
#
# PyPI's Linux torch wheels are CUDA builds that depend on NVIDIA's library wheels (several
# GB; CPU-only wheels are not on PyPI, and the CUDA build does not import without them).
# They are installed once and reused; the proof itself runs on the CPU.  TORCH_SPEC and
# NNUNET_SPEC override the requirement strings (e.g. TORCH_SPEC=torch==2.5.1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=$ROOT/_build/venv-ref
WORK=$ROOT/_build/nnunet-proof
RECORD=$ROOT/tests/fixtures/nnunet-proof.json
TORCH_SPEC=${TORCH_SPEC:-torch>=2.1.2}
NNUNET_SPEC=${NNUNET_SPEC:-nnunetv2>=2.4}

case "${1:-}" in
  --record) RECORD=$(realpath -m "$2") ;;
  --no-record) RECORD= ;;
  "") ;;
  *) echo "usage: $0 [--record FILE | --no-record]" >&2; exit 2 ;;
esac

fail() { echo "nnunet-proof: FAILED: $*"; exit 1; }

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  # Debian keeps ensurepip, which venv needs, in python3-venv.
  if ! /usr/bin/python3 -c 'import ensurepip' 2>/dev/null; then
    [ "$(id -u)" = 0 ] || fail "python3-venv is missing (apt-get install python3-venv)"
    echo "+ apt-get install -y python3-venv"
    apt-get install -y -q python3-venv >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q python3-venv >/dev/null; } ||
      fail "apt-get install python3-venv"
  fi
  echo "+ /usr/bin/python3 -m venv $VENV"
  /usr/bin/python3 -m venv "$VENV" || fail "python3 -m venv"
fi
echo "+ pip install $TORCH_SPEC $NNUNET_SPEC safetensors"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$TORCH_SPEC" "$NNUNET_SPEC" \
  safetensors || fail "pip install"
setup=$(( $(date +%s) - start ))
echo "step setup: $setup s"

cd "$ROOT"
exec "$VENV/bin/python" tools/mmunet/nnunet_proof.py run --work "$WORK" \
  ${RECORD:+--record "$RECORD"} --setup-seconds "$setup"
