/* infer: the network as a list of ops over planned buffers (module-private).
 *
 * The graph is built once per (model, tile shape) from the card (mmunet.md 2.5). Tensors are
 * per-sample activations stored channels-last, (D, H, W, C) with C fastest, which is both
 * the token layout of the Mamba path ((L, C), mmunet.md 2.3) and the layout oneDNN's direct
 * convolutions prefer on x86 (measured by bench/bench-forward: `any` resolves to ndhwc).
 * Every tensor and workspace lives at an offset in one arena (style.md 2.5). */
#ifndef MMS_INFER_GRAPH_IMPL_H
#define MMS_INFER_GRAPH_IMPL_H

#include "infer/infer.h"

enum mms_op {
    MMS_OP_CONV,       /* dst = conv(src0) + bias; with accumulate: dst = LReLU(conv + dst) */
    MMS_OP_NORM,       /* src0 = IN(src0) (affine), then LReLU when lrelu; in place */
    MMS_OP_ADD_LRELU,  /* src0 = LReLU(src0 + src1); in place */
    MMS_OP_MIXER,      /* dst = alpha (Mamba_f + Rev Mamba_b)(LN(tokens(src0))) (+ src0) */
    MMS_OP_UP_CONCAT,  /* dst = concat_channels(NearestUp(src0), src1) */
    MMS_OP_TO_NCDHW,   /* dst (C, D, H, W) = src0 (D, H, W, C) */
    MMS_OP_FROM_NCDHW, /* dst (D, H, W, C) = src0 (C, D, H, W) */
    MMS_OP_DECONV,     /* dst = transposed conv(src0) + bias, kernel = stride, no padding */
    MMS_OP_AVGPOOL,    /* dst = mean of each up.stride window of src0 (kernel = stride) */
    MMS_OP__COUNT
};

/* One planned buffer. Activations are (d, h, w, c), c fastest; workspaces are bytes. */
struct mms_tdesc {
    const char *name; /* block prefix for taps, or NULL */
    int64_t c, d, h, w;
    size_t nbytes;
    int first, last; /* op indices of the first write and the last use */
    size_t offset;   /* in the arena, 64-byte aligned */
    bool raw;        /* taps copy it as stored: tokens (L, C) or (C, D, H, W) */
    int64_t tap_c;   /* taps read channels [0, tap_c) only; 0 = all */
};

/* The weights of one scan direction (mmunet.md 2.7, 3.1); E = expand C. */
struct mms_mamba_w {
    const float *in_proj;  /* (2E, C) */
    const float *conv_w;   /* (E, 1, K) */
    const float *conv_b;   /* (E) */
    const float *x_proj;   /* (R + 2N, E) */
    const float *dt_w;     /* (E, R) */
    const float *dt_b;     /* (E) */
    const float *a_log;    /* (E, N) */
    const float *d;        /* (E) */
    const float *out_proj; /* (C, E) */
};

enum mms_mixer_tap {
    MMS_TAP_LN,
    MMS_TAP_MIXER,
    MMS_TAP_DELTA,
    MMS_TAP_YPRE,
    MMS_TAP_DELTA_B,
    MMS_TAP_YPRE_B,
    MMS_TAP__COUNT
};

struct mms_node {
    enum mms_op op;
    const char *name;    /* e.g. "encoder.stages.1.blocks.0.conv1" */
    int src[2], dst, ws; /* tensor indices, -1 for none */
    union {
        struct {
            int k[3], stride[3], pad[3];
            int64_t cin, cout;
            const float *w;  /* CONV (cout, cin, kD, kH, kW); DECONV (cin, cout, kD, kH, kW) */
            const float *b;  /* (cout), or NULL: no bias */
            bool accumulate; /* dst = LReLU(conv(src0) + dst) */
        } conv;
        struct {
            const float *gamma, *beta;
            float eps;
            bool lrelu;
        } norm;
        struct {
            int64_t c, e, n, r, k;
            int64_t chunk; /* tokens per workspace chunk */
            const float *ln_w, *ln_b;
            float ln_eps, alpha;
            bool inner_residual;
            struct mms_mamba_w dir[2]; /* forward, backward */
            int tap[MMS_TAP__COUNT];   /* tensor indices or -1 */
        } mixer;
        struct {
            int stride[3];
        } up; /* UP_CONCAT's replication, AVGPOOL's window */
    } u;
    float slope; /* LReLU negative slope */
};

struct mms_graph {
    const struct mms_arch *arch;
    int64_t tile[3];
    int n_nodes, cap_nodes;
    struct mms_node *nodes;
    int n_tensors, cap_tensors;
    struct mms_tdesc *tensors;
    int input, output; /* (Cin, D, H, W) and (num_classes, D, H, W) tensors */
    size_t arena_bytes;
    size_t unplanned_bytes;          /* sum of all buffers: the arena without reuse */
    struct mms_net_profile *profile; /* per-op timing when not NULL (written by compute) */
    char **names;                    /* owned strings behind node and tensor names */
    int n_names, cap_names;
};

/* Bytes of the workspace of one MIXER node (all chunk buffers and the scan state). */
size_t mms__mixer_ws_bytes(const struct mms_node *nd);

/* Offsets of the workspace parts inside a MIXER node's workspace. */
struct mms_mixer_ws {
    size_t u, xe, hist, z, xc, p, y, state;
};
void mms__mixer_ws_layout(const struct mms_node *nd, struct mms_mixer_ws *ws);

/* Build the graph of model m's network `member` (0 for a single network) for tiles (D, H, W)
 * and plan its arena. With keep_taps every named tensor and the first MetaBlock's internals
 * stay live to the end (for mms_net_tap). The members of an ensemble give the same graph but
 * for the weights. Ownership: *out is new, free with mms__graph_free(); it borrows m's
 * tensors. Returns 0, MMS_EINVAL (tile not divisible by the strides, or < 1; no such member),
 * MMS_ENOMEM. */
int mms__graph_build(const struct mms_model *m, int member, const int64_t tile[3], bool keep_taps,
                     struct mms_graph **out);
void mms__graph_free(struct mms_graph *g);

/* Index of the tensor called name, or -1. */
int mms__graph_find(const struct mms_graph *g, const char *name);

static inline int64_t
mms__tdesc_voxels(const struct mms_tdesc *t)
{
    return t->d * t->h * t->w;
}

#endif
