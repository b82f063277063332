/* infer: build the MM-UNet graph from the card and plan its arena (mmunet.md 2.5, style.md
 * 2.5). Threads: any; a graph is immutable once built. */
#include "infer/graph-impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

#define ALIGN 64
#define MIXER_WS_TARGET (8u << 20) /* bytes of chunk buffers per mixer, before clamping */
#define MIXER_CHUNK_MIN 64
#define MIXER_CHUNK_MAX 16384

struct builder {
    struct mms_graph *g;
    const struct mms_model *m;
    int member; /* the ensemble member whose weights the nodes take */
    bool keep_taps;
    bool tapped_mixer; /* the first MetaBlock's internals are tapped */
};

static size_t
align_up(size_t n)
{
    return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

/* Room for one more element in the array *v of *cap elements holding n: 0 or MMS_ENOMEM. */
static int
grow(void **v, int *cap, int n, size_t elem)
{
    if (n < *cap)
        return 0;
    int c = *cap ? 2 * *cap : 64;
    void *p = realloc(*v, (size_t)c * elem);
    if (p == NULL)
        return MMS_ENOMEM;
    *v = p;
    *cap = c;
    return 0;
}

static const char *
intern(struct mms_graph *g, const char *s)
{
    if (grow((void **)&g->names, &g->cap_names, g->n_names, sizeof *g->names) < 0)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        return NULL;
    g->names[g->n_names++] = d;
    return d;
}

/* A new tensor of c channels over (d, h, w), or a workspace of nbytes when c == 0. */
static int
add_tensor(struct mms_graph *g, const char *name, int64_t c, int64_t d, int64_t h, int64_t w,
           size_t nbytes)
{
    if (grow((void **)&g->tensors, &g->cap_tensors, g->n_tensors, sizeof *g->tensors) < 0)
        return MMS_ENOMEM;
    struct mms_tdesc *t = &g->tensors[g->n_tensors];
    memset(t, 0, sizeof *t);
    if (c > 0) {
        int64_t n;
        if (__builtin_mul_overflow(c, d, &n) || __builtin_mul_overflow(n, h, &n) ||
            __builtin_mul_overflow(n, w, &n) || __builtin_mul_overflow(n, 4, &n) ||
            (uint64_t)n > SIZE_MAX / 2)
            return MMS_EINVAL;
        nbytes = (size_t)n;
    }
    if (name != NULL && (t->name = intern(g, name)) == NULL)
        return MMS_ENOMEM;
    t->c = c;
    t->d = d;
    t->h = h;
    t->w = w;
    t->nbytes = align_up(nbytes);
    t->first = -1;
    t->last = -1;
    return g->n_tensors++;
}

static struct mms_node *
add_node(struct mms_graph *g, enum mms_op op, const char *name)
{
    if (grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes, sizeof *g->nodes) < 0)
        return NULL;
    struct mms_node *nd = &g->nodes[g->n_nodes];
    memset(nd, 0, sizeof *nd);
    nd->op = op;
    nd->src[0] = nd->src[1] = nd->dst = nd->ws = -1;
    for (int i = 0; i < MMS_TAP__COUNT; i++)
        nd->u.mixer.tap[i] = -1;
    nd->slope = g->arch->negative_slope;
    if (name != NULL && (nd->name = intern(g, name)) == NULL)
        return NULL;
    g->n_nodes++;
    return nd;
}

/* The data of tensor prefix+suffix; the loader has checked that it exists with its shape. */
static const float *
weight(const struct builder *b, const char *prefix, const char *suffix)
{
    char name[256];
    snprintf(name, sizeof name, "%s%s", prefix, suffix);
    const struct mms_tensor *t = mms_model_member_tensor(b->m, b->member, name);
    return t != NULL ? t->data : NULL;
}

static int64_t
conv_out(int64_t len, int k, int stride)
{
    return (len + 2 * (k / 2) - k) / stride + 1;
}

static int
conv_opt(struct builder *b, const char *prefix, const char *what, int src, int dst, const int k[3],
         const int stride[3], bool accumulate, bool bias, enum mms_op op)
{
    struct mms_graph *g = b->g;
    char name[256];
    snprintf(name, sizeof name, "%s%s", prefix, what);
    struct mms_node *nd = add_node(g, op, name);
    if (nd == NULL)
        return MMS_ENOMEM;
    nd->src[0] = src;
    nd->dst = dst;
    for (int i = 0; i < 3; i++) {
        nd->u.conv.k[i] = k[i];
        nd->u.conv.stride[i] = stride[i];
        nd->u.conv.pad[i] = op == MMS_OP_DECONV ? 0 : k[i] / 2;
    }
    nd->u.conv.cin = g->tensors[src].c;
    nd->u.conv.cout = g->tensors[dst].c;
    nd->u.conv.accumulate = accumulate;
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "%s.weight", what);
    snprintf(bn, sizeof bn, "%s.bias", what);
    nd->u.conv.w = weight(b, prefix, wn);
    nd->u.conv.b = bias ? weight(b, prefix, bn) : NULL;
    return nd->u.conv.w != NULL && (nd->u.conv.b != NULL || !bias) ? 0 : MMS_EMODEL;
}

static int
conv(struct builder *b, const char *prefix, const char *what, int src, int dst, const int k[3],
     const int stride[3], bool accumulate)
{
    return conv_opt(b, prefix, what, src, dst, k, stride, accumulate, true, MMS_OP_CONV);
}

static int
norm(struct builder *b, const char *prefix, const char *what, int t, bool lrelu)
{
    char name[256], wn[64], bn[64];
    snprintf(name, sizeof name, "%s%s", prefix, what);
    struct mms_node *nd = add_node(b->g, MMS_OP_NORM, name);
    if (nd == NULL)
        return MMS_ENOMEM;
    nd->src[0] = t;
    nd->u.norm.eps = b->g->arch->norm_eps;
    nd->u.norm.lrelu = lrelu;
    snprintf(wn, sizeof wn, "%s.weight", what);
    snprintf(bn, sizeof bn, "%s.bias", what);
    nd->u.norm.gamma = weight(b, prefix, wn);
    nd->u.norm.beta = weight(b, prefix, bn);
    return nd->u.norm.gamma != NULL && nd->u.norm.beta != NULL ? 0 : MMS_EMODEL;
}

static int
mamba_weights(const struct builder *b, const char *p, const char *sfx, const char *io,
              struct mms_mamba_w *w)
{
    char s[64];
    snprintf(s, sizeof s, "%sin_proj.weight", io);
    w->in_proj = weight(b, p, s);
    snprintf(s, sizeof s, "%sout_proj.weight", io);
    w->out_proj = weight(b, p, s);
    snprintf(s, sizeof s, "conv1d%s.weight", sfx);
    w->conv_w = weight(b, p, s);
    snprintf(s, sizeof s, "conv1d%s.bias", sfx);
    w->conv_b = weight(b, p, s);
    snprintf(s, sizeof s, "x_proj%s.weight", sfx);
    w->x_proj = weight(b, p, s);
    snprintf(s, sizeof s, "dt_proj%s.weight", sfx);
    w->dt_w = weight(b, p, s);
    snprintf(s, sizeof s, "dt_proj%s.bias", sfx);
    w->dt_b = weight(b, p, s);
    w->a_log = weight(b, p, *sfx ? "A_b_log" : "A_log");
    snprintf(s, sizeof s, "D%s", sfx);
    w->d = weight(b, p, s);
    const float *all[] = {w->in_proj, w->out_proj, w->conv_w, w->conv_b, w->x_proj,
                          w->dt_w,    w->dt_b,     w->a_log,  w->d};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i] == NULL)
            return MMS_EMODEL;
    return 0;
}

size_t
mms__mixer_ws_bytes(const struct mms_node *nd)
{
    struct mms_mixer_ws ws;
    mms__mixer_ws_layout(nd, &ws);
    int64_t e = nd->u.mixer.e, n = nd->u.mixer.n;
    /* the state is kept per block of 16 channels, the last block padded */
    return ws.state + align_up((size_t)(((e + 15) & ~(int64_t)15) * n) * sizeof(float));
}

void
mms__mixer_ws_layout(const struct mms_node *nd, struct mms_mixer_ws *ws)
{
    size_t t = (size_t)nd->u.mixer.chunk, c = (size_t)nd->u.mixer.c, e = (size_t)nd->u.mixer.e;
    size_t k = (size_t)nd->u.mixer.k, pr = (size_t)(nd->u.mixer.r + 2 * nd->u.mixer.n);
    size_t f = sizeof(float), off = 0;
    ws->u = off;
    off += align_up(t * c * f); /* LN(tokens) of the chunk, (T, C) */
    ws->xe = off;
    off += align_up((t + k - 1) * e * f); /* x with K-1 rows of history, (T+K-1, E) */
    ws->hist = off;
    off += align_up((k - 1) * e * f + f); /* history carried between chunks */
    ws->z = off;
    off += align_up(t * e * f); /* gate, (T, E) */
    ws->xc = off;
    off += align_up(t * e * f); /* SiLU(conv(x)), (T, E) */
    ws->p = off;
    off += align_up(t * pr * f); /* x_proj: dt, B, C, (T, R + 2N) */
    ws->y = off;
    off += align_up(t * e * f); /* gated scan output, (T, E) */
    ws->state = off;            /* h, (ceil(E/16), N, 16) */
}

static int
mixer(struct builder *b, const char *prefix, int src, int dst)
{
    struct mms_graph *g = b->g;
    const struct mms_arch *a = g->arch;
    char name[256], p[256];
    snprintf(name, sizeof name, "%smixer", prefix);
    struct mms_node *nd = add_node(g, MMS_OP_MIXER, name);
    if (nd == NULL)
        return MMS_ENOMEM;
    int64_t c = g->tensors[src].c, l = mms__tdesc_voxels(&g->tensors[src]);
    nd->src[0] = src;
    nd->dst = dst;
    nd->u.mixer.c = c;
    nd->u.mixer.e = a->expand * c;
    nd->u.mixer.n = a->d_state;
    nd->u.mixer.r = mms_arch_dt_rank(a, (int)c);
    nd->u.mixer.k = a->d_conv;
    nd->u.mixer.ln_eps = a->ln_eps;
    nd->u.mixer.alpha = a->merge_scale;
    nd->u.mixer.inner_residual = a->inner_residual;
    size_t per_token =
        sizeof(float) * (size_t)(c + 4 * nd->u.mixer.e + nd->u.mixer.r + 2 * nd->u.mixer.n);
    int64_t chunk = (int64_t)(MIXER_WS_TARGET / per_token);
    chunk = chunk < MIXER_CHUNK_MIN ? MIXER_CHUNK_MIN : chunk;
    chunk = chunk > MIXER_CHUNK_MAX ? MIXER_CHUNK_MAX : chunk;
    nd->u.mixer.chunk = chunk < l ? chunk : l;
    snprintf(name, sizeof name, "%smixer.norm.weight", prefix);
    nd->u.mixer.ln_w = weight(b, "", name);
    snprintf(name, sizeof name, "%smixer.norm.bias", prefix);
    nd->u.mixer.ln_b = weight(b, "", name);
    if (nd->u.mixer.ln_w == NULL || nd->u.mixer.ln_b == NULL)
        return MMS_EMODEL;
    int rc;
    switch (a->biscan) {
    case MMS_BISCAN_SEPARATE:
        snprintf(p, sizeof p, "%smixer.mamba_f.", prefix);
        if ((rc = mamba_weights(b, p, "", "", &nd->u.mixer.dir[0])) < 0)
            return rc;
        snprintf(p, sizeof p, "%smixer.mamba_b.", prefix);
        rc = mamba_weights(b, p, "", "", &nd->u.mixer.dir[1]);
        break;
    case MMS_BISCAN_SHARED:
        snprintf(p, sizeof p, "%smixer.mamba.", prefix);
        if ((rc = mamba_weights(b, p, "", "", &nd->u.mixer.dir[0])) < 0)
            return rc;
        nd->u.mixer.dir[1] = nd->u.mixer.dir[0];
        break;
    case MMS_BISCAN_VIM_V2:
        snprintf(p, sizeof p, "%smixer.mamba.", prefix);
        if ((rc = mamba_weights(b, p, "", "", &nd->u.mixer.dir[0])) < 0)
            return rc;
        rc = mamba_weights(b, p, "_b", "", &nd->u.mixer.dir[1]);
        break;
    default:
        return MMS_EMODEL;
    }
    if (rc < 0)
        return rc;
    int ni = (int)(nd - g->nodes);
    int ws = add_tensor(g, NULL, 0, 0, 0, 0, mms__mixer_ws_bytes(nd));
    if (ws < 0)
        return ws;
    nd = &g->nodes[ni];
    nd->ws = ws;
    if (b->keep_taps && !b->tapped_mixer) {
        static const char *const tap_names[MMS_TAP__COUNT] = {
            "ln", "mixer", "delta", "y_pregate", "delta_b", "y_pregate_b"};
        int n_taps = a->biscan == MMS_BISCAN_VIM_V2 ? MMS_TAP__COUNT : MMS_TAP_DELTA_B;
        const struct mms_tdesc *s = &g->tensors[src];
        int64_t d = s->d, h = s->h, w = s->w;
        for (int i = 0; i < n_taps; i++) {
            int64_t ch = i <= MMS_TAP_MIXER ? c : nd->u.mixer.e;
            snprintf(name, sizeof name, "%s%s", prefix, tap_names[i]);
            int t = add_tensor(g, name, ch, d, h, w, 0);
            if (t < 0)
                return t;
            g->tensors[t].raw = true;
            g->nodes[ni].u.mixer.tap[i] = t;
        }
        b->tapped_mixer = true;
    }
    return 0;
}

/* A residual block's end: res += skip, then LReLU, in place (no node when skip < 0: the
 * projection already added it); res takes the block's name, its prefix without the trailing
 * dot, for taps; *out receives res. */
static int
block_output(struct builder *b, const char *prefix, int res, int skip, int *out)
{
    struct mms_graph *g = b->g;
    char name[256];
    if (skip >= 0) {
        snprintf(name, sizeof name, "%sresidual", prefix);
        struct mms_node *nd = add_node(g, MMS_OP_ADD_LRELU, name);
        if (nd == NULL)
            return MMS_ENOMEM;
        nd->src[0] = res;
        nd->src[1] = skip;
    }
    snprintf(name, sizeof name, "%.*s", (int)strlen(prefix) - 1, prefix);
    if ((g->tensors[res].name = intern(g, name)) == NULL)
        return MMS_ENOMEM;
    *out = res;
    return 0;
}

/* ResBlock or MetaBlock (mmunet.md 2.3) on tensor x; *out receives the block's output. */
static int
block(struct builder *b, const char *prefix, int x, int64_t cout, const int k[3],
      const int stride[3], bool hybrid, int *out)
{
    static const int one[3] = {1, 1, 1};
    struct mms_graph *g = b->g;
    const struct mms_tdesc *xs = &g->tensors[x];
    int64_t cin = xs->c;
    int64_t d = conv_out(xs->d, k[0], stride[0]), h = conv_out(xs->h, k[1], stride[1]),
            w = conv_out(xs->w, k[2], stride[2]);
    int rc, h1, h2, res;
    if ((rc = h1 = add_tensor(g, NULL, cout, d, h, w, 0)) < 0)
        return h1;
    if ((rc = conv(b, prefix, "conv1", x, h1, k, stride, false)) < 0 ||
        (rc = norm(b, prefix, "norm1", h1, true)) < 0)
        return rc;
    if ((h2 = add_tensor(g, NULL, cout, d, h, w, 0)) < 0)
        return h2;
    if ((rc = conv(b, prefix, "conv2", h1, h2, k, one, false)) < 0 ||
        (rc = norm(b, prefix, "norm2", h2, false)) < 0)
        return rc;
    res = h2;
    if (hybrid) {
        if ((res = add_tensor(g, NULL, cout, d, h, w, 0)) < 0)
            return res;
        if ((rc = mixer(b, prefix, h2, res)) < 0)
            return rc;
    }
    bool proj = cin != cout || stride[0] != 1 || stride[1] != 1 || stride[2] != 1;
    if (proj) {
        /* the projection accumulates into res and applies the LReLU */
        if ((rc = conv(b, prefix, "proj", x, res, one, stride, true)) < 0)
            return rc;
        return block_output(b, prefix, res, -1, out);
    }
    return block_output(b, prefix, res, x, out);
}

/* ---------------------------------------------------- nnU-Net's PlainConvUNet, ResEnc */

/* Conv (k, stride t, padding k//2), IN, then LReLU when lrelu: prefix "conv" and "norm"
 * (README, "nnU-Net's standard networks"). *out receives a new tensor of cout channels. */
static int
cnr(struct builder *b, const char *prefix, int x, int64_t cout, const int k[3], const int t[3],
    bool lrelu, bool bias, int *out)
{
    struct mms_graph *g = b->g;
    const struct mms_tdesc *xs = &g->tensors[x];
    int y = add_tensor(g, NULL, cout, conv_out(xs->d, k[0], t[0]), conv_out(xs->h, k[1], t[1]),
                       conv_out(xs->w, k[2], t[2]), 0);
    int rc;
    if (y < 0)
        return y;
    if ((rc = conv_opt(b, prefix, "conv", x, y, k, t, false, bias, MMS_OP_CONV)) < 0 ||
        (rc = norm(b, prefix, "norm", y, lrelu)) < 0)
        return rc;
    *out = y;
    return 0;
}

/* ResidualEncoderUNet's block: LReLU(IN(conv2(CNR(conv1(x)))) + skip(x)), where skip(x) is x,
 * or AvgPool_t(x) when the block has a stride, then a bias-free 1x1x1 conv and IN when the
 * channels change. */
static int
resenc_block(struct builder *b, const char *prefix, int x, int64_t cout, const int k[3],
             const int t[3], int *out)
{
    static const int one[3] = {1, 1, 1};
    struct mms_graph *g = b->g;
    char p[256];
    int h1, h2, sx = x, rc;
    bool bias = g->arch->conv_bias, pool = t[0] != 1 || t[1] != 1 || t[2] != 1;
    int64_t cin = g->tensors[x].c;

    snprintf(p, sizeof p, "%sconv1.", prefix);
    if ((rc = cnr(b, p, x, cout, k, t, true, bias, &h1)) < 0)
        return rc;
    snprintf(p, sizeof p, "%sconv2.", prefix);
    if ((rc = cnr(b, p, h1, cout, k, one, false, bias, &h2)) < 0)
        return rc;
    if (pool) {
        const struct mms_tdesc *xs = &g->tensors[x];
        int q = add_tensor(g, NULL, cin, xs->d / t[0], xs->h / t[1], xs->w / t[2], 0);
        if (q < 0)
            return q;
        snprintf(p, sizeof p, "%sskip.0", prefix);
        struct mms_node *nd = add_node(g, MMS_OP_AVGPOOL, p);
        if (nd == NULL)
            return MMS_ENOMEM;
        nd->src[0] = x;
        nd->dst = q;
        memcpy(nd->u.up.stride, t, sizeof nd->u.up.stride);
        sx = q;
    }
    if (cin != cout) {
        snprintf(p, sizeof p, "%sskip.%d.", prefix, pool ? 1 : 0);
        if ((rc = cnr(b, p, sx, cout, one, one, false, false, &sx)) < 0)
            return rc;
    }
    return block_output(b, prefix, h2, sx, out);
}

/* The network of a PlainConvUNet or ResidualEncoderUNet card from the input tensor x:
 * *out receives the logits, channels-last. */
static int
build_nnunet(struct builder *b, int x, int *out)
{
    static const int one[3] = {1, 1, 1};
    struct mms_graph *g = b->g;
    const struct mms_arch *a = g->arch;
    int S = a->n_stages, skips[MMS_MAX_STAGES] = {0}, rc;
    char p[128];

    if (a->family == MMS_FAMILY_RESENC && (rc = cnr(b, "encoder.stem.convs.0.", x, a->features[0],
                                                    a->kernel[0], one, true, a->conv_bias, &x)) < 0)
        return rc;
    for (int s = 0; s < S; s++) {
        for (int i = 0; i < a->n_blocks_encoder[s]; i++) {
            const int *t = i == 0 ? a->stride[s] : one;
            if (a->family == MMS_FAMILY_PLAIN) {
                snprintf(p, sizeof p, "encoder.stages.%d.0.convs.%d.", s, i);
                rc = cnr(b, p, x, a->features[s], a->kernel[s], t, true, a->conv_bias, &x);
            } else {
                snprintf(p, sizeof p, "encoder.stages.%d.blocks.%d.", s, i);
                rc = resenc_block(b, p, x, a->features[s], a->kernel[s], t, &x);
            }
            if (rc < 0)
                return rc;
        }
        snprintf(p, sizeof p, "encoder.stages.%d", s);
        if ((g->tensors[x].name = intern(g, p)) == NULL)
            return MMS_ENOMEM;
        skips[s] = x;
    }
    int z = skips[S - 1];
    for (int j = 0; j < S - 1; j++) {
        int sa = S - 1 - j, sb = S - 2 - j;
        const int *t = a->stride[sa];
        int64_t fb = a->features[sb];
        const struct mms_tdesc *zt = &g->tensors[z];
        int u = add_tensor(g, NULL, fb, zt->d * t[0], zt->h * t[1], zt->w * t[2], 0);
        if (u < 0)
            return u;
        snprintf(p, sizeof p, "decoder.transpconvs.%d", j);
        if ((rc = conv_opt(b, p, "", z, u, t, t, false, a->conv_bias, MMS_OP_DECONV)) < 0)
            return rc;
        const struct mms_tdesc *xb = &g->tensors[skips[sb]];
        snprintf(p, sizeof p, "decoder.stages.%d.concat", j);
        int y = add_tensor(g, NULL, 2 * fb, xb->d, xb->h, xb->w, 0);
        if (y < 0)
            return y;
        struct mms_node *nd = add_node(g, MMS_OP_UP_CONCAT, p);
        if (nd == NULL)
            return MMS_ENOMEM;
        nd->src[0] = u;
        nd->src[1] = skips[sb];
        nd->dst = y;
        memcpy(nd->u.up.stride, one, sizeof nd->u.up.stride);
        z = y;
        for (int i = 0; i < a->n_blocks_decoder[j]; i++) {
            snprintf(p, sizeof p, "decoder.stages.%d.convs.%d.", j, i);
            if ((rc = cnr(b, p, z, fb, a->kernel[sb], one, true, a->conv_bias, &z)) < 0)
                return rc;
        }
        snprintf(p, sizeof p, "decoder.stages.%d", j);
        if ((g->tensors[z].name = intern(g, p)) == NULL)
            return MMS_ENOMEM;
    }
    const struct mms_tdesc *zt = &g->tensors[z];
    int head = add_tensor(g, NULL, a->num_classes, zt->d, zt->h, zt->w, 0);
    if (head < 0)
        return head;
    snprintf(p, sizeof p, "decoder.seg_layers.%d", S - 2);
    if ((rc = conv_opt(b, p, "", z, head, one, one, false, true, MMS_OP_CONV)) < 0)
        return rc;
    *out = head;
    return 0;
}

static void
plan(struct mms_graph *g, bool keep_taps)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const struct mms_node *nd = &g->nodes[i];
        int use[] = {nd->src[0], nd->src[1], nd->dst, nd->ws};
        for (size_t j = 0; j < sizeof use / sizeof use[0]; j++) {
            if (use[j] < 0)
                continue;
            struct mms_tdesc *t = &g->tensors[use[j]];
            if (t->first < 0)
                t->first = i;
            t->last = i;
        }
        if (nd->op == MMS_OP_MIXER)
            for (int j = 0; j < MMS_TAP__COUNT; j++)
                if (nd->u.mixer.tap[j] >= 0)
                    g->tensors[nd->u.mixer.tap[j]].first = i;
    }
    g->tensors[g->input].first = 0;
    for (int i = 0; i < g->n_tensors; i++) {
        struct mms_tdesc *t = &g->tensors[i];
        if (i == g->output || (keep_taps && t->name != NULL))
            t->last = g->n_nodes;
        if (t->first < 0) /* never used: give it a slot anyway */
            t->first = t->last = g->n_nodes;
        g->unplanned_bytes += t->nbytes;
    }
    /* Greedy by size: the largest buffers first, each at the lowest offset that no buffer
     * live at the same time occupies. */
    int n = g->n_tensors;
    int *order = malloc((size_t)n * sizeof *order * 2);
    int *live = order != NULL ? order + n : NULL;
    if (order == NULL) { /* no reuse: still a valid plan */
        size_t off = 0;
        for (int i = 0; i < n; i++) {
            g->tensors[i].offset = off;
            off += g->tensors[i].nbytes;
        }
        g->arena_bytes = off;
        return;
    }
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = 1; i < n; i++) { /* insertion sort: size descending, index ascending */
        int v = order[i], j = i - 1;
        while (j >= 0 && g->tensors[order[j]].nbytes < g->tensors[v].nbytes) {
            order[j + 1] = order[j];
            j--;
        }
        order[j + 1] = v;
    }
    size_t arena = 0;
    for (int i = 0; i < n; i++) {
        struct mms_tdesc *t = &g->tensors[order[i]];
        int nl = 0;
        for (int j = 0; j < i; j++) { /* placed buffers live at the same time, by offset */
            const struct mms_tdesc *p = &g->tensors[order[j]];
            if (p->last < t->first || t->last < p->first)
                continue;
            int q = nl++;
            while (q > 0 && g->tensors[live[q - 1]].offset > p->offset) {
                live[q] = live[q - 1];
                q--;
            }
            live[q] = order[j];
        }
        size_t off = 0;
        for (int j = 0; j < nl; j++) {
            const struct mms_tdesc *p = &g->tensors[live[j]];
            if (p->offset >= off + t->nbytes)
                break;
            if (p->offset + p->nbytes > off)
                off = p->offset + p->nbytes;
        }
        t->offset = off;
        if (off + t->nbytes > arena)
            arena = off + t->nbytes;
    }
    free(order);
    g->arena_bytes = arena;
}

int
mms__graph_build(const struct mms_model *m, int member, const int64_t tile[3], bool keep_taps,
                 struct mms_graph **out)
{
    const struct mms_card *card = mms_model_card(m);
    const struct mms_arch *a = &card->arch;
    static const int one[3] = {1, 1, 1};
    if (member < 0 || member >= mms_model_members(m))
        return MMS_EINVAL;
    for (int d = 0; d < 3; d++) {
        int64_t prod = 1;
        for (int s = 0; s < a->n_stages; s++)
            prod *= a->stride[s][d];
        if (tile[d] < 1 || tile[d] > (1 << 20) || tile[d] % prod != 0)
            return MMS_EINVAL;
    }
    struct mms_graph *g = calloc(1, sizeof *g);
    if (g == NULL)
        return MMS_ENOMEM;
    g->arch = a;
    memcpy(g->tile, tile, sizeof g->tile);
    struct builder b = {.g = g, .m = m, .member = member, .keep_taps = keep_taps};
    int rc, x, skips[MMS_MAX_STAGES] = {0};
    char prefix[128];

    if ((rc = g->input = add_tensor(g, "input", a->in_channels, tile[0], tile[1], tile[2], 0)) < 0)
        goto fail;
    g->tensors[g->input].raw = true;
    x = g->input;
    if (a->in_channels > 1) {
        if ((rc = x = add_tensor(g, NULL, a->in_channels, tile[0], tile[1], tile[2], 0)) < 0)
            goto fail;
        struct mms_node *nd = add_node(g, MMS_OP_FROM_NCDHW, "input.layout");
        if (nd == NULL)
            goto fail_nomem;
        nd->src[0] = g->input;
        nd->dst = x;
    }
    int head;
    if (a->family != MMS_FAMILY_MMUNET) {
        if ((rc = build_nnunet(&b, x, &head)) < 0)
            goto fail;
        goto output;
    }
    for (int i = 0; i < a->stem_blocks; i++) {
        snprintf(prefix, sizeof prefix, "stem.blocks.%d.", i);
        if ((rc = block(&b, prefix, x, a->features[0], a->kernel[0], one, false, &x)) < 0)
            goto fail;
    }
    for (int s = 0; s < a->n_stages; s++) {
        int nb = a->n_blocks_encoder[s];
        for (int i = 0; i < nb; i++) {
            bool hybrid = (a->mamba_stages >> s & 1u) && (!a->mamba_last_only || i == nb - 1);
            snprintf(prefix, sizeof prefix, "encoder.stages.%d.blocks.%d.", s, i);
            rc = block(&b, prefix, x, a->features[s], a->kernel[s], i == 0 ? a->stride[s] : one,
                       hybrid, &x);
            if (rc < 0)
                goto fail;
        }
        skips[s] = x;
    }
    int z = skips[a->n_stages - 1];
    for (int j = 0; j < a->n_stages - 1; j++) {
        int sa = a->n_stages - 1 - j, sb = a->n_stages - 2 - j;
        const struct mms_tdesc *zt = &g->tensors[z], *xb = &g->tensors[skips[sb]];
        int64_t fb = a->features[sb];
        int u = add_tensor(g, NULL, fb, zt->d, zt->h, zt->w, 0);
        if ((rc = u) < 0)
            goto fail;
        snprintf(prefix, sizeof prefix, "decoder.levels.%d.", j);
        if ((rc = conv(&b, prefix, "up", z, u, one, one, false)) < 0)
            goto fail;
        xb = &g->tensors[skips[sb]];
        snprintf(prefix, sizeof prefix, "decoder.levels.%d.up", j);
        int y = add_tensor(g, prefix, 2 * fb, xb->d, xb->h, xb->w, 0);
        if ((rc = y) < 0)
            goto fail;
        g->tensors[y].tap_c = fb;
        struct mms_node *nd = add_node(g, MMS_OP_UP_CONCAT, prefix);
        if (nd == NULL)
            goto fail_nomem;
        nd->src[0] = u;
        nd->src[1] = skips[sb];
        nd->dst = y;
        memcpy(nd->u.up.stride, a->stride[sa], sizeof nd->u.up.stride);
        z = y;
        for (int i = 0; i < a->n_blocks_decoder[j]; i++) {
            snprintf(prefix, sizeof prefix, "decoder.levels.%d.blocks.%d.", j, i);
            if ((rc = block(&b, prefix, z, fb, a->kernel[sb], one, false, &z)) < 0)
                goto fail;
        }
    }
    const struct mms_tdesc *zt = &g->tensors[z];
    head = add_tensor(g, NULL, a->num_classes, zt->d, zt->h, zt->w, 0);
    if ((rc = head) < 0)
        goto fail;
    if ((rc = conv(&b, "", "head", z, head, one, one, false)) < 0)
        goto fail;
output:
    if ((rc = g->output = add_tensor(g, "logits", a->num_classes, tile[0], tile[1], tile[2], 0)) <
        0)
        goto fail;
    g->tensors[g->output].raw = true;
    struct mms_node *nd = add_node(g, MMS_OP_TO_NCDHW, "logits.layout");
    if (nd == NULL)
        goto fail_nomem;
    nd->src[0] = head;
    nd->dst = g->output;
    plan(g, keep_taps);
    *out = g;
    return 0;

fail_nomem:
    rc = MMS_ENOMEM;
    goto fail;
fail:
    mms__graph_free(g);
    return rc;
}

void
mms__graph_free(struct mms_graph *g)
{
    if (g == NULL)
        return;
    for (int i = 0; i < g->n_names; i++)
        free(g->names[i]);
    free(g->names);
    free(g->nodes);
    free(g->tensors);
    free(g);
}

int
mms__graph_find(const struct mms_graph *g, const char *name)
{
    for (int i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name != NULL && strcmp(g->tensors[i].name, name) == 0)
            return i;
    return -1;
}
