/* infer: opening backends by name and the wrappers around optional slots.
 * Threads: any; one backend is used by one thread at a time. */
#include "infer/backend-impl.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

static const struct mms_backend_ops *
find(const char *name)
{
    for (int i = 0; mms__backends[i] != NULL; i++)
        if (strcmp(mms__backends[i]->name, name) == 0)
            return mms__backends[i];
    return NULL;
}

static int
start(const struct mms_backend_ops *ops, const struct mms_backend_params *p,
      struct mms_backend **out)
{
    if (ops->api_version != MMS_BACKEND_API_VERSION)
        return MMS_ENOTSUP;
    struct mms_backend *be = calloc(1, sizeof *be);
    if (be == NULL)
        return MMS_ENOMEM;
    be->ops = ops;
    be->precision = p->precision;
    int rc = ops->init(be, p);
    if (rc < 0) {
        free(be);
        return rc;
    }
    *out = be;
    return 0;
}

int
mms_backend_open(const char *name, const struct mms_backend_params *p, struct mms_backend **out)
{
    static const struct mms_backend_params defaults = {0};
    if (name == NULL || out == NULL)
        return MMS_EINVAL;
    if (p == NULL)
        p = &defaults;
    if (strcmp(name, "auto") == 0) {
        const char *why = "this build has no GPU backend";
        for (int i = 1; mms__backends[i] != NULL; i++) {
            int rc = start(mms__backends[i], p, out);
            if (rc == 0)
                return 0;
            why = mms_strerror(rc);
            mms_log(MMS_LOG_INFO, "backend %s did not start: %s", mms__backends[i]->name, why);
        }
        mms_log(MMS_LOG_NOTICE, "backend auto: using the CPU (%s)", why);
        const char *pwhy = mms_cpu_precision_why(p->precision);
        if (pwhy == NULL)
            return start(&mms__backend_cpu, p, out);
        struct mms_backend_params fp32 = *p;
        fp32.precision = MMS_PRECISION_FP32;
        mms_log(MMS_LOG_NOTICE, "backend auto: the CPU computes in fp32, not %s (%s)",
                mms_precision_name(p->precision), pwhy);
        return start(&mms__backend_cpu, &fp32, out);
    }
    const struct mms_backend_ops *ops = find(name);
    if (ops != NULL)
        return start(ops, p, out);
    return strcmp(name, "cuda") == 0 ? MMS_ENOTSUP : MMS_EINVAL;
}

void
mms_backend_free(struct mms_backend *be)
{
    if (be == NULL)
        return;
    be->ops->free(be);
    free(be);
}

const char *
mms_backend_name(const struct mms_backend *be)
{
    return be->ops->name;
}

int
mms_backend_precision(const struct mms_backend *be)
{
    return be->precision;
}

int
mms_backend_memory(struct mms_backend *be, size_t *free_bytes, size_t *total_bytes)
{
    if (be == NULL || free_bytes == NULL || total_bytes == NULL)
        return MMS_EINVAL;
    if (be->ops->memory_info == NULL)
        return MMS_ENOTSUP;
    return be->ops->memory_info(be, free_bytes, total_bytes);
}

int
mms__backend_synchronize(struct mms_backend *be)
{
    return be->ops->synchronize != NULL ? be->ops->synchronize(be) : 0;
}

void
mms__profile_account(struct mms_net_profile *p, const struct mms_graph *g,
                     const struct mms_node *nd, int n, double s)
{
    switch (nd->op) {
    case MMS_OP_CONV:
    case MMS_OP_DECONV: {
        /* a transposed convolution with kernel = stride adds one input voxel to each output */
        const struct mms_tdesc *o = &g->tensors[nd->dst];
        double taps = nd->op == MMS_OP_DECONV
                          ? 1.0
                          : (double)nd->u.conv.k[0] * nd->u.conv.k[1] * nd->u.conv.k[2];
        p->conv_s += s;
        p->conv_flop += 2.0 * taps * (double)nd->u.conv.cin * (double)nd->u.conv.cout *
                        (double)mms__tdesc_voxels(o) * n;
        break;
    }
    case MMS_OP_NORM:
        p->norm_s += s;
        break;
    case MMS_OP_MIXER:
        p->mixer_s += s;
        break;
    default:
        p->other_s += s;
        break;
    }
}

/* The bytes past the tile's last voxel in its volume, or 0 for a malformed window. */
static size_t
window_end(const struct mms_k_window *w)
{
    int64_t last = w->base;
    if (w->p[0] < 1 || w->p[1] < 1 || w->p[2] < 1 || w->st[2] != 1 || w->base < 0 || w->mask > 7u ||
        w->st[1] < w->p[2] || w->st[0] < w->st[1] * w->p[1])
        return 0;
    for (int t = 0; t < 3; t++)
        last += (w->p[t] - 1) * w->st[t];
    return ((size_t)last + 1) * sizeof(float);
}

static bool
holds(const struct mms_buffer *b, size_t offset, size_t nbytes)
{
    return offset <= b->nbytes && nbytes <= b->nbytes - offset;
}

bool
mms__window_gather_fits(const struct mms_buffer *vol, const struct mms_k_window *w,
                        const struct mms_buffer *dst, size_t offset)
{
    size_t end = window_end(w), pp = (size_t)(w->p[0] * w->p[1] * w->p[2]) * sizeof(float);
    return end > 0 && end <= vol->nbytes && offset % sizeof(float) == 0 && holds(dst, offset, pp);
}

bool
mms__window_scatter_fits(const struct mms_buffer *src, size_t offset, int channels,
                         const struct mms_buffer *gauss, const struct mms_k_window *w, int64_t pv,
                         const struct mms_buffer *acc)
{
    size_t end = window_end(w), pp = (size_t)(w->p[0] * w->p[1] * w->p[2]) * sizeof(float);
    return end > 0 && channels > 0 && pv > 0 && end <= (size_t)pv * sizeof(float) &&
           offset % sizeof(float) == 0 && holds(src, offset, pp * (size_t)channels) &&
           holds(gauss, 0, pp) && (size_t)pv * (size_t)channels * sizeof(float) <= acc->nbytes;
}
