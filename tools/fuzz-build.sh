#!/bin/bash
# Build the configuration and model-loader fuzz targets (tests/fuzz/fuzz-config.c,
# tests/fuzz/fuzz-model.c) with clang: libFuzzer + ASan + UBSan, and the same sources with
# tests/fuzz/replay.c as plain programs that replay a corpus or a crash file.
#
#   tools/fuzz-build.sh [BUILD_DIR [OUT_DIR]]
#
# BUILD_DIR is a configured build tree (its config.h is used; default _build/x); OUT_DIR
# receives fuzz-config, fuzz-model, replay-config, replay-model and the seed corpora
# corpus-config/ (etc/*.ini) and corpus-model/ (the model fixtures, malformed ones included).
# Run, one at a time:  OUT_DIR/fuzz-model -max_total_time=120 -rss_limit_mb=2048 OUT_DIR/corpus-model
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/_build/x}
out=${2:-$build/fuzz}
CC=${CC:-clang-14}
[ -f "$build/config.h" ] || { echo "fuzz-build: $build/config.h: configure first" >&2; exit 2; }
mkdir -p "$out/corpus-config" "$out/corpus-model"
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
flags="-std=gnu11 -g -O1 -include $build/config.h -I$src -I$build"
common="$src/common/err.c $src/common/log.c $src/common/sha256.c"
cfg_srcs="$src/tests/fuzz/fuzz-config.c $src/daemon/config.c $common"
model_srcs="$src/tests/fuzz/fuzz-model.c $src/infer/model.c $src/infer/safetensors.c
    $src/infer/json.c $src/infer/card.c $src/infer/graph.c $common"
cfg_libs="$(pkg-config --libs inih 2>/dev/null || echo -linih)"
model_libs="$(pkg-config --libs libcjson 2>/dev/null || echo -lcjson) -lm -lpthread"
# shellcheck disable=SC2086
{
    $CC $flags $san -fsanitize=fuzzer -o "$out/fuzz-config" $cfg_srcs $cfg_libs
    $CC $flags $san -fsanitize=fuzzer -o "$out/fuzz-model" $model_srcs $model_libs
    $CC $flags $san -o "$out/replay-config" $cfg_srcs "$src/tests/fuzz/replay.c" $cfg_libs
    $CC $flags $san -o "$out/replay-model" $model_srcs "$src/tests/fuzz/replay.c" $model_libs
}
cp "$src"/etc/*.ini "$out/corpus-config/" 2>/dev/null || true
for f in "$src"/tests/fixtures/mmunet/*.safetensors "$src"/models/demo.safetensors \
    "$src"/tests/fixtures/mmunet/malformed/*.safetensors; do
    [ -f "$f" ] || continue
    # the large ones would slow every mutation down; the small fixtures cover the format
    [ "$(stat -c %s "$f")" -le $((4 << 20)) ] && cp "$f" "$out/corpus-model/$(basename "$(dirname "$f")")-$(basename "$f")"
done
echo "fuzz-build: $out: fuzz-config fuzz-model replay-config replay-model"
