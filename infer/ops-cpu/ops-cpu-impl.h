/* infer/ops-cpu: the CPU backend's ops (module-private). Convolutions go through oneDNN
 * primitives made at graph_init(); projections through oneDNN's sgemm; the rest are loops
 * parallelized with OpenMP, whose thread pool oneDNN shares.
 * Threads: the calling thread runs the op and OpenMP workers help it. */
#ifndef MMS_INFER_OPS_CPU_IMPL_H
#define MMS_INFER_OPS_CPU_IMPL_H

#include <oneapi/dnnl/dnnl.h>

#include "infer/graph-impl.h"

/* Hot loops are compiled for AVX-512, AVX2+FMA and the baseline, chosen at load. */
#define MMS_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

struct mms_cpu {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    int threads;
    bool bf16;            /* [infer] precision bf16: the convolutions that dominate run in bf16 */
    bool pin;             /* compute on cpus ([infer] cpus) */
    struct mms_cpus cpus; /* with pin: the CPUs of inference */
};

/* A prepared convolution. In bf16 the fp32 input is first converted (cvt, a oneDNN reorder)
 * into a bf16 buffer of src_bf16_bytes the caller gives. */
struct mms_cpu_conv {
    dnnl_primitive_t prim, cvt;
    dnnl_memory_t src, src_f32, wei, bias, dst, scratch;
    void *wei_data; /* weights in the primitive's layout (owned) */
    size_t wei_bytes, scratch_bytes, src_bf16_bytes;
};

/* Whether a CONV or DECONV node (first: the graph's first) runs in bf16: with [infer]
 * precision bf16, the convolutions with a kernel of several voxels after the first one, where
 * nearly all the FLOPs are. Those that read the image (the first) or give the logits (the
 * 1x1x1 head), where one rounding moves a label boundary, stay fp32, as do the other 1x1x1
 * ones and the transposed convolutions (as on CUDA), which cost little. */
bool mms__cpu_conv_bf16(const struct mms_cpu *cpu, const struct mms_node *nd, bool first);
/* Prepare a CONV or DECONV node, in bf16 when bf16 (else fp32). */
int mms__cpu_conv_init(struct mms_cpu *cpu, const struct mms_graph *g, const struct mms_node *nd,
                       bool bf16, struct mms_cpu_conv *c);
/* dst = conv(src); scratch holds scratch_bytes, src_bf16 src_bf16_bytes (NULL in fp32). */
int mms__cpu_conv_run(struct mms_cpu *cpu, struct mms_cpu_conv *c, const float *src, float *dst,
                      void *scratch, void *src_bf16);
void mms__cpu_conv_fini(struct mms_cpu_conv *c);

/* Prepared per-direction constants of a mixer: transposed for access along channels. */
struct mms_cpu_mamba {
    float *conv_t; /* (K, E) */
    float *dt_t;   /* (R, E) */
    float *a_t;    /* (N, E): A = -exp(A_log), transposed */
};

struct mms_cpu_mixer {
    struct mms_cpu_mamba dir[2];
    float *seg; /* token-parallel scan: (threads, N x 16 + 16) carries */
    size_t bytes;
};

/* Prepare a MIXER node for runs on up to threads threads. Returns 0 or MMS_ENOMEM. */
int mms__cpu_mixer_init(const struct mms_node *nd, int threads, struct mms_cpu_mixer *mx);
void mms__cpu_mixer_fini(struct mms_cpu_mixer *mx);
/* One scan direction (0 forward, 1 backward) of a mixer over L tokens:
 * dst (L, C) = alpha Mamba_dir(LN(src)) + beta dst. Without LN weights (ln_w NULL) the Mamba
 * reads src itself. ws is the node's workspace; taps may be NULL. */
int mms__cpu_mamba_dir(struct mms_cpu *cpu, const struct mms_node *nd,
                       const struct mms_cpu_mixer *mx, int dir, int64_t l, const float *src,
                       float *dst, float beta, void *ws, float *const taps[MMS_TAP__COUNT]);
/* dst (L, C) = mixer(src (L, C)); ws is the node's workspace; taps may be NULL. */
int mms__cpu_mixer_run(struct mms_cpu *cpu, const struct mms_node *nd,
                       const struct mms_cpu_mixer *mx, int64_t l, const float *src, float *dst,
                       void *ws, float *const taps[MMS_TAP__COUNT]);

/* x (L, C) = IN(x) in place, then LReLU(slope) when lrelu. part holds 2 C doubles per
 * thread. */
void mms__cpu_instnorm(int threads, float *x, int64_t l, int64_t c, const float *gamma,
                       const float *beta, float eps, bool lrelu, float slope, double *part);
/* u (T, C) = LN over the C channels of each of the T tokens of x. */
void mms__cpu_layernorm(int threads, const float *x, float *u, int64_t t, int64_t c, const float *w,
                        const float *b, float eps);
/* x = LReLU(x + y), n elements. */
void mms__cpu_add_lrelu(int threads, float *x, const float *y, int64_t n, float slope);
/* dst (D, H, W, 2F) = concat(NearestUp_stride(lo (d, h, w, F)), skip (D, H, W, F)). */
void mms__cpu_up_concat(int threads, const struct mms_tdesc *lo, const float *lo_data,
                        const struct mms_tdesc *skip, const float *skip_data, const int stride[3],
                        float *dst);
/* dst (d/t0, h/t1, w/t2, C) = the mean of each t window of src (d, h, w, C); t = stride. */
void mms__cpu_avgpool(int threads, const struct mms_tdesc *src, const float *src_data,
                      const int stride[3], float *dst);
/* Layout changes between (L, C) and (C, L). */
void mms__cpu_transpose(int threads, const float *src, float *dst, int64_t rows, int64_t cols);

/* Flush denormals to zero in this thread (mmunet.md 3.2 allows FTZ/DAZ). */
void mms__cpu_ftz(void);

#endif
