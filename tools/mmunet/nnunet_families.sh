#!/bin/bash
# nnU-Net's standard networks and MM-UNet trained by nnU-Net v2 against `mmsegd segment`
# (optional; not part of make check): tiny trainings of PlainConvUNet (nnUNetTrainer), of a
# ResEnc M plan (ResidualEncoderUNet) and of nnUNetTrainerMMUNet on phantoms, two folds each,
# on the CPU; nnU-Net's postprocessing; export of each pair of folds as a fold ensemble;
# nnU-Net's predictor from the results folder with both folds, postprocessing on and off,
# against `mmsegd segment --postprocessing yes|no`; and the two folds with their weights
# averaged, which must not agree.
#
#   tools/mmunet/nnunet_families.sh [--steps S,T,..] [--families A,B,..] [--no-record]
#
# Uses the virtual environment _build/venv-ref that tools/mmunet/nnunet_proof.sh sets up
# (torch 2.x and nnunetv2 from PyPI) and _build/dev/mmsegd (MMSEGD overrides it). Runs
# tools/mmunet/nnunet_families.py in a scratch folder _build/nnunet-families; writes the model
# files and nnU-Net's label maps to tests/fixtures/parity-families/ and versions, figures and
# timings to tests/fixtures/nnunet-parity-families.json (tests/test-parity.sh compares mmsegd
# with those). Other options go to `nnunet_families.py run`. The last line is
# "nnunet-families: ok" or "nnunet-families: FAILED: ..."; the exit status is 0 only for ok.
set -euo pipefail

. "$(dirname "$0")/ref-env.sh" nnunet-families
exec "$VENV/bin/python" tools/mmunet/nnunet_families.py run --work "$ROOT/_build/nnunet-families" \
  --mmsegd "$MMSEGD" "$@"
