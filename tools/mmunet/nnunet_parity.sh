#!/bin/bash
# The reference suite of mmunet.md 7, V4 (optional; not part of make check): nnU-Net v2's own
# predictor, the numpy witness (tools/mmunet/pipeline.py) and `mmsegd segment` on the same
# DICOM series, label agreement and Dice between each pair.
#
#   tools/mmunet/nnunet_parity.sh [--cases A,B,..] [--no-mmsegd] [--no-record] [--threads N]
#
# Uses the virtual environment _build/venv-ref that tools/mmunet/nnunet_proof.sh sets up
# (torch 2.x and nnunetv2 from PyPI) and _build/dev/mmsegd (MMSEGD overrides it). Runs
# tools/mmunet/nnunet_parity.py in a scratch folder _build/nnunet-parity; writes nnU-Net's label
# maps to tests/fixtures/parity/<case>.nnunet.nii.gz and versions, figures and timings to
# tests/fixtures/nnunet-parity.json (tests/test-parity.sh compares mmsegd with those). Other
# options go to `nnunet_parity.py run`. The last line is "nnunet-parity: ok" or
# "nnunet-parity: FAILED: ..."; the exit status is 0 only for ok.
set -euo pipefail

. "$(dirname "$0")/ref-env.sh" nnunet-parity
# nnU-Net's workers and malloc: as in nnunet_proof.py (large temporaries stay in the heap).
export nnUNet_def_n_proc=${nnUNet_def_n_proc:-$(nproc)} nnUNet_compile=false
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=268435456
exec "$VENV/bin/python" tools/mmunet/nnunet_parity.py run --work "$ROOT/_build/nnunet-parity" \
  --mmsegd "$MMSEGD" "$@"
