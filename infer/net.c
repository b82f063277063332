/* infer: a network ready to run, the model's graph for one tile shape on one backend, with
 * its arena allocated once (style.md 2.5). Threads: the backend's thread. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "infer/net-impl.h"

struct mms_net {
    const struct mms_model *model;
    struct mms_backend *be;
    int n_members;       /* networks: 1, or the members of an ensemble */
    struct mms_graph *g; /* member 0's graph: the shapes and the arena of all */
    struct mms_graph *gs[MMS_MAX_MEMBERS];
    void *gctx[MMS_MAX_MEMBERS];
    size_t fixed_bytes;
    int max_batch;
    size_t stride; /* arena bytes per sample */
    struct mms_buffer arena;
    float *sum; /* an ensemble's logits of one sample, while the members' are added */
    struct mms_net_profile profile;
};

int
mms_net_new(const struct mms_model *m, struct mms_backend *be, const int64_t tile[3],
            unsigned flags, struct mms_net **out)
{
    if (m == NULL || be == NULL || tile == NULL || out == NULL)
        return MMS_EINVAL;
    struct mms_net *n = calloc(1, sizeof *n);
    if (n == NULL)
        return MMS_ENOMEM;
    n->model = m;
    n->be = be;
    n->n_members = mms_model_members(m);
    n->max_batch = INT32_MAX;
    int rc = 0;
    for (int k = 0; k < n->n_members; k++) {
        struct mms_graph *g;
        if ((rc = mms__graph_build(m, k, tile, (flags & MMS_NET_TAPS) != 0, &g)) < 0)
            goto fail;
        n->gs[k] = g;
        if (g->arena_bytes != n->gs[0]->arena_bytes) { /* one architecture: never */
            rc = MMS_EINVAL;
            goto fail;
        }
        for (int i = 0; k == 0 && i < g->n_nodes; i++) {
            if (!be->ops->supports_op(be, &g->nodes[i])) {
                mms_log(MMS_LOG_ERR, "backend %s cannot run %s", be->ops->name, g->nodes[i].name);
                rc = MMS_ENOTSUP;
                goto fail;
            }
        }
        size_t fixed;
        if ((rc = be->ops->graph_init(be, g, &n->gctx[k], &fixed)) < 0)
            goto fail;
        n->fixed_bytes += fixed;
        int mb = be->ops->max_batch(be, g);
        n->max_batch = mb < n->max_batch ? mb : n->max_batch;
    }
    n->g = n->gs[0];
    n->stride = n->g->arena_bytes;
    size_t total;
    if (n->max_batch < 1 || __builtin_mul_overflow(n->stride, (size_t)n->max_batch, &total)) {
        rc = MMS_EINVAL;
        goto fail;
    }
    if ((rc = be->ops->buffer_alloc(be, total, &n->arena)) < 0)
        goto fail;
    if (n->n_members > 1) {
        const struct mms_tdesc *to = &n->g->tensors[n->g->output];
        n->sum = malloc((size_t)(to->c * mms__tdesc_voxels(to)) * sizeof(float));
        if (n->sum == NULL) {
            rc = MMS_ENOMEM;
            goto fail;
        }
    }
    *out = n;
    return 0;
fail:
    mms_net_free(n);
    return rc;
}

void
mms_net_free(struct mms_net *n)
{
    if (n == NULL)
        return;
    if (n->arena.host != NULL || n->arena.device != NULL)
        n->be->ops->buffer_free(n->be, &n->arena);
    for (int k = 0; k < MMS_MAX_MEMBERS; k++) {
        if (n->gctx[k] != NULL)
            n->be->ops->graph_fini(n->be, n->gctx[k]);
        mms__graph_free(n->gs[k]);
    }
    free(n->sum);
    free(n);
}

int
mms_net_members(const struct mms_net *n)
{
    return n->n_members;
}

int
mms_net_max_batch(const struct mms_net *n)
{
    return n->max_batch;
}

size_t
mms_net_arena_bytes(const struct mms_net *n)
{
    return n->stride * (size_t)n->max_batch;
}

size_t
mms_net_fixed_bytes(const struct mms_net *n)
{
    return n->fixed_bytes;
}

int
mms_net_op_count(const struct mms_net *n)
{
    return n->g->n_nodes;
}

size_t
mms_net_unplanned_bytes(const struct mms_net *n)
{
    return n->g->unplanned_bytes;
}

struct mms_backend *
mms__net_backend(struct mms_net *n)
{
    return n->be;
}

struct mms_buffer *
mms__net_arena(struct mms_net *n)
{
    return &n->arena;
}

bool
mms__net_has_window(const struct mms_net *n)
{
    const struct mms_backend_ops *o = n->be->ops;
    return o->buffer_zero != NULL && o->window_gather != NULL && o->window_scatter != NULL;
}

bool
mms__net_on_device(const struct mms_net *n)
{
    return n->arena.host == NULL;
}

size_t
mms__net_input_offset(const struct mms_net *n, int s)
{
    return (size_t)s * n->stride + n->g->tensors[n->g->input].offset;
}

size_t
mms__net_output_offset(const struct mms_net *n, int s)
{
    return (size_t)s * n->stride + n->g->tensors[n->g->output].offset;
}

int
mms__net_compute(struct mms_net *n, int member, int nb)
{
    if (nb < 1 || nb > n->max_batch || member < 0 || member >= n->n_members)
        return MMS_EINVAL;
    int rc = n->be->ops->compute(n->be, n->gs[member], n->gctx[member], &n->arena, nb);
    if (rc == 0)
        rc = mms__backend_synchronize(n->be);
    if (rc == 0 && n->g->profile != NULL)
        n->g->profile->passes += nb;
    return rc;
}

int
mms_net_forward(struct mms_net *n, const float *in, int n_tiles, float *logits)
{
    if (n == NULL || in == NULL || logits == NULL || n_tiles < 0)
        return MMS_EINVAL;
    const struct mms_tdesc *ti = &n->g->tensors[n->g->input], *to = &n->g->tensors[n->g->output];
    size_t in_bytes = (size_t)(ti->c * mms__tdesc_voxels(ti)) * sizeof(float);
    size_t out_n = (size_t)(to->c * mms__tdesc_voxels(to)), out_bytes = out_n * sizeof(float);
    struct mms_backend *be = n->be;
    int rc;
    for (int t0 = 0; t0 < n_tiles; t0 += n->max_batch) {
        int nb = n_tiles - t0 < n->max_batch ? n_tiles - t0 : n->max_batch;
        for (int k = 0; k < n->n_members; k++) {
            /* the input again for each member: a run may reuse its memory */
            for (int s = 0; s < nb; s++) {
                rc = be->ops->upload(be, &n->arena, s * n->stride + ti->offset,
                                     (const char *)in + (size_t)(t0 + s) * in_bytes, in_bytes);
                if (rc < 0)
                    return rc;
            }
            if ((rc = mms__net_compute(n, k, nb)) < 0)
                return rc;
            for (int s = 0; s < nb; s++) {
                float *dst = (float *)((char *)logits + (size_t)(t0 + s) * out_bytes);
                rc = be->ops->download(be, k == 0 ? dst : n->sum, &n->arena,
                                       s * n->stride + to->offset, out_bytes);
                if (rc < 0)
                    return rc;
                for (size_t i = 0; k > 0 && i < out_n; i++)
                    dst[i] += n->sum[i];
                for (size_t i = 0; k > 0 && k == n->n_members - 1 && i < out_n; i++)
                    dst[i] /= (float)n->n_members; /* nnU-Net: the sum over the members / M */
            }
        }
    }
    return 0;
}

int
mms_net_tap(const struct mms_net *n, const char *name, float *out, size_t capacity, size_t *count)
{
    int i = mms__graph_find(n->g, name);
    if (i < 0)
        return MMS_ENOENT;
    const struct mms_tdesc *t = &n->g->tensors[i];
    int64_t vox = mms__tdesc_voxels(t), c = t->tap_c ? t->tap_c : t->c;
    size_t cnt = (size_t)(vox * c);
    *count = cnt;
    if (out == NULL)
        return 0;
    if (capacity < cnt)
        return MMS_EINVAL;
    float *buf = malloc((size_t)(vox * t->c) * sizeof(float));
    if (buf == NULL)
        return MMS_ENOMEM;
    int rc = n->be->ops->download(n->be, buf, &n->arena, t->offset,
                                  (size_t)(vox * t->c) * sizeof(float));
    if (rc == 0) {
        if (t->raw) {
            memcpy(out, buf, cnt * sizeof(float));
        } else { /* (L, C) -> (c < C channels, L) */
            for (int64_t v = 0; v < vox; v++)
                for (int64_t j = 0; j < c; j++)
                    out[j * vox + v] = buf[v * t->c + j];
        }
    }
    free(buf);
    return rc;
}

void
mms_net_profile_enable(struct mms_net *n, bool on)
{
    memset(&n->profile, 0, sizeof n->profile);
    for (int k = 0; k < n->n_members; k++)
        n->gs[k]->profile = on ? &n->profile : NULL;
}

const struct mms_net_profile *
mms_net_profile(const struct mms_net *n)
{
    return &n->profile;
}
