/* infer: the postprocessing of a model card (struct mms_card pp): per step, of the voxels whose
 * label is in the step's set, only the largest 26-connected component stays (every component of
 * that size on a tie); the others become background. As nnU-Net's
 * remove_all_but_largest_component_from_segmentation (scikit-image's full connectivity); a step
 * whose set is absent from the volume changes nothing.
 *
 * Components are found by a breadth-first flood fill over the bounding box of the step's voxels,
 * with a component number per voxel (uint32) and a growing ring queue. The axis order does not
 * matter: 26-connectivity and voxel counts are the same in every order. Threads: the caller's. */
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "infer/pipeline.h"

struct ring {
    int64_t *v;
    size_t cap, head, n;
};

static int
push(struct ring *q, int64_t x)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 4096;
        int64_t *v = malloc(cap * sizeof *v);
        if (v == NULL)
            return MMS_ENOMEM;
        for (size_t i = 0; i < q->n; i++)
            v[i] = q->v[(q->head + i) % q->cap];
        free(q->v);
        q->v = v;
        q->cap = cap;
        q->head = 0;
    }
    q->v[(q->head + q->n++) % q->cap] = x;
    return 0;
}

static int64_t
pop(struct ring *q)
{
    int64_t x = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    return x;
}

static bool
in_set(const struct mms_pp_step *s, uint8_t l)
{
    return (s->labels[l / 64] >> (l % 64) & 1u) != 0;
}

/* One step over labels (shape n): comp receives component numbers from 1 inside the bounding
 * box lo..hi (inclusive) of the step's voxels. */
static int
step(const struct mms_pp_step *s, uint8_t *labels, const int64_t n[3], const int64_t lo[3],
     const int64_t hi[3], uint32_t *comp, int64_t *changed)
{
    const int64_t s0 = n[1] * n[2], s1 = n[2];
    int64_t *size = NULL, cap = 0, n_comp = 0, best = 0;
    struct ring q = {0};
    int rc = 0;
    for (int64_t z = lo[0]; z <= hi[0]; z++)
        for (int64_t y = lo[1]; y <= hi[1]; y++)
            memset(comp + z * s0 + y * s1 + lo[2], 0, (size_t)(hi[2] - lo[2] + 1) * sizeof *comp);
    for (int64_t z = lo[0]; z <= hi[0] && rc == 0; z++)
        for (int64_t y = lo[1]; y <= hi[1] && rc == 0; y++)
            for (int64_t x = lo[2]; x <= hi[2] && rc == 0; x++) {
                int64_t v = z * s0 + y * s1 + x;
                if (comp[v] != 0 || !in_set(s, labels[v]))
                    continue;
                if (n_comp == cap) {
                    cap = cap ? 2 * cap : 64;
                    int64_t *ns = realloc(size, (size_t)cap * sizeof *ns);
                    if (ns == NULL) {
                        rc = MMS_ENOMEM;
                        break;
                    }
                    size = ns;
                }
                uint32_t id = (uint32_t)++n_comp;
                int64_t count = 0;
                comp[v] = id;
                if ((rc = push(&q, v)) < 0)
                    break;
                while (q.n > 0 && rc == 0) {
                    int64_t u = pop(&q), uz = u / s0, uy = u / s1 % n[1], ux = u % s1;
                    count++;
                    for (int64_t dz = -1; dz <= 1 && rc == 0; dz++) {
                        int64_t wz = uz + dz;
                        if (wz < lo[0] || wz > hi[0])
                            continue;
                        for (int64_t dy = -1; dy <= 1 && rc == 0; dy++) {
                            int64_t wy = uy + dy;
                            if (wy < lo[1] || wy > hi[1])
                                continue;
                            for (int64_t dx = -1; dx <= 1; dx++) {
                                int64_t wx = ux + dx, w = wz * s0 + wy * s1 + wx;
                                if (wx < lo[2] || wx > hi[2] || comp[w] != 0 ||
                                    !in_set(s, labels[w]))
                                    continue;
                                comp[w] = id;
                                if ((rc = push(&q, w)) < 0)
                                    break;
                            }
                        }
                    }
                }
                size[n_comp - 1] = count;
                best = count > best ? count : best;
            }
    for (int64_t z = lo[0]; z <= hi[0] && rc == 0; z++)
        for (int64_t y = lo[1]; y <= hi[1]; y++)
            for (int64_t x = lo[2]; x <= hi[2]; x++) {
                int64_t v = z * s0 + y * s1 + x;
                if (comp[v] != 0 && size[comp[v] - 1] < best) {
                    labels[v] = 0;
                    ++*changed;
                }
            }
    free(size);
    free(q.v);
    return rc;
}

int
mms_pipe_postprocess(const struct mms_card *card, uint8_t *labels, const int64_t n[3],
                     int64_t *changed)
{
    *changed = 0;
    if (card->n_pp == 0)
        return 0;
    if (n[0] < 1 || n[1] < 1 || n[2] < 1 || n[0] * n[1] > MMS_PIPE_MAX_VOXELS / n[2])
        return MMS_EINVAL;
    const int64_t nv = n[0] * n[1] * n[2];
    uint32_t *comp = malloc((size_t)nv * sizeof *comp);
    if (comp == NULL)
        return MMS_ENOMEM;
    int rc = 0;
    for (int i = 0; i < card->n_pp && rc == 0; i++) {
        const struct mms_pp_step *s = &card->pp[i];
        int64_t lo[3] = {n[0], n[1], n[2]}, hi[3] = {-1, -1, -1};
        for (int64_t v = 0; v < nv; v++) {
            if (!in_set(s, labels[v]))
                continue;
            int64_t c[3] = {v / (n[1] * n[2]), v / n[2] % n[1], v % n[2]};
            for (int a = 0; a < 3; a++) {
                lo[a] = c[a] < lo[a] ? c[a] : lo[a];
                hi[a] = c[a] > hi[a] ? c[a] : hi[a];
            }
        }
        if (hi[0] >= 0) /* labels of the set are present */
            rc = step(s, labels, n, lo, hi, comp, changed);
    }
    free(comp);
    return rc;
}
