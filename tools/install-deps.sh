#!/bin/bash
# Install every Debian 12 package that mmsegd's build, tests and demo need.
# A no-op when all are present; safe to run again; runs as root (or through sudo).
# CUDA and cuDNN are not Debian packages: configure finds them under /usr/local/cuda when
# present and builds without them otherwise.
set -euo pipefail

packages=(
    # build
    build-essential autoconf automake pkg-config
    libuv1-dev libinih-dev libsystemd-dev
    libdcmtk-dev libsndfile1-dev # dcmtk.pc needs sndfile.pc
    libgdcm-dev libsqlite3-dev libcjson-dev libdnnl-dev libpng-dev zlib1g-dev libcurl4-openssl-dev
    libpq-dev libmicrohttpd-dev
    # tests and demo
    clang-format systemd man-db dcmtk dicom3tools dcm2niix orthanc orthanc-dicomweb sqlite3 openssl
    postgresql
    # the status page under a real browser (tests/test-demo.sh, tests/browser.py)
    chromium
    # the Debian packages (debian/, tests/test-deb.sh: built from a git clone, checked by lintian)
    debhelper dpkg-dev lintian git
    # the fuzz targets: clang with libFuzzer and the sanitizers
    clang libclang-rt-dev
    # the PyTorch reference and its tests (tools/mmunet); OpenBLAS replaces the reference BLAS
    python3 python3-numpy python3-scipy python3-skimage python3-pydicom python3-nibabel python3-pil
    python3-torch python3-jsonschema python3-venv libopenblas0-pthread
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages are installed"
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: run as root to install packages" >&2; exit 1; }
    sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
