/* The fused selective scan of one Mamba direction (mmunet.md 3.1, 3.4).
 *
 * The m steps are cut in segments of seg_len tokens; a block scans one segment for up to 128
 * channels, one channel per thread with its n states in registers, B and C of a tile of
 * tokens staged once in shared memory for all the block's channels. Three launches:
 *   1. summaries: segments 0..S-2 from h = 0, their end states and step-size sums;
 *   2. carries: per (channel, state) the start state of every segment, by a two-level scan
 *      over the segments (threads over spans of segments, then a walk over the spans);
 *   3. outputs: every segment from its start state: delta, y, the gate, the taps; the last
 *      segment leaves the final state for the next chunk.
 * The backward direction walks the tokens from the end (index m - 1 - s): no reversed copy.
 * Everything is fp32; exp, softplus and SiLU are the host's (kernels/ssm-math.h). */
#include "kernels/kernels.h"

#include "common/err.h"
#include "common/log.h"
#include "kernels/ssm-math.h"
#include "kernels/ssm-scan-math.h"

#define TILE 32               /* tokens of B and C staged per shared tile */
#define SCAN_THREADS 128      /* channels per block, at most */
#define SCAN_TARGET (1 << 18) /* threads of a scan launch to aim for */
#define CARRY_PARTS 16        /* threads per (channel, state) in the carry */

static int
scan_threads(int e)
{
    int t = (e + 31) / 32 * 32;
    return t < SCAN_THREADS ? t : SCAN_THREADS;
}

/* Tokens per segment for m tokens and e channels: enough segments to fill the device, each
 * a whole number of tiles. */
static int64_t
scan_seg_len(int64_t m, int e)
{
    int te = scan_threads(e);
    int64_t blocks_e = (e + te - 1) / te;
    int64_t segs = SCAN_TARGET / (blocks_e * te);
    segs = segs < 1 ? 1 : segs;
    int64_t len = (m + segs - 1) / segs;
    len = (len + TILE - 1) / TILE * TILE;
    return len < TILE ? TILE : len;
}

template <int NM, bool OUT>
static __global__ void
__launch_bounds__(SCAN_THREADS)
    scan_kernel(const struct mms_k_ssm_scan_args a, int64_t seg_len, int64_t nseg,
                float *__restrict__ st, float *__restrict__ dsum)
{
    extern __shared__ float sh[];
    const int E = a.e, N = a.n, W = OUT ? 2 * N : N;
    const int e = (int)blockIdx.y * (int)blockDim.x + (int)threadIdx.x;
    const bool live = e < E;
    const int64_t k = blockIdx.x, s0 = k * seg_len;
    const int64_t s1 = s0 + seg_len < a.m ? s0 + seg_len : a.m;
    const float *start = !OUT ? NULL : nseg == 1 ? a.state : st + k * N * E;
    float h[NM], A[NM];
#pragma unroll
    for (int n = 0; n < NM; n++) {
        A[n] = live && n < N ? a.a[(int64_t)e * N + n] : 0.0f;
        h[n] = start != NULL && live && n < N ? start[(int64_t)n * E + e] : 0.0f;
    }
    const float dtb = live ? a.dt_b[e] : 0.0f, dd = live && OUT ? a.d[e] : 0.0f;
    float ds = 0.0f;
    for (int64_t t0 = s0; t0 < s1; t0 += TILE) {
        int cnt = s1 - t0 < TILE ? (int)(s1 - t0) : TILE;
        __syncthreads(); /* the previous tile is consumed */
        for (int q = threadIdx.x; q < cnt * W; q += blockDim.x) {
            int j = q / W, r = q - j * W;
            int64_t i = a.backward ? a.m - 1 - (t0 + j) : t0 + j;
            sh[q] = r < N ? a.b[i * a.ldbc + r] : a.c[i * a.ldbc + (r - N)];
        }
        __syncthreads();
        if (!live)
            continue;
        for (int j = 0; j < cnt; j++) {
            int64_t i = a.backward ? a.m - 1 - (t0 + j) : t0 + j;
            const float *bc = sh + j * W;
            float x = a.x[i * E + e];
            float delta = mms_softplus(a.dt[i * E + e] + dtb);
            float dx = delta * x, y = 0.0f;
#pragma unroll
            for (int n = 0; n < NM; n++) {
                if (n < N) {
                    h[n] = mms_ssm_step(h[n], delta, A[n], dx, bc[n]);
                    if (OUT)
                        y += h[n] * bc[N + n];
                }
            }
            if (!OUT) {
                ds += delta;
                continue;
            }
            y += dd * x;
            if (a.tap_delta != NULL || a.tap_y != NULL) {
                int64_t row = a.tap_row0 + a.tap_step * i;
                if (a.tap_delta != NULL)
                    a.tap_delta[row * E + e] = delta;
                if (a.tap_y != NULL)
                    a.tap_y[row * E + e] = y;
            }
            a.y[i * E + e] = a.z != NULL ? y * mms_silu(a.z[i * E + e]) : y;
        }
    }
    if (!live)
        return;
    if (!OUT) {
#pragma unroll
        for (int n = 0; n < NM; n++)
            if (n < N)
                st[((k + 1) * N + n) * E + e] = h[n];
        dsum[k * E + e] = ds;
    } else if (k == nseg - 1) {
#pragma unroll
        for (int n = 0; n < NM; n++)
            if (n < N)
                a.state[(int64_t)n * E + e] = h[n];
    }
}

/* Carries: for channel e and state n, st[k] becomes the state at the start of segment k
 * (k = 0..S-1) from st[k + 1] = summary of segment k (k < S-1) and the chunk's start state.
 * Threads y of a column take spans of segments: the span summaries, a walk over the spans,
 * then each span again from its start state. */
static __global__ void __launch_bounds__(32 * CARRY_PARTS)
    carry_kernel(const float *__restrict__ a_mat, const float *__restrict__ state, int e_count,
                 int n_count, int64_t nseg, float *__restrict__ st, const float *__restrict__ dsum)
{
    __shared__ float sg[CARRY_PARTS][32], shs[CARRY_PARTS][32];
    const int E = e_count, N = n_count;
    const int e = (int)blockIdx.x * 32 + (int)threadIdx.x, n = (int)blockIdx.y;
    const int y = (int)threadIdx.y;
    const bool live = e < E;
    const int64_t cnt = nseg - 1;
    const int64_t k0 = cnt * y / CARRY_PARTS, k1 = cnt * (y + 1) / CARRY_PARTS;
    const float a = live ? a_mat[(int64_t)e * N + n] : 0.0f;
    float g = 0.0f, hs = 0.0f;
    if (live)
        for (int64_t k = k0; k < k1; k++) {
            float dk = dsum[k * E + e];
            hs = mms_ssm_carry(hs, a, dk, st[((k + 1) * N + n) * E + e]);
            g += dk;
        }
    sg[y][threadIdx.x] = g;
    shs[y][threadIdx.x] = hs;
    __syncthreads();
    if (!live)
        return;
    float h0 = state[(int64_t)n * E + e], h = h0;
    for (int p = 0; p < y; p++)
        h = mms_ssm_carry(h, a, sg[p][threadIdx.x], shs[p][threadIdx.x]);
    for (int64_t k = k0; k < k1; k++) {
        float *slot = st + ((k + 1) * N + n) * E + e;
        h = mms_ssm_carry(h, a, dsum[k * E + e], *slot);
        *slot = h;
    }
    if (y == 0)
        st[(int64_t)n * E + e] = h0;
}

template <int NM>
static void
scan_launch_n(const struct mms_k_ssm_scan_args *a, cudaStream_t s)
{
    const int te = scan_threads(a->e);
    const int64_t len = scan_seg_len(a->m, a->e), nseg = (a->m + len - 1) / len;
    const unsigned blocks_e = (unsigned)((a->e + te - 1) / te);
    float *st = (float *)a->scratch;
    float *dsum = st == NULL ? NULL : st + nseg * a->n * a->e;
    if (nseg > 1) {
        scan_kernel<NM, false>
            <<<dim3((unsigned)(nseg - 1), blocks_e), te, TILE * a->n * sizeof(float), s>>>(
                *a, len, nseg, st, dsum);
        carry_kernel<<<dim3((unsigned)((a->e + 31) / 32), (unsigned)a->n), dim3(32, CARRY_PARTS), 0,
                       s>>>(a->a, a->state, a->e, a->n, nseg, st, dsum);
    }
    scan_kernel<NM, true>
        <<<dim3((unsigned)nseg, blocks_e), te, 2 * TILE * a->n * sizeof(float), s>>>(*a, len, nseg,
                                                                                     st, dsum);
}

static void
scan_launch(const struct mms_k_ssm_scan_args *a, cudaStream_t s)
{
    if (a->n <= 16)
        scan_launch_n<16>(a, s);
    else if (a->n <= 32)
        scan_launch_n<32>(a, s);
    else
        scan_launch_n<MMS_K_SSM_NMAX>(a, s);
}

extern "C" size_t
mms_k_ssm_scan_scratch_bytes(int64_t m, int e, int n)
{
    if (m < 1 || e < 1 || n < 1)
        return 0;
    /* nseg <= m / TILE (the shortest segment) and <= the target count (the length is rounded
     * up): a bound that grows with m, so it covers every shorter run */
    int te = scan_threads(e);
    int64_t blocks_e = (e + te - 1) / te, segs = SCAN_TARGET / (blocks_e * te);
    segs = segs < 1 ? 1 : segs;
    int64_t by_len = (m + TILE - 1) / TILE, nseg = by_len < segs ? by_len : segs;
    return (size_t)nseg * (size_t)(n + 1) * (size_t)e * sizeof(float);
}

extern "C" int
mms_k_ssm_scan(const struct mms_k_ssm_scan_args *a, cudaStream_t s)
{
    if (a == NULL || a->m < 0 || a->e < 1 || a->n < 1 || a->n > MMS_K_SSM_NMAX || a->ldbc < 1 ||
        a->m > INT64_MAX / 4 / ((int64_t)a->e + a->ldbc))
        return MMS_EINVAL;
    if (a->m == 0)
        return 0;
    int64_t len = scan_seg_len(a->m, a->e), nseg = (a->m + len - 1) / len;
    if (a->x == NULL || a->dt == NULL || a->b == NULL || a->c == NULL || a->dt_b == NULL ||
        a->a == NULL || a->d == NULL || a->y == NULL || a->state == NULL ||
        (nseg > 1 && a->scratch == NULL) || nseg > 0x7fffffff)
        return MMS_EINVAL;
    scan_launch(a, s);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        mms_log(MMS_LOG_ERR, "mms_k_ssm_scan: kernel launch failed: %s", cudaGetErrorString(e));
        return MMS_ECUDA;
    }
    return 0;
}
