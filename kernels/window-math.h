/* The sliding window's index map (mmunet.md 5.6, 5.7), per element, shared by the CPU
 * backend and the CUDA kernels so that both walk a tile the same way.
 *
 * A tile is a patch p (3 extents, row-major) at `base` in a padded volume with strides st
 * (elements; st[2] = 1). The network sees the tile mirrored by mask (bit t: axis t reversed):
 * network voxel i (0 <= i < p0 p1 p2, row-major) is the tile voxel mms_k_window_map() returns,
 * at the volume offset it stores. The way in copies the volume into the network's input
 * through this map; the way back adds the network's output at i, weighted by the Gaussian at
 * the tile voxel, to the accumulator at the same place. */
#ifndef MMS_KERNELS_WINDOW_MATH_H
#define MMS_KERNELS_WINDOW_MATH_H

#include <stdint.h>

#include "kernels/hd.h"

struct mms_k_window {
    int64_t p[3];  /* patch */
    int64_t st[3]; /* strides of the padded volume, st[2] = 1 */
    int64_t base;  /* offset of the tile's first voxel in the volume */
    uint32_t mask; /* mirrored axes */
};

/* The tile voxel (row-major index in the patch) that network voxel i shows; *vol receives
 * its offset in the volume. */
static inline MMS_HD int64_t
mms_k_window_map(const struct mms_k_window *w, int64_t i, int64_t *vol)
{
    int64_t x = i % w->p[2], y = i / w->p[2] % w->p[1], z = i / (w->p[1] * w->p[2]);
    if (w->mask & 1u)
        z = w->p[0] - 1 - z;
    if (w->mask & 2u)
        y = w->p[1] - 1 - y;
    if (w->mask & 4u)
        x = w->p[2] - 1 - x;
    *vol = w->base + z * w->st[0] + y * w->st[1] + x;
    return (z * w->p[1] + y) * w->p[2] + x;
}

/* What the way back adds for one logit: the Gaussian weight times the logit divided among the
 * mirrorings, in the order of the host path (scale first, then the weight). */
static inline MMS_HD float
mms_k_window_term(float gauss, float logit, float scale)
{
    return gauss * (logit * scale);
}

#endif
