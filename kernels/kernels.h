/* CUDA kernels, called by the CUDA backend. Plain C; only the CUDA runtime API types.
 * Every entry validates its arguments, launches on the given stream, checks
 * cudaGetLastError() and returns 0 or an MMS_E* code (MMS_EINVAL, MMS_ECUDA). Launches are
 * asynchronous: results are ready after the stream is synchronized.
 * Threads: any thread with the stream's device current. */
#ifndef MMS_KERNELS_KERNELS_H
#define MMS_KERNELS_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum mms_k_dtype { MMS_K_I16, MMS_K_U16 };

/* y[i] = x[i] * slope + intercept for i < n: stored pixel values (int16 or uint16, as Pixel
 * Representation says) to Hounsfield units. x and y are device pointers, not overlapping. */
struct mms_k_rescale_args {
    const void *x; /* (n,) of dtype */
    float *y;      /* (n,) */
    int64_t n;
    enum mms_k_dtype dtype;
    float slope;
    float intercept;
};

int mms_k_rescale(const struct mms_k_rescale_args *a, cudaStream_t s);

/* ------------------------------------------------------------------ the CUDA backend's ops
 * Batched ops run on n samples: sample i of a tensor starts at its pointer + i * stride
 * (stride in elements of the tensor's type). Every pointer is device memory. */

/* Storage types of convolution inputs and outputs. */
enum mms_k_ftype { MMS_K_F32, MMS_K_BF16, MMS_K_F16 };

/* Instance norm in place over x (n samples of (l, c), c fastest), per sample and channel:
 * fp64 sum and sum of squares (per chunk of tokens, chunks added in a fixed order, so runs
 * are bitwise repeatable), biased variance, then x = x * scale + shift (scale = gamma /
 * sqrt(var + eps), shift = beta - mean * scale), then LReLU(slope) when lrelu.
 * ws: device workspace of mms_k_instnorm_ws_bytes(c, n) bytes. */
#define MMS_K_IN_CHUNKS 1024
static inline size_t
mms_k_instnorm_ws_bytes(int64_t c, int n)
{
    return (size_t)n * (size_t)c *
           ((size_t)MMS_K_IN_CHUNKS * 2 * sizeof(double) + 2 * sizeof(float));
}
struct mms_k_instnorm_args {
    float *x;
    int64_t l, c;
    int n;
    size_t stride;
    const float *gamma, *beta; /* (c) */
    float eps;
    bool lrelu;
    float slope;
    void *ws;
};
int mms_k_instnorm(const struct mms_k_instnorm_args *a, cudaStream_t s);

/* x = LReLU(x + y), count elements per sample, n samples. */
struct mms_k_add_lrelu_args {
    float *x;
    const float *y;
    int64_t count;
    int n;
    size_t stride;
    float slope;
};
int mms_k_add_lrelu(const struct mms_k_add_lrelu_args *a, cudaStream_t s);

/* dst (D, H, W, flo + fskip) = concat(NearestUp_up(lo (ld, lh, lw, flo)), skip (D, H, W,
 * fskip)): output voxel (z, y, x) reads lo voxel (z / up[0], y / up[1], x / up[2]). */
struct mms_k_up_concat_args {
    const float *lo, *skip;
    float *dst;
    int64_t ld, lh, lw, flo;
    int64_t d, h, w, fskip;
    int up[3];
    int n;
    size_t stride;
};
int mms_k_up_concat(const struct mms_k_up_concat_args *a, cudaStream_t s);

/* dst (cols, rows) = src (rows, cols) transposed, n samples. */
struct mms_k_transpose_args {
    const float *src;
    float *dst;
    int64_t rows, cols;
    int n;
    size_t stride;
};
int mms_k_transpose(const struct mms_k_transpose_args *a, cudaStream_t s);

/* dst (count, of type to: MMS_K_BF16 or MMS_K_F16) = src (count floats), rounded to nearest
 * even. One tensor (no batch). */
struct mms_k_cast_args {
    const float *src;
    void *dst;
    int64_t count;
    enum mms_k_ftype to;
};
int mms_k_cast(const struct mms_k_cast_args *a, cudaStream_t s);

/* The end of a convolution, one sample of l tokens and c channels: dst = y + bias, or with
 * accumulate dst = LReLU(y + bias + dst). y has type ytype; y may equal dst when ytype is
 * MMS_K_F32 (in place). */
struct mms_k_conv_epilogue_args {
    const void *y;
    enum mms_k_ftype ytype;
    float *dst;
    const float *bias; /* (c) */
    int64_t l, c;
    bool accumulate;
    float slope;
};
int mms_k_conv_epilogue(const struct mms_k_conv_epilogue_args *a, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
