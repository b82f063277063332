# Sourced by the reference suites' wrappers (nnunet_parity.sh, nnunet_families.sh): sets ROOT,
# VENV and MMSEGD, and stops with "NAME: FAILED: ..." unless the virtual environment that
# tools/mmunet/nnunet_proof.sh sets up has nnunetv2 and mmsegd is built.
#   . tools/mmunet/ref-env.sh NAME
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=$ROOT/_build/venv-ref
MMSEGD=${MMSEGD:-$ROOT/_build/dev/mmsegd}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import nnunetv2, torch' 2>/dev/null; then
  echo "$1: FAILED: $VENV has no nnunetv2 (run tools/mmunet/nnunet_proof.sh first)"
  exit 1
fi
if [ ! -x "$MMSEGD" ]; then
  echo "$1: FAILED: $MMSEGD is not built (make -C _build/dev mmsegd)"
  exit 1
fi
cd "$ROOT"
