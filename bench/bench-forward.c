/* bench-forward: time one forward pass of a model on a backend.
 *
 *   bench-forward MODEL --tile D H W [--threads T] [--runs R] [--backend cpu|cuda]
 *                 [--precision fp32|bf16|fp16] [--batch N]
 *
 * A pass runs N tiles (default 1) in one mms_net_forward() call; the backend splits them by
 * its max batch. On CUDA the device memory is the network's own figures (arena for the max
 * batch plus the fixed part, device_mb), and the oneDNN-alone figures are 0 and null.
 *
 * Prints one JSON object: the median and minimum of R timed passes after one warm-up, the
 * arena and fixed memory, the process's peak RSS (after the timed passes) and its RSS before
 * the network was built, the time per op kind of one profiled pass, the FLOP/s the
 * convolutions reached inside the pass, and the FLOP/s oneDNN reaches on the same convolution
 * shapes run alone (each primitive timed in a loop on its own buffers: the practical limit on
 * this machine), and whether oneDNN's preferred layout for the largest convolution is the
 * channels-last layout the engine uses. tools/bench-forward.sh runs it beside PyTorch. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench/bench.h"
#include "common/err.h"
#include "infer/infer.h"
#include "infer/model-impl.h"
#include "infer/ops-cpu/ops-cpu-impl.h"

static double
peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static double
cur_rss_mb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return (double)rss * 4096.0 / (1024.0 * 1024.0);
}

/* oneDNN on its own: every convolution of the graph, timed alone; returns seconds per pass
 * (sum of each primitive's best time) and the FLOPs. */
static int
onednn_alone(const struct mms_model *m, const int64_t tile[3], int threads, bool bf16, double *sec,
             double *flop, int *layout_any_is_ndhwc)
{
    struct mms_graph *g = NULL;
    int rc = mms__graph_build(m, 0, tile, false, &g);
    if (rc < 0)
        return rc;
    struct mms_cpu cpu = {.threads = threads, .bf16 = bf16};
    dnnl_engine_create(&cpu.engine, dnnl_cpu, 0);
    dnnl_stream_create(&cpu.stream, cpu.engine, dnnl_stream_default_flags);
    omp_set_num_threads(threads);
    *sec = *flop = 0.0;
    int64_t best_flop = -1;
    bool first = true;
    for (int i = 0; i < g->n_nodes && rc == 0; i++) {
        const struct mms_node *nd = &g->nodes[i];
        if (nd->op != MMS_OP_CONV)
            continue;
        const struct mms_tdesc *s = &g->tensors[nd->src[0]], *d = &g->tensors[nd->dst];
        struct mms_cpu_conv cv;
        if ((rc = mms__cpu_conv_init(&cpu, g, nd, mms__cpu_conv_bf16(&cpu, nd, first), &cv)) < 0)
            break;
        first = false;
        size_t ns = (size_t)(s->c * mms__tdesc_voxels(s)),
               no = (size_t)(d->c * mms__tdesc_voxels(d));
        float *src = aligned_alloc(64, ns * 4 + 64), *dst = aligned_alloc(64, no * 4 + 64);
        void *scratch = aligned_alloc(64, cv.scratch_bytes + 64);
        void *src_bf16 = cv.src_bf16_bytes > 0 ? aligned_alloc(64, cv.src_bf16_bytes + 64) : NULL;
        for (size_t j = 0; j < ns; j++)
            src[j] = (float)((j * 2654435761u) % 1000) * 1e-3f - 0.5f;
        memset(dst, 0, no * 4);
        double best = INFINITY;
        for (int r = 0; r < 4; r++) {
            double t0 = now_s();
            mms__cpu_conv_run(&cpu, &cv, src, dst, scratch, src_bf16);
            double t = now_s() - t0;
            best = t < best ? t : best;
        }
        double f = 2.0 * nd->u.conv.k[0] * nd->u.conv.k[1] * nd->u.conv.k[2] *
                   (double)nd->u.conv.cin * (double)nd->u.conv.cout * (double)mms__tdesc_voxels(d);
        *sec += best;
        *flop += f;
        if ((int64_t)f > best_flop) { /* where does oneDNN put the largest one when free? */
            best_flop = (int64_t)f;
            dnnl_dims_t sd = {1, s->c, s->d, s->h, s->w}, dd = {1, d->c, d->d, d->h, d->w};
            dnnl_dims_t wd = {d->c, s->c, nd->u.conv.k[0], nd->u.conv.k[1], nd->u.conv.k[2]};
            dnnl_dims_t bd = {d->c},
                        st = {nd->u.conv.stride[0], nd->u.conv.stride[1], nd->u.conv.stride[2]};
            dnnl_dims_t pl = {nd->u.conv.pad[0], nd->u.conv.pad[1], nd->u.conv.pad[2]}, pr;
            int64_t in[3] = {s->d, s->h, s->w}, out[3] = {d->d, d->h, d->w};
            for (int k = 0; k < 3; k++)
                pr[k] = (out[k] - 1) * st[k] + nd->u.conv.k[k] - in[k] - pl[k];
            dnnl_memory_desc_t smd, dmd, wmd, bmd, nhwc;
            dnnl_convolution_desc_t cd;
            dnnl_primitive_desc_t pd = NULL;
            dnnl_memory_desc_init_by_tag(&smd, 5, sd, dnnl_f32, dnnl_format_tag_any);
            dnnl_memory_desc_init_by_tag(&dmd, 5, dd, dnnl_f32, dnnl_format_tag_any);
            dnnl_memory_desc_init_by_tag(&wmd, 5, wd, dnnl_f32, dnnl_format_tag_any);
            dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_x);
            dnnl_memory_desc_init_by_tag(&nhwc, 5, dd, dnnl_f32, dnnl_ndhwc);
            dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                               &smd, &wmd, &bmd, &dmd, st, pl, pr);
            if (dnnl_primitive_desc_create(&pd, &cd, NULL, cpu.engine, NULL) == dnnl_success) {
                *layout_any_is_ndhwc = dnnl_memory_desc_equal(
                    &nhwc, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0));
                dnnl_primitive_desc_destroy(pd);
            }
        }
        free(src);
        free(dst);
        free(scratch);
        free(src_bf16);
        mms__cpu_conv_fini(&cv);
    }
    dnnl_stream_destroy(cpu.stream);
    dnnl_engine_destroy(cpu.engine);
    mms__graph_free(g);
    return rc;
}

static const char usage[] =
    "usage: bench-forward MODEL [--tile D H W] [--threads T] [--runs R] [--backend cpu|cuda] "
    "[--precision fp32|bf16|fp16] [--batch N]\n";

int
main(int argc, char **argv)
{
    const char *path = NULL;
    int64_t tile[3] = {0, 0, 0};
    int threads = 0, runs = 5, batch = 1, precision = MMS_PRECISION_FP32;
    const char *backend = "cpu", *prec_name = "fp32";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tile") == 0 && i + 3 < argc) {
            for (int d = 0; d < 3; d++)
                tile[d] = atoll(argv[++i]);
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            batch = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc &&
                   (strcmp(argv[i + 1], "cpu") == 0 || strcmp(argv[i + 1], "cuda") == 0)) {
            backend = argv[++i];
        } else if (strcmp(argv[i], "--precision") == 0 && i + 1 < argc) {
            prec_name = argv[++i];
            if (strcmp(prec_name, "fp32") == 0)
                precision = MMS_PRECISION_FP32;
            else if (strcmp(prec_name, "bf16") == 0)
                precision = MMS_PRECISION_BF16;
            else if (strcmp(prec_name, "fp16") == 0)
                precision = MMS_PRECISION_FP16;
            else
                path = NULL, i = argc; /* usage below */
        } else if (argv[i][0] != '-' && path == NULL) {
            path = argv[i];
        } else {
            fprintf(stderr, "%s", usage);
            return 2;
        }
    }
    if (path == NULL || runs < 1 || runs > 1000 || batch < 1 || batch > 64) {
        fprintf(stderr, "%s", usage);
        return 2;
    }
    char why[512] = "";
    struct mms_model *m = NULL;
    struct mms_backend *be = NULL;
    struct mms_net *net = NULL;
    int rc = mms_model_load(path, &m, why, sizeof why);
    if (rc < 0) {
        fprintf(stderr, "bench-forward: %s\n", why);
        return 1;
    }
    const struct mms_card *card = mms_model_card(m);
    if (tile[0] == 0)
        memcpy(tile, card->inf.patch, sizeof tile);
    struct mms_backend_params bp = {.threads = threads, .precision = precision};
    double base_rss = cur_rss_mb();
    if ((rc = mms_backend_open(backend, &bp, &be)) < 0 ||
        (rc = mms_net_new(m, be, tile, 0, &net)) < 0) {
        fprintf(stderr, "bench-forward: %s\n", mms_strerror(rc));
        return 1;
    }
    int64_t vox = tile[0] * tile[1] * tile[2];
    float *in = malloc((size_t)(vox * card->arch.in_channels) * sizeof(float) * (size_t)batch);
    float *out = malloc((size_t)(vox * card->arch.num_classes) * sizeof(float) * (size_t)batch);
    unsigned long long s = 12345;
    for (int64_t i = 0; i < vox * card->arch.in_channels * batch; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        in[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 4.0 - 2.0);
    }
    double *t = malloc((size_t)runs * sizeof(double));
    if ((rc = mms_net_forward(net, in, batch, out)) < 0) { /* warm-up */
        fprintf(stderr, "bench-forward: forward: %s\n", mms_strerror(rc));
        return 1;
    }
    for (int r = 0; r < runs; r++) {
        double t0 = now_s();
        mms_net_forward(net, in, batch, out);
        t[r] = (now_s() - t0) * 1e3;
    }
    double peak = peak_rss_mb();
    mms_net_profile_enable(net, true);
    mms_net_forward(net, in, 1, out);
    struct mms_net_profile p = *mms_net_profile(net);
    double sum = 0.0;
    for (int64_t i = 0; i < vox * card->arch.num_classes; i++)
        sum += out[i];
    double alone_s = 0.0, alone_flop = 0.0;
    int any_ndhwc = -1;
    int nthreads = threads > 0 ? threads : omp_get_num_procs();
    bool cpu = strcmp(backend, "cpu") == 0;
    if (cpu)
        onednn_alone(m, tile, nthreads, mms_backend_precision(be) == MMS_PRECISION_BF16, &alone_s,
                     &alone_flop, &any_ndhwc);
    double med = median(t, runs), best = t[0];
    for (int r = 1; r < runs; r++)
        best = t[r] < best ? t[r] : best;
    printf("{\"impl\": \"mmsegd-%s\", \"model\": \"%s\", \"threads\": %d, "
           "\"precision\": \"%s\", \"batch\": %d, \"max_batch\": %d, "
           "\"tile\": [%lld, %lld, %lld], \"runs_ms\": [",
           backend, card->name, nthreads, mms_precision_name(mms_backend_precision(be)), batch,
           mms_net_max_batch(net), (long long)tile[0], (long long)tile[1], (long long)tile[2]);
    for (int r = 0; r < runs; r++)
        printf("%s%.1f", r ? ", " : "", t[r]);
    printf("], \"median_ms\": %.1f, \"min_ms\": %.1f, \"median_ms_per_tile\": %.2f, "
           "\"ops\": %d, \"arena_mb\": %.1f, "
           "\"arena_unplanned_mb\": %.1f, \"fixed_mb\": %.1f, \"baseline_rss_mb\": %.1f, "
           "\"peak_rss_mb\": %.1f, \"params\": %lld, "
           "\"profile_ms\": {\"conv\": %.1f, \"norm\": %.1f, \"mixer\": %.1f, \"other\": %.1f}, "
           "\"conv_gflop\": %.2f, \"conv_gflops_in_pass\": %.1f, \"conv_gflops_onednn_alone\": "
           "%.1f, \"onednn_prefers_ndhwc\": %s, \"device_mb\": %.1f, \"logits_sum\": %.6g}\n",
           med, best, med / batch, mms_net_op_count(net), mms_net_arena_bytes(net) / 1048576.0,
           mms_net_unplanned_bytes(net) / 1048576.0, mms_net_fixed_bytes(net) / 1048576.0, base_rss,
           peak, (long long)mms_model_param_count(m), p.conv_s * 1e3, p.norm_s * 1e3,
           p.mixer_s * 1e3, p.other_s * 1e3, p.conv_flop * 1e-9,
           p.conv_s > 0 ? p.conv_flop / p.conv_s * 1e-9 : 0.0,
           alone_s > 0 ? alone_flop / alone_s * 1e-9 : 0.0,
           any_ndhwc < 0 ? "null"
           : any_ndhwc   ? "true"
                         : "false",
           cpu ? 0.0 : (mms_net_arena_bytes(net) + mms_net_fixed_bytes(net)) / 1048576.0, sum);
    free(t);
    free(in);
    free(out);
    mms_net_free(net);
    mms_backend_free(be);
    mms_model_free(m);
    return 0;
}
