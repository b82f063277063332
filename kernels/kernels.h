/* CUDA kernels, called by the CUDA backend. Plain C; only the CUDA runtime API types.
 * Every entry validates its arguments, launches on the given stream, checks
 * cudaGetLastError() and returns 0 or an MMS_E* code (MMS_EINVAL, MMS_ECUDA). Launches are
 * asynchronous: results are ready after the stream is synchronized.
 * Threads: any thread with the stream's device current. */
#ifndef MMS_KERNELS_KERNELS_H
#define MMS_KERNELS_KERNELS_H

#include <cuda_runtime_api.h>
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

#ifdef __cplusplus
}
#endif

#endif
