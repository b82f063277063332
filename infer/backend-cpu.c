/* infer: the CPU backend (style.md 2.6): oneDNN convolutions and sgemm, OpenMP loops;
 * convolutions in fp32, or in bf16 where oneDNN reports AVX512-BF16 or AMX.
 *
 * The arena is host memory; upload and download are copies. graph_init() prepares one
 * state per node (a oneDNN primitive with reordered weights, or a mixer's transposed
 * constants) and the scratch memory they share, so compute() allocates nothing. Tiles run
 * one at a time (max_batch 1): IN and Mamba are per sample anyway, and each op already uses
 * every thread. Threads: one caller at a time; `threads` OpenMP threads help it. */
#include "infer/backend-impl.h"

#include <omp.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "infer/ops-cpu/ops-cpu-impl.h"

struct node_state {
    struct mms_cpu_conv conv;
    struct mms_cpu_mixer mixer;
};

struct graph_ctx {
    int n_nodes;
    struct node_state *nodes; /* zeroed at allocation: the fini functions accept empty ones */
    void *scratch;            /* shared by the convolutions, one at a time */
    void *src_bf16;           /* the same, for their bf16 input (NULL in fp32) */
    double *norm_part;
    size_t fixed_bytes;
};

const char *
mms_cpu_precision_why(int precision)
{
    switch (precision) {
    case MMS_PRECISION_FP32:
        return NULL;
    case MMS_PRECISION_BF16: {
        /* the ISA oneDNN dispatches to, which ONEDNN_MAX_CPU_ISA can lower */
        dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
        if (((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) ==
            (unsigned)dnnl_cpu_isa_avx512_core_bf16)
            return NULL;
        return "bf16 on the CPU needs AVX512-BF16 or AMX, which oneDNN does not report here";
    }
    case MMS_PRECISION_FP16:
        return "fp16 runs on CUDA only; the CPU computes in fp32, or bf16 where it has "
               "AVX512-BF16 or AMX";
    default:
        return "unknown precision";
    }
}

static int
cpu_init(struct mms_backend *be, const struct mms_backend_params *p)
{
    const char *why = mms_cpu_precision_why(p->precision);
    if (why != NULL) {
        mms_log(MMS_LOG_ERR, "backend cpu: precision %s: %s", mms_precision_name(p->precision),
                why);
        return MMS_ENOTSUP;
    }
    struct mms_cpu *cpu = calloc(1, sizeof *cpu);
    if (cpu == NULL)
        return MMS_ENOMEM;
    cpu->bf16 = p->precision == MMS_PRECISION_BF16;
    cpu->pin = p->cpus != NULL && mms_cpus_count(p->cpus) > 0;
    if (cpu->pin)
        cpu->cpus = *p->cpus;
    cpu->threads = p->threads > 0 ? p->threads
                   : cpu->pin     ? mms_cpus_count(&cpu->cpus)
                                  : mms_cpus_usable();
    if (dnnl_engine_create(&cpu->engine, dnnl_cpu, 0) != dnnl_success)
        goto fail;
    if (dnnl_stream_create(&cpu->stream, cpu->engine, dnnl_stream_default_flags) != dnnl_success)
        goto fail;
    be->ctx = cpu;
    return 0;
fail:
    dnnl_engine_destroy(cpu->engine);
    free(cpu);
    return MMS_ENOMEM;
}

static void
cpu_free(struct mms_backend *be)
{
    struct mms_cpu *cpu = be->ctx;
    if (cpu == NULL)
        return;
    dnnl_stream_destroy(cpu->stream);
    dnnl_engine_destroy(cpu->engine);
    free(cpu);
    be->ctx = NULL;
}

static int
cpu_buffer_alloc(struct mms_backend *be, size_t nbytes, struct mms_buffer *out)
{
    (void)be;
    size_t n = (nbytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, n ? n : 64);
    if (p == NULL)
        return MMS_ENOMEM;
    out->host = p;
    out->device = NULL;
    out->nbytes = nbytes;
    return 0;
}

static void
cpu_buffer_free(struct mms_backend *be, struct mms_buffer *buf)
{
    (void)be;
    free(buf->host);
    memset(buf, 0, sizeof *buf);
}

static int
cpu_upload(struct mms_backend *be, struct mms_buffer *buf, size_t offset, const void *src,
           size_t nbytes)
{
    (void)be;
    if (offset > buf->nbytes || nbytes > buf->nbytes - offset)
        return MMS_EINVAL;
    memcpy((char *)buf->host + offset, src, nbytes);
    return 0;
}

static int
cpu_download(struct mms_backend *be, void *dst, const struct mms_buffer *buf, size_t offset,
             size_t nbytes)
{
    (void)be;
    if (offset > buf->nbytes || nbytes > buf->nbytes - offset)
        return MMS_EINVAL;
    memcpy(dst, (const char *)buf->host + offset, nbytes);
    return 0;
}

static bool
cpu_supports_op(struct mms_backend *be, const struct mms_node *nd)
{
    (void)be;
    return nd->op >= 0 && nd->op < MMS_OP__COUNT;
}

static void
cpu_graph_fini(struct mms_backend *be, void *gctx)
{
    (void)be;
    struct graph_ctx *gc = gctx;
    if (gc == NULL)
        return;
    for (int i = 0; gc->nodes != NULL && i < gc->n_nodes; i++) {
        mms__cpu_conv_fini(&gc->nodes[i].conv);
        mms__cpu_mixer_fini(&gc->nodes[i].mixer);
    }
    free(gc->nodes);
    free(gc->scratch);
    free(gc->src_bf16);
    free(gc->norm_part);
    free(gc);
}

static int graph_init(struct mms_cpu *cpu, const struct mms_graph *g, struct graph_ctx *gc,
                      size_t *fixed_bytes);

/* oneDNN sizes a primitive's parallel work for the threads OpenMP offers when the primitive is
 * created, and runs it on that many (a jit convolution keeps jcp.nthr): the primitives are
 * created under the configured count, as the passes run, or a pass would use every core
 * whatever [infer] threads says. The calling thread's count is restored after. */
static int
cpu_graph_init(struct mms_backend *be, const struct mms_graph *g, void **gctx, size_t *fixed_bytes)
{
    struct mms_cpu *cpu = be->ctx;
    struct graph_ctx *gc = calloc(1, sizeof *gc);
    if (gc == NULL)
        return MMS_ENOMEM;
    int saved = omp_get_max_threads();
    omp_set_num_threads(cpu->threads);
    int rc = graph_init(cpu, g, gc, fixed_bytes);
    omp_set_num_threads(saved);
    if (rc < 0) {
        cpu_graph_fini(be, gc);
        return rc;
    }
    *gctx = gc;
    return 0;
}

static int
graph_init(struct mms_cpu *cpu, const struct mms_graph *g, struct graph_ctx *gc,
           size_t *fixed_bytes)
{
    int rc = MMS_ENOMEM;
    if ((gc->nodes = calloc((size_t)g->n_nodes, sizeof *gc->nodes)) == NULL)
        return MMS_ENOMEM;
    gc->n_nodes = g->n_nodes;
    size_t scratch = 0, src_bf16 = 0;
    int64_t max_c = 1;
    bool first_conv = true;
    for (int i = 0; i < g->n_nodes; i++) {
        const struct mms_node *nd = &g->nodes[i];
        struct node_state *s = &gc->nodes[i];
        switch (nd->op) {
        case MMS_OP_CONV:
        case MMS_OP_DECONV:
            if ((rc = mms__cpu_conv_init(cpu, g, nd, mms__cpu_conv_bf16(cpu, nd, first_conv),
                                         &s->conv)) < 0)
                return rc;
            first_conv = false;
            gc->fixed_bytes += s->conv.wei_bytes;
            if (s->conv.scratch_bytes > scratch)
                scratch = s->conv.scratch_bytes;
            if (s->conv.src_bf16_bytes > src_bf16)
                src_bf16 = s->conv.src_bf16_bytes;
            break;
        case MMS_OP_MIXER:
            if ((rc = mms__cpu_mixer_init(nd, cpu->threads, &s->mixer)) < 0)
                return rc;
            gc->fixed_bytes += s->mixer.bytes;
            break;
        case MMS_OP_NORM:
            if (g->tensors[nd->src[0]].c > max_c)
                max_c = g->tensors[nd->src[0]].c;
            break;
        default:
            break;
        }
    }
    if (scratch > 0 && (gc->scratch = aligned_alloc(64, (scratch + 63) & ~(size_t)63)) == NULL)
        return MMS_ENOMEM;
    if (src_bf16 > 0 && (gc->src_bf16 = aligned_alloc(64, (src_bf16 + 63) & ~(size_t)63)) == NULL)
        return MMS_ENOMEM;
    /* IN: 2 doubles per channel per thread, then scale and shift as floats */
    size_t part = (size_t)max_c * (2 * (size_t)cpu->threads + 1) * sizeof(double);
    if ((gc->norm_part = malloc(part)) == NULL)
        return MMS_ENOMEM;
    gc->fixed_bytes += scratch + src_bf16 + part;
    *fixed_bytes = gc->fixed_bytes;
    return 0;
}

static int
cpu_max_batch(struct mms_backend *be, const struct mms_graph *g)
{
    (void)be;
    (void)g;
    return 1;
}

/* With [infer] cpus, each call's threads run on those CPUs: every thread of the calling
 * thread's OpenMP team (the one the call's regions and oneDNN use) pins itself, and afterwards
 * gets back the CPUs the calling thread had. */
static void
team_pin(const struct mms_cpu *cpu, const struct mms_cpus *set)
{
#pragma omp parallel num_threads(cpu->threads)
    (void)mms_cpus_pin(set);
}

struct pinned {
    bool on;
    struct mms_cpus before;
};

static struct pinned
pin_begin(const struct mms_cpu *cpu)
{
    struct pinned p = {.on = false};
    if (cpu->pin && mms_cpus_get(&p.before) == 0) {
        p.on = true;
        team_pin(cpu, &cpu->cpus);
    }
    return p;
}

static void
pin_end(const struct mms_cpu *cpu, const struct pinned *p)
{
    if (p->on)
        team_pin(cpu, &p->before);
}

static int compute_nodes(struct mms_cpu *cpu, const struct mms_graph *g, struct graph_ctx *gc,
                         char *base);

static int
cpu_compute(struct mms_backend *be, const struct mms_graph *g, void *gctx, struct mms_buffer *arena,
            int n)
{
    struct mms_cpu *cpu = be->ctx;
    if (n != 1)
        return MMS_EINVAL;
    omp_set_num_threads(cpu->threads);
    struct pinned p = pin_begin(cpu);
    int rc = compute_nodes(cpu, g, gctx, arena->host);
    pin_end(cpu, &p);
    return rc;
}

static int
compute_nodes(struct mms_cpu *cpu, const struct mms_graph *g, struct graph_ctx *gc, char *base)
{
    mms__cpu_ftz();
#define T(i) ((float *)(base + g->tensors[(i)].offset))
    for (int i = 0; i < g->n_nodes; i++) {
        const struct mms_node *nd = &g->nodes[i];
        struct node_state *s = &gc->nodes[i];
        const struct mms_tdesc *src = &g->tensors[nd->src[0]];
        int rc = 0;
        double t0 = g->profile != NULL ? mms_mono_s() : 0.0;
        switch (nd->op) {
        case MMS_OP_CONV:
        case MMS_OP_DECONV:
            rc = mms__cpu_conv_run(cpu, &s->conv, T(nd->src[0]), T(nd->dst), gc->scratch,
                                   gc->src_bf16);
            break;
        case MMS_OP_AVGPOOL:
            mms__cpu_avgpool(cpu->threads, src, T(nd->src[0]), nd->u.up.stride, T(nd->dst));
            break;
        case MMS_OP_NORM:
            mms__cpu_instnorm(cpu->threads, T(nd->src[0]), mms__tdesc_voxels(src), src->c,
                              nd->u.norm.gamma, nd->u.norm.beta, nd->u.norm.eps, nd->u.norm.lrelu,
                              nd->slope, gc->norm_part);
            break;
        case MMS_OP_ADD_LRELU:
            mms__cpu_add_lrelu(cpu->threads, T(nd->src[0]), T(nd->src[1]),
                               mms__tdesc_voxels(src) * src->c, nd->slope);
            break;
        case MMS_OP_MIXER: {
            float *taps[MMS_TAP__COUNT];
            bool any = false;
            for (int j = 0; j < MMS_TAP__COUNT; j++) {
                taps[j] = nd->u.mixer.tap[j] >= 0 ? T(nd->u.mixer.tap[j]) : NULL;
                any = any || taps[j] != NULL;
            }
            rc =
                mms__cpu_mixer_run(cpu, nd, &s->mixer, mms__tdesc_voxels(src), T(nd->src[0]),
                                   T(nd->dst), base + g->tensors[nd->ws].offset, any ? taps : NULL);
            break;
        }
        case MMS_OP_UP_CONCAT:
            mms__cpu_up_concat(cpu->threads, src, T(nd->src[0]), &g->tensors[nd->src[1]],
                               T(nd->src[1]), nd->u.up.stride, T(nd->dst));
            break;
        case MMS_OP_TO_NCDHW:
            mms__cpu_transpose(cpu->threads, T(nd->src[0]), T(nd->dst), mms__tdesc_voxels(src),
                               src->c);
            break;
        case MMS_OP_FROM_NCDHW:
            mms__cpu_transpose(cpu->threads, T(nd->src[0]), T(nd->dst), src->c,
                               mms__tdesc_voxels(src));
            break;
        default:
            rc = MMS_ENOTSUP;
            break;
        }
        if (rc < 0) {
            mms_log(MMS_LOG_ERR, "cpu: %s: %s", nd->name, mms_strerror(rc));
            return rc;
        }
        if (g->profile != NULL)
            mms__profile_account(g->profile, g, nd, 1, mms_mono_s() - t0);
    }
#undef T
    return 0;
}

static int
cpu_buffer_zero(struct mms_backend *be, struct mms_buffer *buf)
{
    (void)be;
    memset(buf->host, 0, buf->nbytes);
    return 0;
}

/* The window slots: the map of kernels/window-math.h over the tile, on every thread. */
static int
cpu_window_gather(struct mms_backend *be, const struct mms_buffer *vol,
                  const struct mms_k_window *w, struct mms_buffer *dst, size_t offset)
{
    const struct mms_cpu *cpu = be->ctx;
    if (!mms__window_gather_fits(vol, w, dst, offset))
        return MMS_EINVAL;
    const float *v = vol->host;
    float *d = (float *)((char *)dst->host + offset);
    const int64_t pp = w->p[0] * w->p[1] * w->p[2];
    struct pinned p = pin_begin(cpu);
#pragma omp parallel for num_threads(cpu->threads) schedule(static)
    for (int64_t i = 0; i < pp; i++) {
        int64_t at;
        (void)mms_k_window_map(w, i, &at);
        d[i] = v[at];
    }
    pin_end(cpu, &p);
    return 0;
}

static int
cpu_window_scatter(struct mms_backend *be, const struct mms_buffer *src, size_t offset,
                   int channels, const struct mms_buffer *gauss, float scale,
                   const struct mms_k_window *w, int64_t pv, struct mms_buffer *acc)
{
    const struct mms_cpu *cpu = be->ctx;
    if (!mms__window_scatter_fits(src, offset, channels, gauss, w, pv, acc))
        return MMS_EINVAL;
    const float *s = (const float *)((const char *)src->host + offset), *g = gauss->host;
    float *a = acc->host;
    const int64_t pp = w->p[0] * w->p[1] * w->p[2];
    struct pinned p = pin_begin(cpu);
#pragma omp parallel for num_threads(cpu->threads) schedule(static)
    for (int64_t i = 0; i < pp; i++) {
        int64_t at, l = mms_k_window_map(w, i, &at);
        for (int ch = 0; ch < channels; ch++)
            a[ch * pv + at] += mms_k_window_term(g[l], s[ch * pp + i], scale);
    }
    pin_end(cpu, &p);
    return 0;
}

const struct mms_backend_ops mms__backend_cpu = {
    .api_version = MMS_BACKEND_API_VERSION,
    .name = "cpu",
    .init = cpu_init,
    .free = cpu_free,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .supports_op = cpu_supports_op,
    .graph_init = cpu_graph_init,
    .graph_fini = cpu_graph_fini,
    .max_batch = cpu_max_batch,
    .compute = cpu_compute,
    .synchronize = NULL,
    .buffer_zero = cpu_buffer_zero,
    .window_gather = cpu_window_gather,
    .window_scatter = cpu_window_scatter,
};
