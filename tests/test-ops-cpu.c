/* Tests of the CPU backend's ops (mmunet.md 7, V2): each against the PyTorch reference's
 * fixture where one exists (tests/fixtures/mmunet/mamba-ops.safetensors) and against a
 * direct double-precision implementation written here from the spec otherwise. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "infer/model-impl.h"
#include "infer/ops-cpu/ops-cpu-impl.h"
#include "tests/tap.h"
#include "tests/tol.h"

static struct mms_cpu cpu;
static unsigned long long rng = 88172645463325252ull;

static float
frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* ------------------------------------------------------------------------------- Mamba */
struct mamba_case {
    struct mms_node nd;
    struct mms_cpu_mixer mx;
    void *ws;
};

static int
mamba_setup(struct mamba_case *mc, const struct mms_st *st, int64_t chunk, int64_t l)
{
    struct mms_node *nd = &mc->nd;
    memset(mc, 0, sizeof *mc);
    nd->op = MMS_OP_MIXER;
    nd->name = "mamba";
    nd->u.mixer.c = atoi(mms__st_meta(st, "d_model"));
    nd->u.mixer.n = atoi(mms__st_meta(st, "d_state"));
    nd->u.mixer.k = atoi(mms__st_meta(st, "d_conv"));
    nd->u.mixer.e = atoi(mms__st_meta(st, "expand")) * nd->u.mixer.c;
    nd->u.mixer.r = atoi(mms__st_meta(st, "dt_rank"));
    nd->u.mixer.chunk = chunk < l ? chunk : l;
    nd->u.mixer.alpha = 1.0f;
    struct mms_mamba_w *w = &nd->u.mixer.dir[0];
    w->in_proj = mms__st_find(st, "weights.in_proj.weight")->data;
    w->conv_w = mms__st_find(st, "weights.conv1d.weight")->data;
    w->conv_b = mms__st_find(st, "weights.conv1d.bias")->data;
    w->x_proj = mms__st_find(st, "weights.x_proj.weight")->data;
    w->dt_w = mms__st_find(st, "weights.dt_proj.weight")->data;
    w->dt_b = mms__st_find(st, "weights.dt_proj.bias")->data;
    w->a_log = mms__st_find(st, "weights.A_log")->data;
    w->d = mms__st_find(st, "weights.D")->data;
    w->out_proj = mms__st_find(st, "weights.out_proj.weight")->data;
    nd->u.mixer.dir[1] = *w;
    for (int i = 0; i < MMS_TAP__COUNT; i++)
        nd->u.mixer.tap[i] = -1;
    if (mms__cpu_mixer_init(nd, cpu.threads, &mc->mx) < 0)
        return -1;
    mc->ws = aligned_alloc(64, (mms__mixer_ws_bytes(nd) + 63) & ~(size_t)63);
    return mc->ws != NULL ? 0 : -1;
}

static void
mamba_teardown(struct mamba_case *mc)
{
    mms__cpu_mixer_fini(&mc->mx);
    free(mc->ws);
}

/* The reference of mmunet.md 3.1 in double, forward direction, written from the spec. */
static void
mamba_ref(const struct mms_node *nd, const float *u, int64_t l, double *out)
{
    const struct mms_mamba_w *w = &nd->u.mixer.dir[0];
    int64_t C = nd->u.mixer.c, E = nd->u.mixer.e, N = nd->u.mixer.n, R = nd->u.mixer.r;
    int64_t K = nd->u.mixer.k;
    double *x = calloc((size_t)(l * E), sizeof(double)), *h = calloc((size_t)(E * N), 8);
    double *xc = malloc((size_t)E * 8), *p = malloc((size_t)(R + 2 * N) * 8);
    for (int64_t t = 0; t < l; t++)
        for (int64_t e = 0; e < E; e++) {
            double s = 0.0;
            for (int64_t c = 0; c < C; c++)
                s += (double)w->in_proj[e * C + c] * u[t * C + c];
            x[t * E + e] = s;
        }
    for (int64_t t = 0; t < l; t++) {
        for (int64_t e = 0; e < E; e++) {
            double s = w->conv_b[e];
            for (int64_t k = 0; k < K; k++) {
                int64_t tau = t - K + 1 + k;
                if (tau >= 0)
                    s += (double)w->conv_w[e * K + k] * x[tau * E + e];
            }
            xc[e] = s / (1.0 + exp(-s));
        }
        for (int64_t j = 0; j < R + 2 * N; j++) {
            double s = 0.0;
            for (int64_t e = 0; e < E; e++)
                s += (double)w->x_proj[j * E + e] * xc[e];
            p[j] = s;
        }
        double y[1024];
        for (int64_t e = 0; e < E; e++) {
            double v = w->dt_b[e];
            for (int64_t r = 0; r < R; r++)
                v += (double)w->dt_w[e * R + r] * p[r];
            double dt = v > 20.0 ? v : log1p(exp(v)), acc = 0.0;
            for (int64_t n = 0; n < N; n++) {
                double a = -exp((double)w->a_log[e * N + n]);
                h[e * N + n] = exp(dt * a) * h[e * N + n] + dt * p[R + n] * xc[e];
                acc += p[R + N + n] * h[e * N + n];
            }
            double z = 0.0;
            for (int64_t c = 0; c < C; c++)
                z += (double)w->in_proj[(E + e) * C + c] * u[t * C + c];
            y[e] = (acc + w->d[e] * xc[e]) * z / (1.0 + exp(-z));
        }
        for (int64_t c = 0; c < C; c++) {
            double s = 0.0;
            for (int64_t e = 0; e < E; e++)
                s += (double)w->out_proj[c * E + e] * y[e];
            out[t * C + c] = s;
        }
    }
    free(x);
    free(h);
    free(xc);
    free(p);
}

static void
test_mamba(const char *dir)
{
    char path[4096], why[512];
    struct mms_st *st = NULL;
    snprintf(path, sizeof path, "%s/tests/fixtures/mmunet/mamba-ops.safetensors", dir);
    int rc = mms__st_open(path, &st, why, sizeof why);
    if (!ok(rc == 0, "open the Mamba fixture")) {
        diag("%s", why);
        exit(1);
    }
    static const int64_t lens[] = {1, 3, 1000};
    static const int64_t chunks[] = {1, 2, 3, 7, 4096};
    for (size_t li = 0; li < 3; li++) {
        int64_t l = lens[li];
        char name[64];
        snprintf(name, sizeof name, "L%lld.input", (long long)l);
        const struct mms_tensor *in = mms__st_find(st, name);
        snprintf(name, sizeof name, "L%lld.output", (long long)l);
        const struct mms_tensor *want = mms__st_find(st, name);
        snprintf(name, sizeof name, "L%lld.delta", (long long)l);
        const struct mms_tensor *want_dt = mms__st_find(st, name);
        snprintf(name, sizeof name, "L%lld.y_pregate", (long long)l);
        const struct mms_tensor *want_y = mms__st_find(st, name);
        for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++) {
            if (ci > 0 && chunks[ci - 1] >= l)
                break; /* a chunk of L tokens or more is one chunk of L: run it once */
            struct mamba_case mc;
            if (mamba_setup(&mc, st, chunks[ci], l) < 0) {
                ok(false, "setup");
                continue;
            }
            int64_t C = mc.nd.u.mixer.c, E = mc.nd.u.mixer.e;
            float *out = calloc((size_t)(l * C), 4), *rin = malloc((size_t)(l * C) * 4);
            float *rout = calloc((size_t)(l * C), 4);
            float *dt = calloc((size_t)(l * E), 4), *yp = calloc((size_t)(l * E), 4);
            float *taps[MMS_TAP__COUNT] = {NULL, NULL, dt, yp, NULL, NULL};
            rc = mms__cpu_mamba_dir(&cpu, &mc.nd, &mc.mx, 0, l, in->data, out, 0.0f, mc.ws, taps);
            double t_out = tol_of(out, want->data, l * C);
            double t_dt = tol_of(dt, want_dt->data, l * E);
            double t_y = tol_of(yp, want_y->data, l * E);
            ok(rc == 0 && t_out <= 1e-4 && t_dt <= 1e-4 && t_y <= 1e-4,
               "Mamba L=%lld chunk %lld: output, delta, pre-gate y within 1e-4 "
               "(%.2g, %.2g, %.2g)",
               (long long)l, (long long)mc.nd.u.mixer.chunk, t_out, t_dt, t_y);
            /* backward direction on the reversed input = the reversed forward output */
            for (int64_t t = 0; t < l; t++)
                memcpy(rin + t * C, in->data + (l - 1 - t) * C, (size_t)C * 4);
            rc = mms__cpu_mamba_dir(&cpu, &mc.nd, &mc.mx, 1, l, rin, rout, 0.0f, mc.ws, NULL);
            for (int64_t t = 0; t < l; t++)
                memcpy(out + t * C, rout + (l - 1 - t) * C, (size_t)C * 4);
            t_out = tol_of(out, want->data, l * C);
            ok(rc == 0 && t_out <= 1e-4,
               "backward direction L=%lld chunk %lld equals Rev(Mamba(Rev(u))) (%.2g)",
               (long long)l, (long long)mc.nd.u.mixer.chunk, t_out);
            free(out);
            free(rin);
            free(rout);
            free(dt);
            free(yp);
            mamba_teardown(&mc);
        }
    }
    /* the token-parallel scan: more threads than channel blocks split the tokens */
    {
        const struct mms_tensor *in = mms__st_find(st, "L1000.input");
        const struct mms_tensor *want = mms__st_find(st, "L1000.output");
        static const int thr[] = {1, 3, 5, 8};
        int keep = cpu.threads;
        for (size_t ti = 0; ti < sizeof thr / sizeof thr[0]; ti++) {
            struct mamba_case mc;
            cpu.threads = thr[ti];
            if (mamba_setup(&mc, st, 1000, 1000) < 0) {
                ok(false, "setup");
                continue;
            }
            float *out = calloc(1000 * 8, 4);
            rc = mms__cpu_mamba_dir(&cpu, &mc.nd, &mc.mx, ti % 2, 1000, in->data, out, 0.0f, mc.ws,
                                    NULL);
            double t = 0.0;
            if (ti % 2 == 0) {
                t = tol_of(out, want->data, 1000 * 8);
            } else { /* backward: compare with the reversed golden on the reversed input */
                float *rin = malloc(1000 * 8 * 4), *rout = calloc(1000 * 8, 4);
                for (int64_t i = 0; i < 1000; i++)
                    memcpy(rin + i * 8, in->data + (999 - i) * 8, 8 * 4);
                rc =
                    mms__cpu_mamba_dir(&cpu, &mc.nd, &mc.mx, 1, 1000, rin, rout, 0.0f, mc.ws, NULL);
                for (int64_t i = 0; i < 1000; i++)
                    memcpy(out + i * 8, rout + (999 - i) * 8, 8 * 4);
                t = tol_of(out, want->data, 1000 * 8);
                free(rin);
                free(rout);
            }
            ok(rc == 0 && t <= 1e-4,
               "%s scan on %d threads (1 channel block, %d token "
               "segments): within 1e-4 (%.2g)",
               ti % 2 ? "backward" : "forward", thr[ti], thr[ti] < 3 ? thr[ti] : 3, t);
            free(out);
            mamba_teardown(&mc);
        }
        cpu.threads = keep;
    }
    /* 10^6 tokens: many chunks carry conv history and state; against the double reference */
    {
        int64_t l = 1000000;
        struct mamba_case mc;
        if (mamba_setup(&mc, st, 4096, l) < 0) {
            ok(false, "setup");
        } else {
            int64_t C = mc.nd.u.mixer.c;
            float *u = malloc((size_t)(l * C) * 4), *out = malloc((size_t)(l * C) * 4);
            double *ref = malloc((size_t)(l * C) * 8);
            for (int64_t i = 0; i < l * C; i++)
                u[i] = frand();
            rc = mms__cpu_mamba_dir(&cpu, &mc.nd, &mc.mx, 0, l, u, out, 0.0f, mc.ws, NULL);
            mamba_ref(&mc.nd, u, l, ref);
            double t = tol_of_d(out, ref, l * C);
            ok(rc == 0 && t <= 1e-4, "10^6 tokens in chunks of 4096 against the fp64 spec (%.2g)",
               t);
            free(u);
            free(out);
            free(ref);
            mamba_teardown(&mc);
        }
    }
    mms__st_close(st);
}

/* ------------------------------------------------------------------------------- norms */
static void
test_norms(void)
{
    int64_t l = 3 * 97 * 101, c = 20; /* odd sizes: no block divides them */
    float *x = malloc((size_t)(l * c) * 4), *y = malloc((size_t)(l * c) * 4);
    float g[20], b[20];
    for (int j = 0; j < c; j++) {
        g[j] = 1.0f + 0.5f * frand();
        b[j] = 0.3f * frand();
    }
    for (int64_t i = 0; i < l * c; i++) /* a large mean: the statistics must not cancel */
        x[i] = y[i] = 100.0f + 3.0f * frand() + (float)(i % c);
    double *part = malloc((size_t)c * (2 * 4 + 1) * sizeof(double));
    mms__cpu_instnorm(4, y, l, c, g, b, 1e-5f, true, 0.01f, part);
    double worst = 0.0;
    for (int64_t j = 0; j < c; j++) {
        double s = 0.0, q = 0.0;
        for (int64_t t = 0; t < l; t++)
            s += x[t * c + j];
        double mean = s / (double)l;
        for (int64_t t = 0; t < l; t++)
            q += (x[t * c + j] - mean) * (x[t * c + j] - mean);
        double inv = 1.0 / sqrt(q / (double)l + 1e-5);
        for (int64_t t = 0; t < l; t++) {
            double v = (x[t * c + j] - mean) * inv * g[j] + b[j];
            v = v < 0 ? 0.01 * v : v;
            double d = fabs(v - y[t * c + j]);
            worst = d > worst ? d : worst;
        }
    }
    ok(worst < 1e-5, "instance norm + LReLU, 29391 voxels x 20 channels, mean 100: %.2g", worst);
    /* layer norm per token */
    mms__cpu_layernorm(3, x, y, l, c, g, b, 1e-5f);
    worst = 0.0;
    for (int64_t t = 0; t < l; t++) {
        double s = 0.0, q = 0.0;
        for (int64_t j = 0; j < c; j++)
            s += x[t * c + j];
        double mean = s / (double)c;
        for (int64_t j = 0; j < c; j++)
            q += (x[t * c + j] - mean) * (x[t * c + j] - mean);
        double inv = 1.0 / sqrt(q / (double)c + 1e-5);
        for (int64_t j = 0; j < c; j++) {
            double d = fabs((x[t * c + j] - mean) * inv * g[j] + b[j] - y[t * c + j]);
            worst = d > worst ? d : worst;
        }
    }
    ok(worst < 1e-5, "layer norm over channels per token: %.2g", worst);
    free(x);
    free(y);
    free(part);
}

/* -------------------------------------------------------------------- conv, up, layout */
static void
test_conv(void)
{
    /* (1,3,3) kernel with stride (1,2,2) and a 1x1x1 projection with accumulate */
    struct mms_graph g = {0};
    struct mms_arch arch = {.negative_slope = 0.01f};
    struct mms_tdesc t[2] = {{.c = 5, .d = 3, .h = 9, .w = 7}, {.c = 6, .d = 3, .h = 5, .w = 4}};
    g.arch = &arch;
    g.tensors = t;
    g.n_tensors = 2;
    int64_t ni = 5 * 3 * 9 * 7, no = 6 * 3 * 5 * 4;
    float w[6 * 5 * 9], bias[6], *src = malloc((size_t)ni * 4), *dst = malloc((size_t)no * 4);
    for (size_t i = 0; i < sizeof w / 4; i++)
        w[i] = frand();
    for (int i = 0; i < 6; i++)
        bias[i] = frand();
    for (int64_t i = 0; i < ni; i++)
        src[i] = frand();
    for (int acc = 0; acc < 2; acc++) {
        struct mms_node nd = {
            .op = MMS_OP_CONV, .name = "conv", .src = {0, -1}, .dst = 1, .ws = -1, .slope = 0.01f};
        int k[3] = {1, 3, 3};
        if (acc) /* projection: 1x1x1, stride (1, 2, 2), dst = LReLU(conv + dst) */
            k[1] = k[2] = 1;
        for (int i = 0; i < 3; i++) {
            nd.u.conv.k[i] = k[i];
            nd.u.conv.stride[i] = i == 0 ? 1 : 2;
            nd.u.conv.pad[i] = k[i] / 2;
        }
        nd.u.conv.cin = 5;
        nd.u.conv.cout = 6;
        nd.u.conv.w = w;
        nd.u.conv.b = bias;
        nd.u.conv.accumulate = acc;
        struct mms_cpu_conv cv;
        int rc = mms__cpu_conv_init(&cpu, &g, &nd, false, &cv);
        void *scratch = malloc(cv.scratch_bytes + 64);
        float *prev = malloc((size_t)no * 4);
        for (int64_t i = 0; i < no; i++)
            dst[i] = prev[i] = frand();
        if (rc == 0)
            rc = mms__cpu_conv_run(&cpu, &cv, src, dst, scratch, NULL);
        double worst = 0.0;
        for (int64_t d = 0; d < 3; d++)
            for (int64_t h = 0; h < 5; h++)
                for (int64_t x = 0; x < 4; x++)
                    for (int64_t o = 0; o < 6; o++) {
                        double s = bias[o];
                        for (int64_t i = 0; i < 5; i++)
                            for (int kh = 0; kh < k[1]; kh++)
                                for (int kw = 0; kw < k[2]; kw++) {
                                    int64_t ih = h * 2 + kh - k[1] / 2, iw = x * 2 + kw - k[2] / 2;
                                    if (ih < 0 || ih >= 9 || iw < 0 || iw >= 7)
                                        continue;
                                    s += (double)w[((o * 5 + i) * k[1] + kh) * k[2] + kw] *
                                         src[((d * 9 + ih) * 7 + iw) * 5 + i];
                                }
                        int64_t at = ((d * 5 + h) * 4 + x) * 6 + o;
                        if (acc) {
                            s += prev[at];
                            s = s < 0 ? 0.01 * s : s;
                        }
                        double e = fabs(s - dst[at]);
                        worst = e > worst ? e : worst;
                    }
        ok(rc == 0 && worst < 1e-5, "oneDNN conv %s on channels-last data: %.2g",
           acc ? "1x1x1 stride (1,2,2) with + dst and LReLU fused" : "(1,3,3) stride (1,2,2)",
           worst);
        mms__cpu_conv_fini(&cv);
        free(scratch);
        free(prev);
    }
    free(src);
    free(dst);
}

static void
test_up_layout(void)
{
    struct mms_tdesc lo = {.c = 3, .d = 2, .h = 3, .w = 2}, sk = {.c = 3, .d = 4, .h = 6, .w = 2};
    int stride[3] = {2, 2, 1};
    float lod[3 * 2 * 3 * 2], skd[3 * 4 * 6 * 2], out[6 * 4 * 6 * 2];
    for (size_t i = 0; i < sizeof lod / 4; i++)
        lod[i] = (float)i;
    for (size_t i = 0; i < sizeof skd / 4; i++)
        skd[i] = -(float)i;
    mms__cpu_up_concat(2, &lo, lod, &sk, skd, stride, out);
    int bad = 0;
    for (int d = 0; d < 4; d++)
        for (int h = 0; h < 6; h++)
            for (int w = 0; w < 2; w++)
                for (int c = 0; c < 6; c++) {
                    float want = c < 3 ? lod[(((d / 2) * 3 + h / 2) * 2 + w) * 3 + c]
                                       : skd[((d * 6 + h) * 2 + w) * 3 + c - 3];
                    bad += out[((d * 6 + h) * 2 + w) * 6 + c] != want;
                }
    is_int(bad, 0, "nearest upsampling (2,2,1) then concat: upsampled channels first");
    float a[7 * 5], b[5 * 7];
    for (int i = 0; i < 35; i++)
        a[i] = (float)i;
    mms__cpu_transpose(2, a, b, 7, 5);
    bad = 0;
    for (int r = 0; r < 7; r++)
        for (int c = 0; c < 5; c++)
            bad += b[c * 7 + r] != a[r * 5 + c];
    is_int(bad, 0, "layout change (L, C) -> (C, L)");
}

int
main(void)
{
    const char *dir = getenv("srcdir");
    if (dir == NULL)
        dir = ".";
    /* Mamba cases: L = 1 with chunk 1; L = 3 with 1, 2, 3; L = 1000 with 1, 2, 3, 7, 4096 */
    plan(1 + (1 + 3 + 5) * 2 + 4 + 1 + 2 + 2 + 2, 300);
    cpu.threads = 2;
    if (dnnl_engine_create(&cpu.engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&cpu.stream, cpu.engine, dnnl_stream_default_flags) != dnnl_success) {
        printf("Bail out! oneDNN engine\n");
        return 1;
    }
    omp_set_num_threads(cpu.threads);
    test_mamba(dir);
    test_norms();
    test_conv();
    test_up_layout();
    dnnl_stream_destroy(cpu.stream);
    dnnl_engine_destroy(cpu.engine);
    return done_testing();
}
