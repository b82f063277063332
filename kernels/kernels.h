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

#include "kernels/window-math.h"

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

/* dst (d t0, h t1, w t2, cout) = the transposed convolution of src (d, h, w, cin) with kernel
 * = stride t and no padding, plus bias:
 *   dst[(z t0 + i0, y t1 + i1, x t2 + i2), o] = bias[o] + sum_c src[(z, y, x), c] wei[i, c, o]
 * with i = (i0 t1 + i1) t2 + i2, summed in fp32 in order of c. wei is (t0, t1, t2, cin, cout):
 * PyTorch's ConvTranspose3d weight (cin, cout, t0, t1, t2) reordered. src and dst do not
 * overlap; stride is at least either tensor's size when n > 1. */
struct mms_k_deconv_args {
    const float *src;
    float *dst;
    const float *wei;  /* (t0, t1, t2, cin, cout) */
    const float *bias; /* (cout), or NULL: no bias */
    int64_t d, h, w, cin, cout;
    int t[3];
    int n;
    size_t stride;
};
int mms_k_deconv(const struct mms_k_deconv_args *a, cudaStream_t s);

/* dst (d / t0, h / t1, w / t2, c) = the mean of each non-overlapping (t0, t1, t2) window of
 * src (d, h, w, c) (kernel = stride t, no padding; t divides d, h, w): the fp32 sum over the
 * window in (i0, i1, i2) order divided by t0 t1 t2. src and dst do not overlap. */
struct mms_k_avgpool_args {
    const float *src;
    float *dst;
    int64_t d, h, w, c; /* src's shape */
    int t[3];
    int n;
    size_t stride;
};
int mms_k_avgpool(const struct mms_k_avgpool_args *a, cudaStream_t s);

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
/* u (m, c) = LN of each of the m tokens of x (m, c) over its c channels, with weight w and
 * bias b (c) (mmunet.md 2.3): (x - mean) / sqrt(var + eps) * w + b, the variance over c. */
struct mms_k_layernorm_args {
    const float *x; /* (m, c) */
    float *u;       /* (m, c), may not overlap x */
    int64_t m;
    int c;
    const float *w, *b; /* (c) */
    float eps;
};

int mms_k_layernorm(const struct mms_k_layernorm_args *a, cudaStream_t s);

/* xc (m, e) = SiLU(b + causal depthwise conv of x) (mmunet.md 3.1), each channel over k taps.
 * xe holds m + k - 1 rows of e channels: forward, the k - 1 rows of history (the tokens
 * before the chunk) then the m tokens, and out[i] = sum_j w[j] xe[i + j]; backward (the
 * direction that reads tokens from the end), the m tokens then the k - 1 rows of history
 * (the tokens after the chunk), and out[i] = sum_j w[k - 1 - j] xe[i + j]. */
struct mms_k_conv1d_args {
    const float *xe; /* (m + k - 1, e) */
    float *xc;       /* (m, e) */
    int64_t m;
    int e, k;
    const float *w; /* (e, k): the weight of conv1d, (E, 1, K) */
    const float *b; /* (e) */
    int backward;
};

int mms_k_conv1d_silu(const struct mms_k_conv1d_args *a, cudaStream_t s);

/* The fused selective scan of one direction over m tokens (mmunet.md 3.1, 3.4), for e
 * channels and a state of n (<= MMS_K_SSM_NMAX) per channel. Step s visits token
 * i = s forward, i = m - 1 - s backward; for each channel:
 *   delta = softplus(dt[i] + dt_b), h = exp(delta A) h + delta x[i] B[i], y = C[i].h + D x[i],
 *   out[i] = y SiLU(z[i]) (y alone when z is NULL).
 * The tokens are cut in segments scanned in parallel: zero-started segment summaries, the
 * carries between them, then the outputs from the true start states (all fp32). */
#define MMS_K_SSM_NMAX 64
struct mms_k_ssm_scan_args {
    int64_t m;
    int e, n;
    int backward;
    const float *x;  /* (m, e): SiLU(conv) */
    const float *dt; /* (m, e): dt_proj without its bias */
    const float *b;  /* B of token i at b + i * ldbc, n floats */
    const float *c;  /* C of token i at c + i * ldbc, n floats */
    int64_t ldbc;
    const float *z;    /* (m, e) gate input, or NULL */
    const float *dt_b; /* (e) */
    const float *a;    /* (e, n): A = -exp(A_log) */
    const float *d;    /* (e) */
    float *y;          /* (m, e) */
    float *state;      /* (n, e): the state before step 0; receives the state after step m-1 */
    float *tap_delta;  /* delta of token i at row tap_row0 + tap_step * i, (., e), or NULL */
    float *tap_y;      /* y before the gate, same rows, or NULL */
    int64_t tap_row0, tap_step;
    void *scratch; /* mms_k_ssm_scan_scratch_bytes(m, e, n) bytes of device memory */
};

/* Device scratch bytes mms_k_ssm_scan() needs for any run of at most m tokens, e channels
 * and a state of n; 0 when an argument is below 1. */
size_t mms_k_ssm_scan_scratch_bytes(int64_t m, int e, int n);

int mms_k_ssm_scan(const struct mms_k_ssm_scan_args *a, cudaStream_t s);

/* x[i] += y[i] for i < n (device pointers). */
int mms_k_add(float *x, const float *y, int64_t n, cudaStream_t s);

/* The sliding window (kernels/window-math.h): dst (w->p voxels) = the tile w of vol, mirrored;
 * and for ch < channels, acc[ch * pv + volume offset of i] += term(gauss[tile voxel of i],
 * src[ch * patch + i], scale). The tile's voxels map to distinct places, so one launch has
 * no races; launches on one stream add in their order. */
int mms_k_window_gather(const float *vol, const struct mms_k_window *w, float *dst, cudaStream_t s);
int mms_k_window_scatter(const float *src, int channels, const float *gauss, float scale,
                         const struct mms_k_window *w, int64_t pv, float *acc, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
