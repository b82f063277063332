#!/bin/bash
# The module dependency arrows of style.md, checked on the includes:
#   daemon/ -> dicom/ infer/ common/;  dicom/ -> common/;  infer/ -> kernels/ common/;
#   kernels/ -> common/;  common/ -> nothing of ours.
# Also: libuv only in daemon/, DCMTK and GDCM only in dicom/*.cc and dicom/*-impl.hh, and
# HAVE_CUDA only in infer/backend-reg.c (and the build files).
set -u
cd "${srcdir:-.}" || exit 1

n=0
failed=0
check() { # check DESCRIPTION OFFENDING-LINES
    n=$((n + 1))
    if [ -z "$2" ]; then
        echo "ok $n - $1"
    else
        echo "not ok $n - $1"
        printf '%s\n' "$2" | sed 's/^/# /'
        failed=1
    fi
}
sources() { # sources DIR...: C, C++ and CUDA files under the given folders
    find "$@" \( -name '*.c' -o -name '*.h' -o -name '*.cc' -o -name '*.hh' -o -name '*.cu' \) \
        -print 2>/dev/null | LC_ALL=C sort
}
includes_of() { # includes_of DIR ALLOWED-REGEX: project includes not matching ALLOWED
    local files
    files=$(sources "$1")
    [ -n "$files" ] || return 0
    grep -nE '^#[[:space:]]*include[[:space:]]+"' $files |
        grep -vE "#[[:space:]]*include[[:space:]]+\"($2)/" || true
}

echo "1..8"
check "common/ includes nothing above it" "$(includes_of common 'common')"
check "kernels/ includes only kernels/ and common/" "$(includes_of kernels 'kernels|common')"
check "dicom/ includes only dicom/ and common/" "$(includes_of dicom 'dicom|common')"
check "infer/ includes only infer/, kernels/ and common/" "$(includes_of infer 'infer|kernels|common')"
check "daemon/ includes only daemon/, dicom/, infer/ and common/" \
    "$(includes_of daemon 'daemon|dicom|infer|common')"
files=$(sources common dicom infer kernels tests)
check "libuv is used only in daemon/" "$( [ -n "$files" ] && grep -nE '#[[:space:]]*include[[:space:]]*<uv\.h>' $files)"
files=$(sources common daemon infer kernels tests; find dicom -name '*.h' 2>/dev/null)
check "DCMTK and GDCM only in dicom/*.cc and dicom/*-impl.hh" \
    "$( [ -n "$files" ] && grep -nE '#[[:space:]]*include[[:space:]]*[<"](dcmtk/|gdcm)' $files)"
files=$(sources common daemon dicom infer kernels tests | grep -v '^infer/backend-reg\.c$')
check "HAVE_CUDA only in infer/backend-reg.c" "$( [ -n "$files" ] && grep -n 'HAVE_CUDA' $files)"
exit $failed
