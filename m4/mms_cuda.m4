# MMS_CHECK_CUDA
# --------------
# --with-cuda=auto|yes|no (default auto) and --with-cuda-arch=LIST.
# Probes nvcc, cuda_runtime.h, cudnn.h, cublas_v2.h and -lcudart -lcudnn -lcublas under
# $CUDA_HOME (default /usr/local/cuda), saving and restoring CPPFLAGS, LDFLAGS and LIBS.
# "yes" fails naming what is missing; "auto" reports it in the summary and builds without CUDA;
# "no" probes nothing. No GPU is needed: only compiling and linking is tested.
# Sets: HAVE_CUDA (define and conditional), NVCC, NVCCFLAGS, CUDA_CPPFLAGS, CUDA_LDFLAGS,
# CUDA_LIBS, CUDA_ARCH_FLAGS and mms_cuda_summary.
AC_DEFUN([MMS_CHECK_CUDA], [
AC_ARG_WITH([cuda],
    [AS_HELP_STRING([--with-cuda=auto|yes|no],
                    [build the CUDA backend and kernels (default: auto)])],
    [], [with_cuda=auto])
AS_CASE([$with_cuda], [auto|yes|no], [],
    [AC_MSG_ERROR([--with-cuda takes auto, yes or no, not '$with_cuda' (set CUDA_HOME for another location)])])
AC_ARG_WITH([cuda-arch],
    [AS_HELP_STRING([--with-cuda-arch=LIST],
                    [comma list of compute capabilities to build SASS for, plus PTX of the last (default: 90)])],
    [], [with_cuda_arch=90])
AC_ARG_VAR([CUDA_HOME], [CUDA toolkit root (default: /usr/local/cuda)])
AC_ARG_VAR([NVCC], [CUDA compiler (default: $CUDA_HOME/bin/nvcc)])

mms_cuda_ok=no
mms_cuda_missing=
mms_cuda_summary="no (--with-cuda=no)"
AS_IF([test "x$with_cuda" != xno], [
    : ${CUDA_HOME:=/usr/local/cuda}
    AS_IF([test -z "$NVCC"],
        [AC_PATH_PROG([NVCC], [nvcc], [], [$CUDA_HOME/bin$PATH_SEPARATOR$PATH])])
    AS_IF([test -z "$NVCC"], [mms_cuda_missing="$mms_cuda_missing nvcc"])

    dnl Some machines also link the toolkit into /usr/local/include and the library path:
    dnl what the compiler finds there counts, and the summary says where it came from.
    CUDA_CPPFLAGS=
    CUDA_LDFLAGS=
    mms_cuda_where="on the compiler's default paths ($CUDA_HOME does not exist)"
    AS_IF([test -d "$CUDA_HOME/include"], [
        CUDA_CPPFLAGS="-I$CUDA_HOME/include"
        CUDA_LDFLAGS="-L$CUDA_HOME/lib64 -Wl,-rpath,$CUDA_HOME/lib64"
        mms_cuda_where="at $CUDA_HOME"])
    mms_save_CPPFLAGS=$CPPFLAGS
    mms_save_LDFLAGS=$LDFLAGS
    mms_save_LIBS=$LIBS
    CPPFLAGS="$CPPFLAGS $CUDA_CPPFLAGS"
    LDFLAGS="$LDFLAGS $CUDA_LDFLAGS"
    dnl AC_CHECK_HEADER caches by name; a cached "no" from another prefix must not stick.
    AS_UNSET([ac_cv_header_cuda_runtime_h])
    AS_UNSET([ac_cv_header_cudnn_h])
    AS_UNSET([ac_cv_header_cublas_v2_h])
    AC_CHECK_HEADER([cuda_runtime.h], [], [mms_cuda_missing="$mms_cuda_missing cuda_runtime.h"])
    AC_CHECK_HEADER([cudnn.h], [], [mms_cuda_missing="$mms_cuda_missing cudnn.h"])
    AC_CHECK_HEADER([cublas_v2.h], [], [mms_cuda_missing="$mms_cuda_missing cublas_v2.h"])
    AC_CHECK_LIB([cudart], [cudaGetDeviceCount], [:], [mms_cuda_missing="$mms_cuda_missing -lcudart"])
    AC_CHECK_LIB([cudnn], [cudnnCreate], [:], [mms_cuda_missing="$mms_cuda_missing -lcudnn"])
    AC_CHECK_LIB([cublas], [cublasCreate_v2], [:], [mms_cuda_missing="$mms_cuda_missing -lcublas"])
    CPPFLAGS=$mms_save_CPPFLAGS
    LDFLAGS=$mms_save_LDFLAGS
    LIBS=$mms_save_LIBS

    AS_IF([test -z "$mms_cuda_missing"], [
        mms_cuda_ok=yes
        CUDA_LIBS="-lcublas -lcudnn -lcudart"
        CUDA_ARCH_FLAGS=
        mms_last_arch=
        for mms_arch in `echo "$with_cuda_arch" | tr ',' ' '`; do
            AS_CASE([$mms_arch], [[[1-9][0-9]]|[[1-9][0-9][0-9]]|[[1-9][0-9]a]|[[1-9][0-9][0-9]a]], [],
                [AC_MSG_ERROR([--with-cuda-arch: '$mms_arch' is not a compute capability such as 90])])
            CUDA_ARCH_FLAGS="$CUDA_ARCH_FLAGS -gencode arch=compute_$mms_arch,code=sm_$mms_arch"
            mms_last_arch=$mms_arch
        done
        AS_IF([test -z "$mms_last_arch"], [AC_MSG_ERROR([--with-cuda-arch is empty])])
        CUDA_ARCH_FLAGS="$CUDA_ARCH_FLAGS -gencode arch=compute_$mms_last_arch,code=compute_$mms_last_arch"
        mms_cuda_version=`"$NVCC" --version 2>/dev/null | sed -n 's/.*release \([[0-9.]]*\).*/\1/p'`
        mms_cuda_summary="yes (CUDA $mms_cuda_version $mms_cuda_where; sm_$with_cuda_arch + PTX compute_$mms_last_arch)"
        AC_DEFINE([HAVE_CUDA], [1], [Define to 1 to build the CUDA backend and kernels.])
    ], [
        AS_IF([test "x$with_cuda" = xyes],
            [AC_MSG_ERROR([--with-cuda=yes but missing under CUDA_HOME=$CUDA_HOME:$mms_cuda_missing])])
        mms_cuda_summary="no (not found:$mms_cuda_missing)"
        CUDA_CPPFLAGS=
        CUDA_LDFLAGS=
    ])
])
: ${NVCCFLAGS:=-O3 -std=c++17}
AC_SUBST([NVCCFLAGS])
AC_SUBST([CUDA_CPPFLAGS])
AC_SUBST([CUDA_LDFLAGS])
AC_SUBST([CUDA_LIBS])
AC_SUBST([CUDA_ARCH_FLAGS])
AM_CONDITIONAL([HAVE_CUDA], [test "x$mms_cuda_ok" = xyes])
])
