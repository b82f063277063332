/* infer/ops-cpu: LN and the bidirectional Mamba of a MetaBlock (mmunet.md 2.3, 2.4, 3).
 *
 * Each direction runs over token chunks of the node's workspace (mmunet.md 3.2): LN of the
 * chunk, in-projection (sgemm), causal depthwise conv and SiLU with K-1 rows of history
 * carried between chunks, x-projection (sgemm), then one fused loop per block of 16 channels
 * that computes dt (dt_proj, bias, softplus), the selective scan with the state carried
 * between chunks, the D skip and the gate; then the out-projection (sgemm) adds alpha times
 * the result into the block's output. The backward direction walks the chunks and the tokens
 * from the end and reads its conv window forward (mmunet.md 3.3): no reversed copy.
 *
 * The scan is sequential in tokens and parallel over channel blocks; its state (16 x N
 * floats per block) stays in L1. Everything is fp32 (mmunet.md 3.2). */
#include "infer/ops-cpu/ops-cpu-impl.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/ssm-math.h"

#define LANES 16

#define SEG_MIN 256 /* tokens per segment of a token-parallel scan, at least */

struct scan_args {
    int64_t m, e, n, r, pr;
    bool backward;
    const float *xc, *z, *p; /* (m, E), (m, E), (m, R + 2N) */
    const float *dt_t, *dt_b, *a_t, *d;
    float *y, *state;
    float *tap_delta, *tap_y; /* (L, E) or NULL */
    int64_t tap_row0, tap_step;
};

/* Steps s0..s1 (in the direction's order) of the scan for channels e0..e0+nl: the state st
 * (N, LANES) is updated in place. With write, y and the taps are written; without, only the
 * state moves and dsum (LANES) accumulates the step sizes (the decay of the whole segment is
 * then exp(A sum dt), mmunet.md 3.4). */
static inline __attribute__((always_inline)) void
scan_lanes(const struct scan_args *a, int64_t e0, int nl, int64_t s0, int64_t s1, float *st,
           bool write, float *dsum)
{
    const int64_t E = a->e, N = a->n, R = a->r, PR = a->pr;
    float dt[LANES], x[LANES], dx[LANES], y[LANES];
    for (int64_t s = s0; s < s1; s++) {
        int64_t i = a->backward ? a->m - 1 - s : s;
        const float *p = a->p + i * PR;
        const float *xc = a->xc + i * E + e0;
#pragma omp simd
        for (int j = 0; j < nl; j++)
            dt[j] = a->dt_b[e0 + j];
        for (int64_t r = 0; r < R; r++) {
            float dr = p[r];
            const float *wt = a->dt_t + r * E + e0;
#pragma omp simd
            for (int j = 0; j < nl; j++)
                dt[j] += dr * wt[j];
        }
#pragma omp simd
        for (int j = 0; j < nl; j++) {
            dt[j] = mms_softplus(dt[j]);
            x[j] = xc[j];
            dx[j] = dt[j] * x[j];
            y[j] = 0.0f;
        }
        for (int64_t n = 0; n < N; n++) {
            float bn = p[R + n], cn = p[R + N + n];
            const float *an = a->a_t + n * E + e0;
            float *hn = st + n * LANES;
#pragma omp simd
            for (int j = 0; j < nl; j++) {
                float h = mms_expf(dt[j] * an[j]) * hn[j] + dx[j] * bn;
                hn[j] = h;
                y[j] += h * cn;
            }
        }
        if (!write) {
#pragma omp simd
            for (int j = 0; j < nl; j++)
                dsum[j] += dt[j];
            continue;
        }
        const float *zr = a->z + i * E + e0;
        float *yr = a->y + i * E + e0;
#pragma omp simd
        for (int j = 0; j < nl; j++) {
            y[j] += a->d[e0 + j] * x[j];
            yr[j] = y[j] * mms_silu(zr[j]);
        }
        if (a->tap_delta != NULL) {
            int64_t row = a->tap_row0 + a->tap_step * i;
            memcpy(a->tap_delta + row * E + e0, dt, (size_t)nl * sizeof(float));
            memcpy(a->tap_y + row * E + e0, y, (size_t)nl * sizeof(float));
        }
    }
}

MMS_CPU_CLONES static void
scan_full(const struct scan_args *a, int64_t e0, int64_t s0, int64_t s1, float *st, bool write,
          float *dsum)
{
    scan_lanes(a, e0, LANES, s0, s1, st, write, dsum);
}

MMS_CPU_CLONES static void
scan_half(const struct scan_args *a, int64_t e0, int64_t s0, int64_t s1, float *st, bool write,
          float *dsum)
{
    scan_lanes(a, e0, LANES / 2, s0, s1, st, write, dsum);
}

MMS_CPU_CLONES static void
scan_tail(const struct scan_args *a, int64_t e0, int nl, int64_t s0, int64_t s1, float *st,
          bool write, float *dsum)
{
    scan_lanes(a, e0, nl, s0, s1, st, write, dsum);
}

static void
scan_range(const struct scan_args *a, int64_t e0, int64_t s0, int64_t s1, float *st, bool write,
           float *dsum)
{
    if (e0 + LANES <= a->e)
        scan_full(a, e0, s0, s1, st, write, dsum);
    else if (e0 + LANES / 2 == a->e)
        scan_half(a, e0, s0, s1, st, write, dsum);
    else
        scan_tail(a, e0, (int)(a->e - e0), s0, s1, st, write, dsum);
}

/* Carries between segments (mmunet.md 3.4), for one block of channels: st holds the state at
 * the end of segment 0; each later segment's buffer holds its zero-started end state and
 * step-size sums. Afterwards each buffer holds the state at its segment's start, and st the
 * state at the end of the last segment. */
static void
scan_carry(const struct scan_args *a, int64_t e0, int64_t segs, float *st, float *seg,
           int64_t seg_floats)
{
    const int64_t N = a->n;
    int nl = a->e - e0 < LANES ? (int)(a->e - e0) : LANES;
    for (int64_t k = 1; k < segs; k++) {
        float *hs = seg + k * seg_floats, *dsum = hs + N * LANES;
        for (int64_t n = 0; n < N; n++) {
            const float *an = a->a_t + n * a->e + e0;
            for (int j = 0; j < nl; j++) {
                float hin = st[n * LANES + j];
                st[n * LANES + j] = expf(an[j] * dsum[j]) * hin + hs[n * LANES + j];
                hs[n * LANES + j] = hin;
            }
        }
    }
}

/* The scan of one chunk, parallel over blocks of 16 channels, and over token segments too
 * when there are more threads than blocks: segment 0 runs from the carried state; the others
 * first run from zero to get their end states, the carries are combined, and they run again
 * from their true start states (twice the work on those segments, in parallel). */
static void
scan_chunk(const struct scan_args *a, int threads, float *seg_buf)
{
    int64_t nblocks = (a->e + LANES - 1) / LANES, segs = 1;
    if (threads > nblocks && seg_buf != NULL) {
        segs = threads / nblocks;
        if (segs > a->m / SEG_MIN)
            segs = a->m / SEG_MIN;
        if (segs < 1)
            segs = 1;
    }
    const int64_t N = a->n, seg_floats = N * LANES + LANES, pairs = nblocks * segs;
    int nt = pairs < threads ? (int)pairs : threads;
#pragma omp parallel num_threads(nt)
    {
        mms__cpu_ftz();
#pragma omp for schedule(static)
        for (int64_t q = 0; q < pairs; q++) {
            int64_t b = q / segs, k = q % segs, e0 = b * LANES;
            int64_t s0 = a->m * k / segs, s1 = a->m * (k + 1) / segs;
            float *st = a->state + b * N * LANES;
            if (k == 0) {
                scan_range(a, e0, s0, s1, st, true, NULL);
            } else {
                float *hs = seg_buf + (b * segs + k) * seg_floats;
                memset(hs, 0, (size_t)seg_floats * sizeof(float));
                scan_range(a, e0, s0, s1, hs, false, hs + N * LANES);
            }
        }
        if (segs > 1) {
#pragma omp for schedule(static)
            for (int64_t b = 0; b < nblocks; b++)
                scan_carry(a, b * LANES, segs, a->state + b * N * LANES,
                           seg_buf + b * segs * seg_floats, seg_floats);
#pragma omp for schedule(static)
            for (int64_t q = 0; q < pairs; q++) {
                int64_t b = q / segs, k = q % segs;
                if (k == 0)
                    continue;
                float *hs = seg_buf + (b * segs + k) * seg_floats;
                scan_range(a, b * LANES, a->m * k / segs, a->m * (k + 1) / segs, hs, true, NULL);
            }
        }
    }
}

/* xc (m, E) = SiLU(b + causal depthwise conv of xe); forward reads rows i..i+K-1 with the
 * weights in order, backward the same rows with the weights reversed. */
MMS_CPU_CLONES static void
conv_silu_range(const float *xe, float *xc, int64_t i0, int64_t i1, int64_t E, int64_t K,
                const float *wt, const float *b, bool backward)
{
    for (int64_t i = i0; i < i1; i++) {
        float *out = xc + i * E;
#pragma omp simd
        for (int64_t e = 0; e < E; e++)
            out[e] = b[e];
        for (int64_t k = 0; k < K; k++) {
            const float *w = wt + (backward ? K - 1 - k : k) * E;
            const float *in = xe + (i + k) * E;
#pragma omp simd
            for (int64_t e = 0; e < E; e++)
                out[e] += w[e] * in[e];
        }
#pragma omp simd
        for (int64_t e = 0; e < E; e++)
            out[e] = mms_silu(out[e]);
    }
}

MMS_CPU_CLONES static void
add_range(float *x, const float *y, int64_t i0, int64_t i1)
{
#pragma omp simd
    for (int64_t i = i0; i < i1; i++)
        x[i] += y[i];
}

int
mms__cpu_mixer_init(const struct mms_node *nd, int threads, struct mms_cpu_mixer *mx)
{
    int64_t E = nd->u.mixer.e, N = nd->u.mixer.n, R = nd->u.mixer.r, K = nd->u.mixer.k;
    memset(mx, 0, sizeof *mx);
    for (int dir = 0; dir < 2; dir++) {
        const struct mms_mamba_w *w = &nd->u.mixer.dir[dir];
        struct mms_cpu_mamba *p = &mx->dir[dir];
        size_t n = (size_t)(E * (K + R + N));
        float *buf = malloc(n * sizeof(float));
        if (buf == NULL) {
            mms__cpu_mixer_fini(mx);
            return MMS_ENOMEM;
        }
        p->conv_t = buf;
        p->dt_t = buf + E * K;
        p->a_t = buf + E * (K + R);
        for (int64_t e = 0; e < E; e++) {
            for (int64_t k = 0; k < K; k++)
                p->conv_t[k * E + e] = w->conv_w[e * K + k];
            for (int64_t r = 0; r < R; r++)
                p->dt_t[r * E + e] = w->dt_w[e * R + r];
            for (int64_t j = 0; j < N; j++)
                p->a_t[j * E + e] = -expf(w->a_log[e * N + j]);
        }
        mx->bytes += n * sizeof(float);
    }
    if (threads > 1) {
        size_t n = (size_t)threads * (size_t)(N * LANES + LANES);
        if ((mx->seg = malloc(n * sizeof(float))) == NULL) {
            mms__cpu_mixer_fini(mx);
            return MMS_ENOMEM;
        }
        mx->bytes += n * sizeof(float);
    }
    return 0;
}

void
mms__cpu_mixer_fini(struct mms_cpu_mixer *mx)
{
    for (int dir = 0; dir < 2; dir++)
        free(mx->dir[dir].conv_t);
    free(mx->seg);
    memset(mx, 0, sizeof *mx);
}

static int
sgemm(int64_t m, int64_t n, int64_t k, float alpha, const float *a, const float *b_t, float beta,
      float *c)
{
    /* c (m, n) = alpha a (m, k) b_t^T + beta c, with b_t (n, k) row-major */
    dnnl_status_t s = dnnl_sgemm('N', 'T', m, n, k, alpha, a, k, b_t, k, beta, c, n);
    return s == dnnl_success ? 0 : MMS_ENOTSUP;
}

int
mms__cpu_mamba_dir(struct mms_cpu *cpu, const struct mms_node *nd, const struct mms_cpu_mixer *mx,
                   int dir, int64_t l, const float *src, float *dst, float beta, void *ws,
                   float *const taps[MMS_TAP__COUNT])
{
    const int64_t C = nd->u.mixer.c, E = nd->u.mixer.e, N = nd->u.mixer.n, R = nd->u.mixer.r;
    const int64_t K = nd->u.mixer.k, T = nd->u.mixer.chunk, PR = R + 2 * N;
    struct mms_mixer_ws lay;
    mms__mixer_ws_layout(nd, &lay);
    char *base = ws;
    float *u = (float *)(base + lay.u), *xe = (float *)(base + lay.xe);
    float *hist = (float *)(base + lay.hist), *z = (float *)(base + lay.z);
    float *xc = (float *)(base + lay.xc), *p = (float *)(base + lay.p);
    float *y = (float *)(base + lay.y), *state = (float *)(base + lay.state);
    int64_t nblocks = (E + LANES - 1) / LANES;
    int threads = cpu->threads;
    const struct mms_mamba_w *w = &nd->u.mixer.dir[dir];
    const struct mms_cpu_mamba *pw = &mx->dir[dir];
    bool back = dir == 1;
    int rc;

    memset(state, 0, (size_t)(nblocks * LANES * N) * sizeof(float));
    memset(hist, 0, (size_t)((K - 1) * E) * sizeof(float));
    float *tap_delta = taps != NULL ? taps[back ? MMS_TAP_DELTA_B : MMS_TAP_DELTA] : NULL;
    float *tap_y = taps != NULL ? taps[back ? MMS_TAP_YPRE_B : MMS_TAP_YPRE] : NULL;
    for (int64_t done = 0; done < l; done += T) {
        int64_t t0 = back ? (l - done - T > 0 ? l - done - T : 0) : done;
        int64_t t1 = back ? l - done : (done + T < l ? done + T : l);
        int64_t m = t1 - t0;
        if (nd->u.mixer.ln_w != NULL)
            mms__cpu_layernorm(threads, src + t0 * C, u, m, C, nd->u.mixer.ln_w, nd->u.mixer.ln_b,
                               nd->u.mixer.ln_eps);
        else /* a bare Mamba (tests) */
            memcpy(u, src + t0 * C, (size_t)(m * C) * sizeof(float));
        if (!back && taps != NULL && taps[MMS_TAP_LN] != NULL)
            memcpy(taps[MMS_TAP_LN] + t0 * C, u, (size_t)(m * C) * sizeof(float));
        float *xrows = back ? xe : xe + (K - 1) * E;
        float *hrows = back ? xe + m * E : xe;
        if ((rc = sgemm(m, E, C, 1.0f, u, w->in_proj, 0.0f, xrows)) < 0 ||
            (rc = sgemm(m, E, C, 1.0f, u, w->in_proj + E * C, 0.0f, z)) < 0)
            return rc;
        memcpy(hrows, hist, (size_t)((K - 1) * E) * sizeof(float));
        int nt = m < 64 ? 1 : threads;
#pragma omp parallel num_threads(nt)
        {
            int id = omp_get_thread_num(), n = omp_get_num_threads();
            conv_silu_range(xe, xc, m * id / n, m * (id + 1) / n, E, K, pw->conv_t, w->conv_b,
                            back);
        }
        memcpy(hist, back ? xe : xe + m * E, (size_t)((K - 1) * E) * sizeof(float));
        if ((rc = sgemm(m, PR, E, 1.0f, xc, w->x_proj, 0.0f, p)) < 0)
            return rc;
        struct scan_args a = {
            .m = m,
            .e = E,
            .n = N,
            .r = R,
            .pr = PR,
            .backward = back,
            .xc = xc,
            .z = z,
            .p = p,
            .dt_t = pw->dt_t,
            .dt_b = w->dt_b,
            .a_t = pw->a_t,
            .d = w->d,
            .y = y,
            .state = state,
            .tap_delta = tap_delta,
            .tap_y = tap_y,
            /* the backward taps of vim_v2 are in reversed token order, as the reference */
            .tap_row0 = back ? l - 1 - t0 : t0,
            .tap_step = back ? -1 : 1,
        };
        if (tap_y == NULL)
            a.tap_delta = NULL;
        scan_chunk(&a, threads, mx->seg);
        if ((rc = sgemm(m, C, E, nd->u.mixer.alpha, y, w->out_proj, beta, dst + t0 * C)) < 0)
            return rc;
    }
    return 0;
}

int
mms__cpu_mixer_run(struct mms_cpu *cpu, const struct mms_node *nd, const struct mms_cpu_mixer *mx,
                   int64_t l, const float *src, float *dst, void *ws,
                   float *const taps[MMS_TAP__COUNT])
{
    int rc;
    if ((rc = mms__cpu_mamba_dir(cpu, nd, mx, 0, l, src, dst, 0.0f, ws, taps)) < 0 ||
        (rc = mms__cpu_mamba_dir(cpu, nd, mx, 1, l, src, dst, 1.0f, ws, taps)) < 0)
        return rc;
    if (taps != NULL && taps[MMS_TAP_MIXER] != NULL)
        memcpy(taps[MMS_TAP_MIXER], dst, (size_t)(l * nd->u.mixer.c) * sizeof(float));
    if (nd->u.mixer.inner_residual) {
        int64_t n = l * nd->u.mixer.c;
        int nt = n < 65536 ? 1 : cpu->threads;
#pragma omp parallel num_threads(nt)
        {
            int id = omp_get_thread_num(), k = omp_get_num_threads();
            add_range(dst, src, n * id / k, n * (id + 1) / k);
        }
    }
    return 0;
}
