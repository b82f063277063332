#!/bin/bash
# Pack the GPU test and benchmark programs of a CUDA build into one archive that runs on a GPU
# machine which has the NVIDIA driver, the CUDA runtime, cuBLAS and cuDNN but none of our
# other dependencies (make gpu-bundle; tests/gpu/device-check.sh unpacks and runs it).
#
#   tools/gpu-bundle.sh --builddir DIR [--out FILE] [--level N] [PROGRAM...]
#
# PROGRAM: paths relative to DIR (default: those of tests/test-kernels tests/test-backend-ops
# tests/test-mixer-cuda tests/test-forward bench/bench-forward mmsegd that exist).
# The archive (default .gpu/gpu-bundle.tar.xz under the source tree) holds one folder, bundle/:
#   the programs at their build-tree paths (debug sections stripped, symbols kept);
#   lib/        every shared library they load, as ldd resolves it here, under its soname,
#               except those the target brings: the glibc family, libstdc++ and libgcc_s
#               (the target's are newer) and every CUDA, cuBLAS and cuDNN library;
#   tests/fixtures/, models/demo.safetensors: the files the tests read (the programs find
#               them through srcdir=bundle); tests/label_agreement.py, which compares label
#               volumes; tools/mmunet/*.py: the PyTorch reference, the benchmark models'
#               exporter and the PyTorch benchmark;
#   phantom/    a phantom CT series with its truth (tools/mmunet/phantom_series.py, seed 1000,
#               regular; $PYTHON3 with numpy, scipy and nibabel, default /usr/bin/python3);
#   MANIFEST    the source revision, the build's configuration, each file with its size, the
#               libraries expected from the target and the newest glibc / libstdc++ symbol
#               versions the bundle needs.
# --level: xz's compression level (default 9; tests/test-gpu-bundle.sh uses 0).
# Programs run there with LD_LIBRARY_PATH=bundle/lib plus where the target keeps CUDA.
# Fails when a library does not resolve here or a named program is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
builddir=
out=$src/.gpu/gpu-bundle.tar.xz
progs=()
level=9
while [ $# -gt 0 ]; do
    case $1 in
    --builddir) builddir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --level) level=$2; shift 2 ;;
    -*) echo "usage: $0 --builddir DIR [--out FILE] [--level N] [PROGRAM...]" >&2; exit 2 ;;
    *) progs+=("$1"); shift ;;
    esac
done
if [ -z "$builddir" ] || [ ! -f "$builddir/config.h" ]; then
    echo "gpu-bundle: --builddir must name a configured build tree" >&2
    exit 2
fi
builddir=$(cd "$builddir" && pwd)
if ! grep -q '^#define HAVE_CUDA 1' "$builddir/config.h"; then
    echo "gpu-bundle: $builddir is not a CUDA build (configure --with-cuda=yes)" >&2
    exit 1
fi
if [ ${#progs[@]} -eq 0 ]; then
    for p in tests/test-kernels tests/test-backend-ops tests/test-mixer-cuda tests/test-forward \
        bench/bench-forward mmsegd; do
        [ -x "$builddir/$p" ] && progs+=("$p")
    done
fi
[ ${#progs[@]} -gt 0 ] || { echo "gpu-bundle: no program built in $builddir" >&2; exit 1; }

# Sonames the target provides (never bundled): the glibc family, the C++ runtime, CUDA.
target_re='^(linux-vdso|linux-gate|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libutil\.so|libanl\.so|libmvec\.so|libstdc\+\+\.so|libgcc_s\.so|libcuda\.so|libcudart\.so|libcublas\.so|libcublasLt\.so|libcudnn[a-z_]*\.so|libnvrtc|libnvJitLink|libnvidia-)'

stage=$(mktemp -d "${TMPDIR:-/tmp}/gpu-bundle.XXXXXX")
trap 'rm -rf "$stage"' EXIT
b=$stage/bundle
mkdir -p "$b/lib"
declare -A target_libs=()
for p in "${progs[@]}"; do
    [ -x "$builddir/$p" ] || { echo "gpu-bundle: $builddir/$p is not built" >&2; exit 1; }
    mkdir -p "$b/$(dirname "$p")"
    cp "$builddir/$p" "$b/$p"
    strip --strip-debug "$b/$p"
    # ldd prints "soname => path (addr)", "path (addr)" or "soname => not found"
    while read -r name arrow path _; do
        if [ "$arrow" != "=>" ]; then
            continue # the loader itself or the vDSO
        fi
        if [[ $name =~ $target_re ]]; then
            [[ $name =~ ^(libc|libm|libdl|libpthread|librt|libresolv|libutil|libanl|libmvec)\.so|^(ld-linux|linux-) ]] ||
                target_libs[$name]=1
            continue
        fi
        if [ "$path" = "not" ]; then
            echo "gpu-bundle: $p needs $name, which does not resolve here" >&2
            exit 1
        fi
        [ -f "$b/lib/$name" ] || cp -L "$path" "$b/lib/$name"
    done < <(ldd "$builddir/$p")
done

mkdir -p "$b/tests" "$b/models" "$b/tools/mmunet"
cp -r tests/fixtures "$b/tests/"
cp tests/label_agreement.py "$b/tests/"
cp models/demo.safetensors "$b/models/"
cp tools/mmunet/*.py tools/mmunet/*.json "$b/tools/mmunet/"
# A phantom CT with its truth for device-check's whole-job step (numpy, scipy, nibabel).
if ! "${PYTHON3:-/usr/bin/python3}" tools/mmunet/phantom_series.py write --seed 1000 \
    --out "$b/phantom" --variants regular >"$stage/phantom.log" 2>&1; then
    echo "gpu-bundle: no phantom CT ($(tail -1 "$stage/phantom.log")): device-check will not" \
        "segment one" >&2
    rm -rf "$b/phantom"
fi

# The newest symbol versions the bundled files ask of the target's glibc and libstdc++.
need_ver() { # need_ver PREFIX: the highest PREFIX_x.y.z referenced by the bundle's ELF files
    find "$b" -type f \( -name '*.so*' -o -perm -u+x \) -print0 |
        xargs -0 objdump -T 2>/dev/null | grep -o "$1_[0-9][0-9.]*" | sort -u -V | tail -1
}
{
    echo "mmsegd GPU bundle"
    echo "revision: $(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "configure: $(sed -n 's/^ *\$ \(.*configure.*\)$/\1/p' "$builddir/config.log" | head -1)"
    echo "nvcc: $("$(sed -n "s/^NVCC='\(.*\)'$/\1/p" "$builddir/config.log" | head -1)" --version 2>/dev/null |
        sed -n 's/.*release \([0-9.]*\).*/\1/p')"
    echo "programs: ${progs[*]}"
    echo "target-libs: $(printf '%s\n' "${!target_libs[@]}" | sort | tr '\n' ' ')"
    echo "needs: $(need_ver GLIBC) $(need_ver GLIBCXX) $(need_ver CXXABI)"
    echo "files:"
    (cd "$b" && find . -type f ! -name MANIFEST -printf '%s %P\n' | sort -k2)
} >"$b/MANIFEST"

mkdir -p "$(dirname "$out")"
raw=$(du -sb "$b" | cut -f1)
tar -C "$stage" --owner=0 --group=0 --sort=name -cf - bundle | xz -"$level" -T1 >"$out.tmp"
mv "$out.tmp" "$out"
size=$(stat -c %s "$out")
echo "gpu-bundle: ${progs[*]}; $(ls "$b/lib" | wc -l) libraries;" \
    "$((raw / 1048576)) MiB unpacked"
echo "gpu-bundle: wrote $out: $size bytes ($((size / 1048576)) MiB)"
echo "gpu-bundle: from the target: $(printf '%s\n' "${!target_libs[@]}" | sort | tr '\n' ' ')"
