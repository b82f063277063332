/* infer: the CUDA backend's MIXER op, the bidirectional Mamba of a MetaBlock (mmunet.md 2.3,
 * 2.4, 3), the device twin of infer/ops-cpu/mamba.c.
 *
 * Each sample and each direction runs over token chunks of the mixer's own workspace: LN of
 * the chunk (kernels/layernorm.cu), in-projection (cuBLAS sgemm), causal depthwise conv and
 * SiLU with K-1 rows of history carried between chunks (kernels/conv1d.cu), x-projection and
 * dt-projection (sgemm), the fused selective scan with its state carried between chunks
 * (kernels/ssm-scan.cu), then the out-projection adds alpha times the result into dst. The
 * backward direction walks the chunks and the tokens from the end: no reversed copy.
 *
 * cuBLAS sees row-major data as its transpose: c (m, n) = a (m, k) b (n, k)^T is the
 * column-major c^T = b a^T, so every product is one sgemm(T, N) with no copy. The handle stays
 * in its default math mode, true fp32 without TF32 (mmunet.md 3.2); runs set the host
 * pointer mode (alpha and beta are host floats).
 *
 * Threads: one caller at a time, with the backend's device current. */
#include "infer/backend-cuda-impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "kernels/kernels.h"

#define WS_TARGET ((size_t)128 << 20) /* bytes of chunk buffers per mixer, before clamping */
#define CHUNK_MIN 4096
#define CHUNK_MAX 262144
#define ALIGN 256

enum wfield { W_IN, W_CONV_W, W_CONV_B, W_X, W_DT_W, W_DT_B, W_A, W_D, W_OUT, W__COUNT };

/* Byte offsets of everything in the mixer's one device allocation. */
struct layout {
    int64_t t;             /* tokens per chunk */
    size_t ln_w, ln_b;     /* SIZE_MAX without LN */
    size_t w[2][W__COUNT]; /* per direction; a shared tensor has one offset */
    size_t u, xe, hist, z, xc, p, dt, y, state, scratch;
    size_t scratch_bytes, total;
};

struct mms_cuda_mixer {
    struct layout lay;
    int64_t l, c, e, n, r, k; /* prepared for at most l tokens of this shape */
    int max_batch;
    char *mem; /* device, lay.total bytes */
};

static size_t
align_up(size_t n)
{
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

static const float *
w_host(const struct mms_mamba_w *w, int f)
{
    switch (f) {
    case W_IN:
        return w->in_proj;
    case W_CONV_W:
        return w->conv_w;
    case W_CONV_B:
        return w->conv_b;
    case W_X:
        return w->x_proj;
    case W_DT_W:
        return w->dt_w;
    case W_DT_B:
        return w->dt_b;
    case W_A:
        return w->a_log;
    case W_D:
        return w->d;
    default:
        return w->out_proj;
    }
}

/* Floats of weight field f. */
static size_t
w_floats(const struct mms_node *nd, int f)
{
    size_t c = (size_t)nd->u.mixer.c, e = (size_t)nd->u.mixer.e, n = (size_t)nd->u.mixer.n;
    size_t r = (size_t)nd->u.mixer.r, k = (size_t)nd->u.mixer.k;
    switch (f) {
    case W_IN:
        return 2 * e * c;
    case W_CONV_W:
        return e * k;
    case W_X:
        return (r + 2 * n) * e;
    case W_DT_W:
        return e * r;
    case W_A:
        return e * n;
    case W_OUT:
        return c * e;
    default:
        return e; /* conv_b, dt_b, D */
    }
}

static bool
node_ok(const struct mms_node *nd, int64_t l, int max_batch)
{
    if (nd == NULL || nd->op != MMS_OP_MIXER || l < 1 || max_batch < 1)
        return false;
    int64_t c = nd->u.mixer.c, e = nd->u.mixer.e, n = nd->u.mixer.n, r = nd->u.mixer.r;
    int64_t k = nd->u.mixer.k;
    if (c < 1 || c > 65536 || e < 1 || e > 262144 || n < 1 || n > MMS_K_SSM_NMAX || r < 1 ||
        r > 65536 || k < 1 || k > 64 || l > ((int64_t)1 << 40))
        return false;
    if ((nd->u.mixer.ln_w == NULL) != (nd->u.mixer.ln_b == NULL))
        return false;
    for (int d = 0; d < 2; d++)
        for (int f = 0; f < W__COUNT; f++)
            if (w_host(&nd->u.mixer.dir[d], f) == NULL)
                return false;
    return true;
}

/* The layout for node nd (checked) and l tokens per sample. Samples run one after the other
 * through the same workspace, so it does not grow with the batch. */
static void
plan(const struct mms_node *nd, int64_t l, struct layout *lay)
{
    const size_t f = sizeof(float);
    size_t c = (size_t)nd->u.mixer.c, e = (size_t)nd->u.mixer.e, n = (size_t)nd->u.mixer.n;
    size_t k = (size_t)nd->u.mixer.k, pr = (size_t)(nd->u.mixer.r + 2 * nd->u.mixer.n);
    size_t off = 0;

    memset(lay, 0, sizeof *lay);
    size_t per_token = f * (c + 5 * e + pr); /* u, xe, z, xc, p, dt, y */
    int64_t t = (int64_t)(WS_TARGET / per_token);
    t = t < CHUNK_MIN ? CHUNK_MIN : t > CHUNK_MAX ? CHUNK_MAX : t;
    lay->t = t < l ? t : l;
    size_t tt = (size_t)lay->t;

    lay->ln_w = lay->ln_b = SIZE_MAX;
    if (nd->u.mixer.ln_w != NULL) {
        lay->ln_w = off;
        off += align_up(c * f);
        lay->ln_b = off;
        off += align_up(c * f);
    }
    for (int d = 0; d < 2; d++)
        for (int w = 0; w < W__COUNT; w++) {
            /* a tensor both directions share (shared, vim_v2 in/out) is uploaded once */
            if (d == 1 && w_host(&nd->u.mixer.dir[1], w) == w_host(&nd->u.mixer.dir[0], w)) {
                lay->w[1][w] = lay->w[0][w];
                continue;
            }
            lay->w[d][w] = off;
            off += align_up(w_floats(nd, w) * f);
        }
    lay->u = off;
    off += align_up(tt * c * f);
    lay->xe = off;
    off += align_up((tt + k - 1) * e * f);
    lay->hist = off;
    off += align_up((k - 1) * e * f + f);
    lay->z = off;
    off += align_up(tt * e * f);
    lay->xc = off;
    off += align_up(tt * e * f);
    lay->p = off;
    off += align_up(tt * pr * f);
    lay->dt = off;
    off += align_up(tt * e * f);
    lay->y = off;
    off += align_up(tt * e * f);
    lay->state = off;
    off += align_up(n * e * f);
    lay->scratch = off;
    lay->scratch_bytes = mms_k_ssm_scan_scratch_bytes(lay->t, (int)e, (int)n);
    off += align_up(lay->scratch_bytes);
    lay->total = off;
}

size_t
mms__cuda_mixer_bytes(const struct mms_node *nd, int64_t l, int max_batch)
{
    struct layout lay;
    if (!node_ok(nd, l, max_batch))
        return 0;
    plan(nd, l, &lay);
    return lay.total;
}

int
mms__cuda_mixer_new(struct mms_cuda *cu, const struct mms_node *nd, int64_t l, int max_batch,
                    struct mms_cuda_mixer **out, size_t *bytes)
{
    struct mms_cuda_mixer *mx = NULL;
    float *a_host = NULL;
    cudaError_t ce;
    int rc;

    if (cu == NULL || out == NULL || bytes == NULL || !node_ok(nd, l, max_batch))
        return MMS_EINVAL;
    if (cu->lost)
        return MMS_ECUDA;
    if ((mx = calloc(1, sizeof *mx)) == NULL)
        return MMS_ENOMEM;
    plan(nd, l, &mx->lay);
    mx->l = l;
    mx->max_batch = max_batch;
    mx->c = nd->u.mixer.c;
    mx->e = nd->u.mixer.e;
    mx->n = nd->u.mixer.n;
    mx->r = nd->u.mixer.r;
    mx->k = nd->u.mixer.k;
    ce = cudaMalloc((void **)&mx->mem, mx->lay.total);
    if (ce == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* not sticky: clear it */
        mx->mem = NULL;
        rc = MMS_ENOMEM;
        goto fail;
    }
    if ((rc = MMS_CUDA_CHECK(ce)) < 0) {
        mx->mem = NULL;
        goto fail;
    }
    const struct layout *lay = &mx->lay;
    size_t c = (size_t)nd->u.mixer.c;
    if (lay->ln_w != SIZE_MAX &&
        ((rc = MMS_CUDA_CHECK(cudaMemcpyAsync(mx->mem + lay->ln_w, nd->u.mixer.ln_w,
                                              c * sizeof(float), cudaMemcpyHostToDevice,
                                              cu->stream))) < 0 ||
         (rc = MMS_CUDA_CHECK(cudaMemcpyAsync(mx->mem + lay->ln_b, nd->u.mixer.ln_b,
                                              c * sizeof(float), cudaMemcpyHostToDevice,
                                              cu->stream))) < 0))
        goto fail;
    size_t na = w_floats(nd, W_A);
    if ((a_host = malloc(2 * na * sizeof(float))) == NULL) {
        rc = MMS_ENOMEM;
        goto fail;
    }
    for (int d = 0; d < 2; d++)
        for (int w = 0; w < W__COUNT; w++) {
            if (d == 1 && lay->w[1][w] == lay->w[0][w])
                continue;
            const float *src = w_host(&nd->u.mixer.dir[d], w);
            if (w == W_A) { /* A = -exp(A_log), as the CPU backend computes it */
                float *a = a_host + (size_t)d * na;
                for (size_t i = 0; i < na; i++)
                    a[i] = -expf(src[i]);
                src = a;
            }
            if ((rc = MMS_CUDA_CHECK(cudaMemcpyAsync(mx->mem + lay->w[d][w], src,
                                                     w_floats(nd, w) * sizeof(float),
                                                     cudaMemcpyHostToDevice, cu->stream))) < 0)
                goto fail;
        }
    /* the host copies of A must outlive the copies */
    if ((rc = MMS_CUDA_CHECK(cudaStreamSynchronize(cu->stream))) < 0)
        goto fail;
    free(a_host);
    *bytes = lay->total;
    *out = mx;
    return 0;

fail:
    if (a_host != NULL) {
        (void)cudaStreamSynchronize(cu->stream); /* queued copies may still read a_host */
        free(a_host);
    }
    mms__cuda_mixer_free(mx);
    return rc;
}

void
mms__cuda_mixer_free(struct mms_cuda_mixer *mx)
{
    if (mx == NULL)
        return;
    if (mx->mem != NULL)
        (void)cudaFree(mx->mem);
    free(mx);
}

/* c (m, n; ldc) = alpha a (m, k; lda) b (n, k; ldb)^T + beta c, all row-major. */
static int
gemm_nt(struct mms_cuda *cu, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
        int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    return MMS_CUBLAS_CHECK(cublasSgemm(cu->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m,
                                        (int)k, &alpha, b, (int)ldb, a, (int)lda, &beta, c,
                                        (int)ldc));
}

/* One direction (0 forward, 1 backward) for one sample: dst (L, C) = alpha Mamba_dir(LN(src))
 * + beta dst, as mms__cpu_mamba_dir(). */
static int
mamba_dir(struct mms_cuda *cu, const struct mms_node *nd, struct mms_cuda_mixer *mx, int dir,
          int64_t l, const float *src, float *dst, float beta, float *const taps[MMS_TAP__COUNT])
{
    const int64_t C = nd->u.mixer.c, E = nd->u.mixer.e, N = nd->u.mixer.n, R = nd->u.mixer.r;
    const int64_t K = nd->u.mixer.k, PR = R + 2 * N;
    const struct layout *lay = &mx->lay;
    const int64_t T = lay->t;
    char *base = mx->mem;
    float *u = (float *)(base + lay->u), *xe = (float *)(base + lay->xe);
    float *hist = (float *)(base + lay->hist), *z = (float *)(base + lay->z);
    float *xc = (float *)(base + lay->xc), *p = (float *)(base + lay->p);
    float *dt = (float *)(base + lay->dt), *y = (float *)(base + lay->y);
    float *state = (float *)(base + lay->state);
    const float *w[W__COUNT];
    const size_t hist_bytes = (size_t)((K - 1) * E) * sizeof(float);
    const bool back = dir == 1;
    int rc;

    for (int f = 0; f < W__COUNT; f++)
        w[f] = (const float *)(base + lay->w[dir][f]);
    if ((rc = MMS_CUDA_CHECK(
             cudaMemsetAsync(state, 0, (size_t)(N * E) * sizeof(float), cu->stream))) < 0 ||
        (hist_bytes > 0 &&
         (rc = MMS_CUDA_CHECK(cudaMemsetAsync(hist, 0, hist_bytes, cu->stream))) < 0))
        return rc;
    float *tap_delta = taps != NULL ? taps[back ? MMS_TAP_DELTA_B : MMS_TAP_DELTA] : NULL;
    float *tap_y = taps != NULL ? taps[back ? MMS_TAP_YPRE_B : MMS_TAP_YPRE] : NULL;
    if (tap_y == NULL)
        tap_delta = NULL; /* as the CPU backend: delta is tapped only beside y */
    for (int64_t done = 0; done < l; done += T) {
        int64_t t0 = back ? (l - done - T > 0 ? l - done - T : 0) : done;
        int64_t t1 = back ? l - done : (done + T < l ? done + T : l);
        int64_t m = t1 - t0;
        if (lay->ln_w != SIZE_MAX) {
            struct mms_k_layernorm_args la = {
                .x = src + t0 * C,
                .u = u,
                .m = m,
                .c = (int)C,
                .w = (const float *)(base + lay->ln_w),
                .b = (const float *)(base + lay->ln_b),
                .eps = nd->u.mixer.ln_eps,
            };
            if ((rc = mms_k_layernorm(&la, cu->stream)) < 0)
                return rc;
        } else if ((rc = MMS_CUDA_CHECK(
                        cudaMemcpyAsync(u, src + t0 * C, (size_t)(m * C) * sizeof(float),
                                        cudaMemcpyDeviceToDevice, cu->stream))) < 0) {
            return rc; /* a bare Mamba (tests) */
        }
        if (!back && taps != NULL && taps[MMS_TAP_LN] != NULL &&
            (rc = MMS_CUDA_CHECK(cudaMemcpyAsync(taps[MMS_TAP_LN] + t0 * C, u,
                                                 (size_t)(m * C) * sizeof(float),
                                                 cudaMemcpyDeviceToDevice, cu->stream))) < 0)
            return rc;
        float *xrows = back ? xe : xe + (K - 1) * E;
        float *hrows = back ? xe + m * E : xe;
        if ((rc = gemm_nt(cu, m, E, C, 1.0f, u, C, w[W_IN], C, 0.0f, xrows, E)) < 0 ||
            (rc = gemm_nt(cu, m, E, C, 1.0f, u, C, w[W_IN] + E * C, C, 0.0f, z, E)) < 0)
            return rc;
        if (hist_bytes > 0 &&
            (rc = MMS_CUDA_CHECK(cudaMemcpyAsync(hrows, hist, hist_bytes, cudaMemcpyDeviceToDevice,
                                                 cu->stream))) < 0)
            return rc;
        struct mms_k_conv1d_args ca = {
            .xe = xe,
            .xc = xc,
            .m = m,
            .e = (int)E,
            .k = (int)K,
            .w = w[W_CONV_W],
            .b = w[W_CONV_B],
            .backward = back,
        };
        if ((rc = mms_k_conv1d_silu(&ca, cu->stream)) < 0)
            return rc;
        /* the last K-1 rows in the direction's order are the next chunk's history */
        if (hist_bytes > 0 &&
            (rc = MMS_CUDA_CHECK(cudaMemcpyAsync(hist, back ? xe : xe + m * E, hist_bytes,
                                                 cudaMemcpyDeviceToDevice, cu->stream))) < 0)
            return rc;
        if ((rc = gemm_nt(cu, m, PR, E, 1.0f, xc, E, w[W_X], E, 0.0f, p, PR)) < 0 ||
            (rc = gemm_nt(cu, m, E, R, 1.0f, p, PR, w[W_DT_W], R, 0.0f, dt, E)) < 0)
            return rc;
        struct mms_k_ssm_scan_args sa = {
            .m = m,
            .e = (int)E,
            .n = (int)N,
            .backward = back,
            .x = xc,
            .dt = dt,
            .b = p + R,
            .c = p + R + N,
            .ldbc = PR,
            .z = z,
            .dt_b = w[W_DT_B],
            .a = w[W_A],
            .d = w[W_D],
            .y = y,
            .state = state,
            .tap_delta = tap_delta,
            .tap_y = tap_y,
            /* the backward taps are in reversed token order, as the reference writes them */
            .tap_row0 = back ? l - 1 - t0 : t0,
            .tap_step = back ? -1 : 1,
            .scratch = base + lay->scratch,
        };
        if ((rc = mms_k_ssm_scan(&sa, cu->stream)) < 0)
            return rc;
        if ((rc = gemm_nt(cu, m, C, E, nd->u.mixer.alpha, y, E, w[W_OUT], E, beta, dst + t0 * C,
                          C)) < 0)
            return rc;
    }
    return 0;
}

int
mms__cuda_mixer_run(struct mms_cuda *cu, const struct mms_node *nd, struct mms_cuda_mixer *mx,
                    int64_t l, int n, const float *src, float *dst, size_t stride,
                    float *const taps[MMS_TAP__COUNT])
{
    int rc;

    if (cu == NULL || mx == NULL || !node_ok(nd, l, 1) || n < 1 || n > mx->max_batch || l > mx->l ||
        src == NULL || dst == NULL || (taps != NULL && n != 1) ||
        (n > 1 && stride < (size_t)(l * nd->u.mixer.c)))
        return MMS_EINVAL;
    if (nd->u.mixer.c != mx->c || nd->u.mixer.e != mx->e || nd->u.mixer.n != mx->n ||
        nd->u.mixer.r != mx->r || nd->u.mixer.k != mx->k)
        return MMS_EINVAL; /* prepared for another node */
    if (cu->lost)
        return MMS_ECUDA;
    /* alpha and beta of the sgemms are host floats */
    if ((rc = MMS_CUBLAS_CHECK(cublasSetPointerMode(cu->cublas, CUBLAS_POINTER_MODE_HOST))) < 0)
        return rc;
    const int64_t lc = l * nd->u.mixer.c;
    for (int i = 0; i < n; i++) {
        const float *s = src + (size_t)i * stride;
        float *d = dst + (size_t)i * stride;
        if ((rc = mamba_dir(cu, nd, mx, 0, l, s, d, 0.0f, taps)) < 0 ||
            (rc = mamba_dir(cu, nd, mx, 1, l, s, d, 1.0f, taps)) < 0)
            return rc;
        if (taps != NULL && taps[MMS_TAP_MIXER] != NULL &&
            (rc = MMS_CUDA_CHECK(cudaMemcpyAsync(taps[MMS_TAP_MIXER], d, (size_t)lc * sizeof(float),
                                                 cudaMemcpyDeviceToDevice, cu->stream))) < 0)
            return rc;
        if (nd->u.mixer.inner_residual && (rc = mms_k_add(d, s, lc, cu->stream)) < 0)
            return rc;
    }
    return 0;
}
