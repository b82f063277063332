/* Instance norm (+ LReLU) on the device, per sample and channel over all tokens of a tile
 * (mmunet.md 2.3, 3.2). Statistics in fp64 like the CPU backend: each block sums one chunk
 * of tokens, the chunks are added in order by one thread per channel, so the result does not
 * depend on scheduling (no atomics) and runs repeat bit for bit. */
#include "kernels/kernels.h"

#include "common/err.h"
#include "common/log.h"
#include "kernels/eltwise-math.h"

#define TX 32
#define TY 8

/* Block (TX, TY) sums chunk blockIdx.x of sample blockIdx.y into part[sample][chunk][2][c]. */
static __global__ void
instnorm_stats_kernel(const float *__restrict__ x, int64_t l, int64_t c, int chunks, size_t stride,
                      double *__restrict__ part)
{
    __shared__ double sh_s[TY][TX], sh_q[TY][TX];
    int k = blockIdx.x, smp = blockIdx.y, tx = threadIdx.x, ty = threadIdx.y;
    const float *xs = x + (size_t)smp * stride;
    int64_t t0 = l * k / chunks, t1 = l * (k + 1) / chunks;
    double *out = part + ((size_t)smp * chunks + k) * 2 * (size_t)c;
    for (int64_t c0 = 0; c0 < c; c0 += TX) {
        int64_t ch = c0 + tx;
        double s = 0.0, q = 0.0;
        if (ch < c) {
            for (int64_t t = t0 + ty; t < t1; t += TY) {
                double v = xs[t * c + ch];
                s += v;
                q += v * v;
            }
        }
        sh_s[ty][tx] = s;
        sh_q[ty][tx] = q;
        __syncthreads();
        if (ty == 0 && ch < c) {
            for (int j = 1; j < TY; j++) {
                s += sh_s[j][tx];
                q += sh_q[j][tx];
            }
            out[ch] = s;
            out[c + ch] = q;
        }
        __syncthreads();
    }
}

/* One thread per (sample, channel): chunks in order, then scale and shift. */
static __global__ void
instnorm_coef_kernel(const double *__restrict__ part, int64_t l, int64_t c, int chunks, int n,
                     const float *__restrict__ gamma, const float *__restrict__ beta, float eps,
                     float *__restrict__ coef)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n * c)
        return;
    int64_t smp = i / c, ch = i % c;
    double s = 0.0, q = 0.0;
    for (int k = 0; k < chunks; k++) {
        const double *p = part + ((size_t)smp * chunks + k) * 2 * (size_t)c;
        s += p[ch];
        q += p[c + ch];
    }
    float sc, sh;
    mms_norm_coef(s, q, (double)l, gamma[ch], beta[ch], eps, &sc, &sh);
    coef[smp * 2 * c + ch] = sc;
    coef[smp * 2 * c + c + ch] = sh;
}

/* I is the index type: 32-bit unsigned when the tensor allows (a cheaper channel modulo). */
template <typename I>
static __global__ void
instnorm_apply_kernel(float *__restrict__ x, I count, I c, size_t stride,
                      const float *__restrict__ coef, bool lrelu, float slope)
{
    int smp = blockIdx.y;
    float *xs = x + (size_t)smp * stride;
    const float *sc = coef + (size_t)smp * 2 * c, *sh = sc + c;
    I step = (I)gridDim.x * blockDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step) {
        I ch = i % c;
        xs[i] = mms_norm_apply(xs[i], sc[ch], sh[ch], lrelu, slope);
    }
}

static void
instnorm_launch(const struct mms_k_instnorm_args *a, cudaStream_t s)
{
    int chunks = a->l < MMS_K_IN_CHUNKS ? (int)a->l : MMS_K_IN_CHUNKS;
    double *part = (double *)a->ws;
    float *coef = (float *)((char *)a->ws +
                            (size_t)a->n * (size_t)a->c * MMS_K_IN_CHUNKS * 2 * sizeof(double));
    instnorm_stats_kernel<<<dim3((unsigned)chunks, (unsigned)a->n), dim3(TX, TY), 0, s>>>(
        a->x, a->l, a->c, chunks, a->stride, part);
    int64_t nc = (int64_t)a->n * a->c;
    instnorm_coef_kernel<<<(unsigned)((nc + 127) / 128), 128, 0, s>>>(
        part, a->l, a->c, chunks, a->n, a->gamma, a->beta, a->eps, coef);
    int64_t count = a->l * a->c, blocks = (count + 255) / 256;
    if (blocks > 8192)
        blocks = 8192; /* grid-stride loop covers the rest */
    dim3 grid((unsigned)blocks, (unsigned)a->n);
    /* a grid-stride index stays below count + step, which must fit the type */
    if (count + blocks * 256 <= (int64_t)UINT32_MAX)
        instnorm_apply_kernel<uint32_t><<<grid, 256, 0, s>>>(a->x, (uint32_t)count, (uint32_t)a->c,
                                                             a->stride, coef, a->lrelu, a->slope);
    else
        instnorm_apply_kernel<int64_t>
            <<<grid, 256, 0, s>>>(a->x, count, a->c, a->stride, coef, a->lrelu, a->slope);
}

extern "C" int
mms_k_instnorm(const struct mms_k_instnorm_args *a, cudaStream_t s)
{
    if (a == NULL || a->x == NULL || a->ws == NULL || a->gamma == NULL || a->beta == NULL ||
        a->l < 1 || a->c < 1 || a->n < 1 || a->n > 65535 ||
        (a->n > 1 && a->stride < (size_t)(a->l * a->c)))
        return MMS_EINVAL;
    instnorm_launch(a, s);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        mms_log(MMS_LOG_ERR, "mms_k_instnorm: kernel launch failed: %s", cudaGetErrorString(e));
        return MMS_ECUDA;
    }
    return 0;
}
