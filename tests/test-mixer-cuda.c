/* Tests of the CUDA backend's MIXER op (infer/backend-cuda-mixer.c, kernels/) against the CPU
 * backend's (infer/ops-cpu/mamba.c), on the MIXER nodes of the fixture models (every biscan
 * variant, as infer/graph.c wires them) and on synthetic nodes (odd channel counts, a state of
 * 24, no LN): the output and every tap by normalized MSE <= 1e-7 (style.md 2.6), for L = 1,
 * L < K - 1, lengths that are no multiple of the chunk or the scan's segment, a batch, and
 * L = 1,048,576 (state and conv history carried across chunks).
 *
 * `tests/test-mixer-cuda --bench` times the selective scan alone at L = 1,048,576, E = 64,
 * N = 16 (median of 20 after warm-up) against the H200's 4.8 TB/s.
 * Built only with CUDA; prints a TAP SKIP line with the reason when no device is usable. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "infer/backend-cuda-impl.h"
#include "infer/graph-impl.h"
#include "infer/model-impl.h"
#include "infer/ops-cpu/ops-cpu-impl.h"
#include "kernels/kernels.h"
#include "tests/tap.h"

#define NMSE_MAX 1e-7
#define BIG_L 1048576

static struct mms_cpu cpu;
static struct mms_cuda cu;
static unsigned long long rng = 88172645463325252ull;

static float
frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* sum (got - want)^2 / sum want^2, and the largest |got - want| into *max_abs; NaN fails. */
static double
nmse(const float *got, const float *want, size_t n, double *max_abs)
{
    double num = 0.0, den = 0.0, worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - (double)want[i];
        if (isnan(d))
            return INFINITY;
        num += d * d;
        den += (double)want[i] * (double)want[i];
        worst = fabs(d) > worst ? fabs(d) : worst;
    }
    *max_abs = worst > *max_abs ? worst : *max_abs;
    return den > 0.0 ? num / den : num > 0.0 ? INFINITY : 0.0;
}

/* The CUDA mixer against the CPU one for node nd0 at l tokens, n samples (taps when n is 1). */
static void
check_case(const char *label, const struct mms_node *nd0, int64_t l, int n)
{
    struct mms_node nd = *nd0;
    const int64_t C = nd.u.mixer.c, E = nd.u.mixer.e;
    const size_t lc = (size_t)(l * C), le = (size_t)(l * E), stride = lc + 67;
    const size_t tap_len[MMS_TAP__COUNT] = {lc, lc, le, le, le, le};
    struct mms_cpu_mixer cmx;
    struct mms_cuda_mixer *gmx = NULL;
    float *src = NULL, *want = NULL, *got = NULL, *d_src = NULL, *d_dst = NULL;
    float *taps[MMS_TAP__COUNT] = {0}, *d_taps[MMS_TAP__COUNT] = {0};
    float *got_tap = NULL;
    void *ws = NULL;
    double worst = 0.0, worst_tap = 0.0, max_abs = 0.0;
    size_t bytes = 0;
    bool pad_ok = true, cpu_ready = false;
    int rc = 0;
    const char *failed = "";

    if (nd.u.mixer.chunk > l)
        nd.u.mixer.chunk = l;
    if (mms__cpu_mixer_init(&nd, cpu.threads, &cmx) < 0) {
        failed = "CPU mixer init";
        goto out;
    }
    cpu_ready = true;
    ws = aligned_alloc(64, (mms__mixer_ws_bytes(&nd) + 63) & ~(size_t)63);
    src = malloc((size_t)n * stride * sizeof(float));
    want = malloc((size_t)n * stride * sizeof(float));
    got = malloc((size_t)n * stride * sizeof(float));
    got_tap = malloc((lc > le ? lc : le) * sizeof(float));
    if (ws == NULL || src == NULL || want == NULL || got == NULL || got_tap == NULL) {
        failed = "host memory";
        goto out;
    }
    for (size_t i = 0; i < (size_t)n * stride; i++)
        src[i] = frand() * 2.0f + 0.5f;
    for (size_t i = 0; i < (size_t)n * stride; i++)
        want[i] = 12345.0f; /* the padding between samples must stay untouched */
    if (n == 1)
        for (int t = 0; t < MMS_TAP__COUNT; t++)
            if ((taps[t] = malloc(tap_len[t] * sizeof(float))) == NULL) {
                failed = "host memory";
                goto out;
            }
    for (int s = 0; s < n; s++)
        if ((rc = mms__cpu_mixer_run(&cpu, &nd, &cmx, l, src + (size_t)s * stride,
                                     want + (size_t)s * stride, ws, n == 1 ? taps : NULL)) < 0) {
            failed = "CPU mixer run";
            goto out;
        }

    size_t need = mms__cuda_mixer_bytes(&nd, l, n);
    if ((rc = mms__cuda_mixer_new(&cu, &nd, l, n, &gmx, &bytes)) < 0 || bytes != need ||
        need == 0) {
        failed = "mms__cuda_mixer_new (or its byte count)";
        goto out;
    }
    if (cudaMalloc((void **)&d_src, (size_t)n * stride * sizeof(float)) != cudaSuccess ||
        cudaMalloc((void **)&d_dst, (size_t)n * stride * sizeof(float)) != cudaSuccess ||
        cudaMemcpy(d_src, src, (size_t)n * stride * sizeof(float), cudaMemcpyHostToDevice) !=
            cudaSuccess ||
        cudaMemcpy(d_dst, want, (size_t)n * stride * sizeof(float), cudaMemcpyHostToDevice) !=
            cudaSuccess) {
        failed = "device buffers";
        goto out;
    }
    if (n == 1)
        for (int t = 0; t < MMS_TAP__COUNT; t++)
            if (cudaMalloc((void **)&d_taps[t], tap_len[t] * sizeof(float)) != cudaSuccess ||
                cudaMemset(d_taps[t], 0xff, tap_len[t] * sizeof(float)) != cudaSuccess) {
                failed = "device tap buffers";
                goto out;
            }
    /* dst starts as garbage where the samples go (NaN bits): the mixer must overwrite it */
    for (int s = 0; s < n; s++)
        if (cudaMemset(d_dst + (size_t)s * stride, 0xff, lc * sizeof(float)) != cudaSuccess) {
            failed = "device memset";
            goto out;
        }
    if ((rc = mms__cuda_mixer_run(&cu, &nd, gmx, l, n, d_src, d_dst, stride,
                                  n == 1 ? d_taps : NULL)) < 0) {
        failed = "mms__cuda_mixer_run";
        goto out;
    }
    if (cudaStreamSynchronize(cu.stream) != cudaSuccess ||
        cudaMemcpy(got, d_dst, (size_t)n * stride * sizeof(float), cudaMemcpyDeviceToHost) !=
            cudaSuccess) {
        failed = "device sync / copy back";
        goto out;
    }
    for (int s = 0; s < n; s++) {
        double e = nmse(got + (size_t)s * stride, want + (size_t)s * stride, lc, &max_abs);
        worst = e > worst ? e : worst;
        if (s + 1 < n)
            for (size_t i = lc; i < stride; i++)
                pad_ok = pad_ok && got[(size_t)s * stride + i] == 12345.0f;
    }
    if (n == 1)
        for (int t = 0; t < MMS_TAP__COUNT; t++) {
            if (cudaMemcpy(got_tap, d_taps[t], tap_len[t] * sizeof(float),
                           cudaMemcpyDeviceToHost) != cudaSuccess) {
                failed = "tap copy back";
                goto out;
            }
            double e = nmse(got_tap, taps[t], tap_len[t], &max_abs);
            if (e > NMSE_MAX)
                diag("%s L=%lld: tap %d nmse %.3g", label, (long long)l, t, e);
            worst_tap = e > worst_tap ? e : worst_tap;
        }

out:
    ok(*failed == '\0' && worst <= NMSE_MAX && worst_tap <= NMSE_MAX && pad_ok,
       "%s L=%lld n=%d: CUDA = CPU, output nmse %.3g, taps nmse %.3g (max abs %.3g)%s", label,
       (long long)l, n, worst, worst_tap, max_abs, pad_ok ? "" : ", padding overwritten");
    if (*failed != '\0')
        diag("%s failed: %s (rc %d, %s)", label, failed, rc, mms_strerror(rc));
    mms__cuda_mixer_free(gmx);
    cudaFree(d_src);
    cudaFree(d_dst);
    for (int t = 0; t < MMS_TAP__COUNT; t++) {
        cudaFree(d_taps[t]);
        free(taps[t]);
    }
    if (cpu_ready)
        mms__cpu_mixer_fini(&cmx);
    free(ws);
    free(src);
    free(want);
    free(got);
    free(got_tap);
}

/* ------------------------------------------------------------------------ fixture nodes */
#define FIXTURE_TESTS 7

static void
test_variant(const char *dir, const char *variant, bool big)
{
    char path[4096], why[512], label[96];
    struct mms_model *m = NULL;
    struct mms_graph *g = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/mmunet/tiny-%s.safetensors", dir, variant);
    int rc = mms_model_load(path, &m, why, sizeof why);
    if (rc == 0)
        rc = mms__graph_build(m, 0, mms_model_card(m)->inf.patch, false, &g);
    const struct mms_node *first = NULL, *last = NULL;
    for (int i = 0; rc == 0 && i < g->n_nodes; i++)
        if (g->nodes[i].op == MMS_OP_MIXER) {
            first = first == NULL ? &g->nodes[i] : first;
            last = &g->nodes[i];
        }
    if (!ok(rc == 0 && first != NULL, "%s: load the model, build its graph, find its mixers",
            variant)) {
        diag("%s (%s)", mms_strerror(rc), why);
        for (int i = 1; i < FIXTURE_TESTS + (big ? 1 : 0); i++)
            skip("no mixer");
        goto out;
    }
    int64_t l0 = mms__tdesc_voxels(&g->tensors[first->src[0]]);
    int64_t l1 = mms__tdesc_voxels(&g->tensors[last->src[0]]);
    diag("%s: first mixer C=%lld E=%lld N=%lld R=%lld K=%lld L=%lld alpha %g%s", variant,
         (long long)first->u.mixer.c, (long long)first->u.mixer.e, (long long)first->u.mixer.n,
         (long long)first->u.mixer.r, (long long)first->u.mixer.k, (long long)l0,
         first->u.mixer.alpha, first->u.mixer.inner_residual ? ", inner residual" : "");
    snprintf(label, sizeof label, "%s first mixer", variant);
    check_case(label, first, 1, 1);
    check_case(label, first, first->u.mixer.k > 2 ? first->u.mixer.k - 2 : 1, 1); /* < K-1 */
    check_case(label, first, 4099, 1);
    check_case(label, first, l0, 1);
    check_case(label, first, l0, 3);
    snprintf(label, sizeof label, "%s last mixer", variant);
    check_case(label, last, l1, 1);
    if (big) {
        snprintf(label, sizeof label, "%s first mixer", variant);
        check_case(label, first, BIG_L, 1);
    }
out:
    mms__graph_free(g);
    mms_model_free(m);
}

/* ---------------------------------------------------------------------- synthetic nodes */
struct synth {
    struct mms_node nd;
    float *buf;
};

/* A separate-weights mixer of c channels, expand 2, state n, rank r, conv k, with or without
 * LN; weights drawn at the scales of Mamba's initialization. */
static int
synth_new(struct synth *s, int64_t c, int64_t n, int64_t r, int64_t k, bool ln, float alpha,
          bool inner_residual)
{
    int64_t e = 2 * c;
    size_t per_dir =
        (size_t)(2 * e * c + e * k + e + (r + 2 * n) * e + e * r + e + e * n + e + c * e);
    memset(s, 0, sizeof *s);
    if ((s->buf = malloc((2 * per_dir + 2 * (size_t)c) * sizeof(float))) == NULL)
        return -1;
    float *p = s->buf;
    struct mms_node *nd = &s->nd;
    nd->op = MMS_OP_MIXER;
    nd->name = "synthetic";
    nd->u.mixer.c = c;
    nd->u.mixer.e = e;
    nd->u.mixer.n = n;
    nd->u.mixer.r = r;
    nd->u.mixer.k = k;
    nd->u.mixer.chunk = 1000;
    nd->u.mixer.alpha = alpha;
    nd->u.mixer.ln_eps = 1e-5f;
    nd->u.mixer.inner_residual = inner_residual;
    for (int i = 0; i < MMS_TAP__COUNT; i++)
        nd->u.mixer.tap[i] = -1;
    if (ln) {
        nd->u.mixer.ln_w = p;
        for (int64_t i = 0; i < c; i++)
            *p++ = 1.0f + 0.2f * frand();
        nd->u.mixer.ln_b = p;
        for (int64_t i = 0; i < c; i++)
            *p++ = 0.2f * frand();
    }
    for (int d = 0; d < 2; d++) {
        struct mms_mamba_w *w = &nd->u.mixer.dir[d];
        float *q;
        w->in_proj = q = p;
        for (int64_t i = 0; i < 2 * e * c; i++)
            *p++ = frand() / sqrtf((float)c);
        w->conv_w = q = p;
        for (int64_t i = 0; i < e * k; i++)
            *p++ = frand() / sqrtf((float)k);
        w->conv_b = q = p;
        for (int64_t i = 0; i < e; i++)
            *p++ = 0.1f * frand();
        w->x_proj = q = p;
        for (int64_t i = 0; i < (r + 2 * n) * e; i++)
            *p++ = frand() / sqrtf((float)e);
        w->dt_w = q = p;
        for (int64_t i = 0; i < e * r; i++)
            *p++ = frand() / sqrtf((float)r);
        w->dt_b = q = p;
        for (int64_t i = 0; i < e; i++) { /* softplus^-1 of a step in [0.001, 0.1] */
            double dt = exp(log(0.001) + (frand() + 1.0) * 0.5 * (log(0.1) - log(0.001)));
            *p++ = (float)(dt + log(-expm1(-dt)));
        }
        w->a_log = q = p;
        for (int64_t i = 0; i < e * n; i++)
            *p++ = logf((float)(i % n + 1)) + 0.1f * frand();
        w->d = q = p;
        for (int64_t i = 0; i < e; i++)
            *p++ = 1.0f + 0.1f * frand();
        w->out_proj = q = p;
        for (int64_t i = 0; i < c * e; i++)
            *p++ = frand() / sqrtf((float)e);
    }
    return 0;
}

static void
test_synthetic(void)
{
    struct synth s;
    /* E = 40 (no multiple of 32), N = 24 (the 32-state kernel), K = 3, no LN */
    if (synth_new(&s, 20, 24, 3, 3, false, 0.7f, false) == 0) {
        check_case("synthetic C=20 N=24 K=3 no LN", &s.nd, 1, 1);
        check_case("synthetic C=20 N=24 K=3 no LN", &s.nd, 2, 1);
        check_case("synthetic C=20 N=24 K=3 no LN", &s.nd, 70001, 1);
        free(s.buf);
    } else {
        for (int i = 0; i < 3; i++)
            ok(false, "synthetic node: host memory");
    }
    /* E = 320: three blocks of channels; inner residual */
    if (synth_new(&s, 160, 16, 10, 4, true, 0.5f, true) == 0) {
        check_case("synthetic C=160 N=16 inner residual", &s.nd, 9000, 1);
        check_case("synthetic C=160 N=16 inner residual", &s.nd, 3001, 2);
        /* about 18,600 tokens per chunk: three chunks each way, the carries between them */
        check_case("synthetic C=160 N=16 inner residual", &s.nd, 40001, 1);
        free(s.buf);
    } else {
        for (int i = 0; i < 3; i++)
            ok(false, "synthetic node: host memory");
    }
}

/* Argument checks: refused before anything is queued. */
static void
test_errors(void)
{
    struct synth s;
    struct mms_cuda_mixer *gmx = NULL;
    size_t bytes = 0;
    if (synth_new(&s, 8, 4, 1, 4, true, 1.0f, false) < 0 ||
        mms__cuda_mixer_new(&cu, &s.nd, 100, 2, &gmx, &bytes) < 0) {
        ok(false, "argument checks: setup");
        free(s.buf);
        return;
    }
    float *taps[MMS_TAP__COUNT] = {0};
    float *dummy = (float *)(uintptr_t)256; /* never dereferenced: every call is refused */
    int r1 = mms__cuda_mixer_run(&cu, &s.nd, gmx, 101, 1, dummy, dummy, 0, NULL);
    int r2 = mms__cuda_mixer_run(&cu, &s.nd, gmx, 100, 3, dummy, dummy, 800, NULL);
    int r3 = mms__cuda_mixer_run(&cu, &s.nd, gmx, 100, 2, dummy, dummy, 800, taps);
    int r4 = mms__cuda_mixer_run(&cu, &s.nd, gmx, 100, 2, dummy, dummy, 799, NULL);
    struct mms_node bad = s.nd;
    bad.u.mixer.n = MMS_K_SSM_NMAX + 1;
    size_t b5 = mms__cuda_mixer_bytes(&bad, 100, 1);
    ok(r1 == MMS_EINVAL && r2 == MMS_EINVAL && r3 == MMS_EINVAL && r4 == MMS_EINVAL && b5 == 0,
       "longer L, more samples, taps of a batch, a short stride, N > %d are refused",
       MMS_K_SSM_NMAX);
    mms__cuda_mixer_free(gmx);
    free(s.buf);
}

/* ---------------------------------------------------------------------------- benchmark */
static int
cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static int
bench(void)
{
    const int64_t L = BIG_L;
    const int E = 64, N = 16;
    const size_t le = (size_t)L * E, lbc = (size_t)L * 2 * N;
    float *h = malloc((le > lbc ? le : lbc) * sizeof(float));
    float *x = NULL, *dt = NULL, *bc = NULL, *z = NULL, *y = NULL, *state = NULL, *par = NULL;
    void *scratch = NULL;
    cudaEvent_t ev[2];
    float ms[20];
    size_t scratch_bytes = mms_k_ssm_scan_scratch_bytes(L, E, N);
    int rc = 1;

    if (h == NULL || cudaMalloc((void **)&x, le * 4) != cudaSuccess ||
        cudaMalloc((void **)&dt, le * 4) != cudaSuccess ||
        cudaMalloc((void **)&z, le * 4) != cudaSuccess ||
        cudaMalloc((void **)&y, le * 4) != cudaSuccess ||
        cudaMalloc((void **)&bc, lbc * 4) != cudaSuccess ||
        cudaMalloc((void **)&state, (size_t)(N * E) * 4) != cudaSuccess ||
        cudaMalloc((void **)&par, (size_t)(E * N + 2 * E) * 4) != cudaSuccess ||
        cudaMalloc(&scratch, scratch_bytes) != cudaSuccess ||
        cudaEventCreate(&ev[0]) != cudaSuccess || cudaEventCreate(&ev[1]) != cudaSuccess) {
        fprintf(stderr, "bench: allocation failed\n");
        goto out;
    }
    for (size_t i = 0; i < le; i++)
        h[i] = frand();
    if (cudaMemcpy(x, h, le * 4, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(z, h, le * 4, cudaMemcpyHostToDevice) != cudaSuccess)
        goto out;
    for (size_t i = 0; i < le; i++)
        h[i] = -4.0f + frand();
    if (cudaMemcpy(dt, h, le * 4, cudaMemcpyHostToDevice) != cudaSuccess)
        goto out;
    for (size_t i = 0; i < lbc; i++)
        h[i] = frand();
    if (cudaMemcpy(bc, h, lbc * 4, cudaMemcpyHostToDevice) != cudaSuccess)
        goto out;
    for (int i = 0; i < E * N; i++)
        h[i] = -(float)(i % N + 1);
    for (int i = 0; i < 2 * E; i++)
        h[E * N + i] = i < E ? 0.0f : 1.0f;
    if (cudaMemcpy(par, h, (size_t)(E * N + 2 * E) * 4, cudaMemcpyHostToDevice) != cudaSuccess)
        goto out;
    struct mms_k_ssm_scan_args a = {
        .m = L,
        .e = E,
        .n = N,
        .x = x,
        .dt = dt,
        .b = bc,
        .c = bc + N,
        .ldbc = 2 * N,
        .z = z,
        .a = par,
        .dt_b = par + E * N,
        .d = par + E * N + E,
        .y = y,
        .state = state,
        .scratch = scratch,
    };
    for (int i = 0; i < 3; i++)
        if (cudaMemsetAsync(state, 0, (size_t)(N * E) * 4, cu.stream) != cudaSuccess ||
            mms_k_ssm_scan(&a, cu.stream) < 0)
            goto out;
    for (int i = 0; i < 20; i++) {
        if (cudaEventRecord(ev[0], cu.stream) != cudaSuccess || mms_k_ssm_scan(&a, cu.stream) < 0 ||
            cudaEventRecord(ev[1], cu.stream) != cudaSuccess ||
            cudaEventSynchronize(ev[1]) != cudaSuccess ||
            cudaEventElapsedTime(&ms[i], ev[0], ev[1]) != cudaSuccess)
            goto out;
    }
    qsort(ms, 20, sizeof ms[0], cmp_float);
    double med = 0.5 * (ms[9] + ms[10]);
    double nominal = (double)(3 * le + lbc) * 4.0; /* x, delta, B, C in, y out */
    double with_z = nominal + (double)le * 4.0;    /* and the gate's z in */
    printf("ssm scan L=%lld E=%d N=%d: median %.3f ms (min %.3f, max %.3f) of 20\n", (long long)L,
           E, N, med, ms[0], ms[19]);
    printf("  x, delta, B, C in, y out: %.3f GB -> %.0f GB/s = %.1f %% of 4800 GB/s\n",
           nominal / 1e9, nominal / med / 1e6, nominal / med / 1e6 / 48.0);
    printf("  with the gate input z:    %.3f GB -> %.0f GB/s = %.1f %% of 4800 GB/s\n",
           with_z / 1e9, with_z / med / 1e6, with_z / med / 1e6 / 48.0);
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "bench: a CUDA call failed: %s\n", cudaGetErrorString(cudaGetLastError()));
    cudaFree(x);
    cudaFree(dt);
    cudaFree(bc);
    cudaFree(z);
    cudaFree(y);
    cudaFree(state);
    cudaFree(par);
    cudaFree(scratch);
    free(h);
    return rc;
}

int
main(int argc, char **argv)
{
    static const char *const variants[] = {"separate", "shared", "vim_v2", "inner_residual",
                                           "merge_half"};
    const size_t nv = sizeof variants / sizeof variants[0];
    bool do_bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
    int count = 0;
    char why[256];
    cudaError_t e = cudaGetDeviceCount(&count);

    if (e != cudaSuccess || count == 0) {
        snprintf(why, sizeof why, "no usable CUDA device (cudaGetDeviceCount: %s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        skip_all(why);
    }
    if (cudaSetDevice(0) != cudaSuccess || cudaStreamCreate(&cu.stream) != cudaSuccess ||
        cublasCreate(&cu.cublas) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(cu.cublas, cu.stream) != CUBLAS_STATUS_SUCCESS) {
        printf("Bail out! CUDA stream or cuBLAS handle\n");
        return 1;
    }
    cu.precision = MMS_CUDA_FP32;
    if (do_bench) {
        int rc = bench();
        cublasDestroy(cu.cublas);
        cudaStreamDestroy(cu.stream);
        return rc;
    }
    const char *dir = getenv("srcdir");
    if (dir == NULL)
        dir = ".";
    cpu.threads = omp_get_max_threads() < 16 ? omp_get_max_threads() : 16;
    plan((int)nv * FIXTURE_TESTS + 1 + 6 + 1, 1200);
    for (size_t i = 0; i < nv; i++)
        test_variant(dir, variants[i], i == 0);
    test_synthetic();
    test_errors();
    cublasDestroy(cu.cublas);
    cudaStreamDestroy(cu.stream);
    return done_testing();
}
