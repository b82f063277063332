#!/bin/bash
# tests/fuzz/seed-spool.sh OUT: the seed corpus of fuzz-spool: the same files as fuzz-prescan's
# (tests/fuzz/seed-prescan.sh), since the spool's input is one received file.
exec bash "$(dirname "$0")/seed-prescan.sh" "$@"
