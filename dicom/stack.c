/* dicom: the main stack of a series and its geometry (design.md section 5).
 * Threads: reentrant; no shared state. */
#include "dicom/dicom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

#define IOP_TOL 1e-3  /* per direction cosine: frames closer than this share an orientation */
#define UNIT_TOL 1e-2 /* |row|, |col| within 1 +- this, row . col within +- this */
#define POS_TOL 1e-3  /* mm: two projections closer than this are one position */
#define IRREGULAR 0.01
#define TILT_MIN_DEG 0.01
#define GAP_SLACK 0.99 /* one missing slice doubles a step: at ratio 2.0 it must count */

struct key {
    int group; /* stack number, or -1 when the frame is refused */
    double proj;
};

static double
dot3(const double *a, const double *b)
{
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

static void
cross3(const double *a, const double *b, double *out)
{
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

static bool
unit3(double *v)
{
    double n = sqrt(dot3(v, v));
    if (!(n > 0.0) || !isfinite(n))
        return false;
    for (int i = 0; i < 3; i++)
        v[i] /= n;
    return true;
}

static bool
orientation_ok(const struct mms_slice *s)
{
    for (int i = 0; i < 6; i++)
        if (!isfinite(s->iop[i]))
            return false;
    for (int i = 0; i < 3; i++)
        if (!(fabs(s->ipp[i]) <= MMS_POSITION_MAX_MM)) /* also NaN */
            return false;
    double r = sqrt(dot3(s->iop, s->iop)), c = sqrt(dot3(s->iop + 3, s->iop + 3));
    return fabs(r - 1.0) <= UNIT_TOL && fabs(c - 1.0) <= UNIT_TOL &&
           fabs(dot3(s->iop, s->iop + 3)) <= UNIT_TOL && s->rows > 0 && s->cols > 0;
}

static bool
same_orientation(const struct mms_slice *a, const struct mms_slice *b)
{
    for (int i = 0; i < 6; i++)
        if (fabs(a->iop[i] - b->iop[i]) > IOP_TOL)
            return false;
    return true;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sort the members of a group by projection (insertion sort: stable, reentrant, and linear on
 * the usual already-ordered input); true when two share a position. */
static bool
sort_group(int *idx, int n, const double *proj)
{
    for (int i = 1; i < n; i++) {
        int v = idx[i], j = i - 1;
        while (j >= 0 && proj[idx[j]] > proj[v]) {
            idx[j + 1] = idx[j];
            j--;
        }
        idx[j + 1] = v;
    }
    for (int i = 1; i < n; i++)
        if (proj[idx[i]] - proj[idx[i - 1]] < POS_TOL)
            return true;
    return false;
}

int
mms_stack_find(const struct mms_slice *s, int n, const struct mms_stack_opts *o,
               struct mms_stack **out, char *why, size_t why_len)
{
    if (s == NULL || n < 1 || o == NULL || out == NULL)
        return mms_why(why, why_len, MMS_EINVAL, "no frames");
    int rc = MMS_ENOMEM;
    int *group = malloc((size_t)n * sizeof *group), *idx = malloc((size_t)n * sizeof *idx);
    /* groups: at most n, and the splits of step 2 add at most n more */
    int *size = calloc(2 * (size_t)n, sizeof *size), *first = malloc(2 * (size_t)n * sizeof *first);
    double *proj = malloc((size_t)n * sizeof *proj), *steps = NULL;
    struct mms_stack *st = calloc(1, sizeof *st);
    if (group == NULL || idx == NULL || size == NULL || first == NULL || proj == NULL ||
        st == NULL || (st->reason = calloc((size_t)n, sizeof *st->reason)) == NULL)
        goto fail;

    /* 1. groups by frame of reference, orientation and size: the group's first frame is its
     *    reference; a refused frame gets group -1 */
    int ng = 0;
    for (int i = 0; i < n; i++) {
        group[i] = -1;
        if (!orientation_ok(&s[i])) {
            st->reason[i] = MMS_STACK_BAD_ORIENTATION;
            continue;
        }
        for (int g = 0; g < ng && group[i] < 0; g++) {
            const struct mms_slice *r = &s[first[g]];
            if (strcmp(r->frame_of_ref, s[i].frame_of_ref) == 0 && same_orientation(r, &s[i]) &&
                r->rows == s[i].rows && r->cols == s[i].cols)
                group[i] = g;
        }
        if (group[i] < 0) {
            first[ng] = i;
            group[i] = ng++;
        }
        size[group[i]]++;
    }
    if (ng == 0) {
        rc = mms_why(why, why_len, MMS_EINVAL, "no frame has a valid orientation and position");
        goto fail;
    }
    for (int i = 0; i < n; i++) { /* projection on each group's own normal */
        if (group[i] < 0)
            continue;
        const struct mms_slice *r = &s[first[group[i]]];
        double nrm[3];
        cross3(r->iop, r->iop + 3, nrm);
        unit3(nrm);
        proj[i] = dot3(s[i].ipp, nrm);
    }
    /* 2. a group whose positions repeat splits by acquisition and temporal position */
    int ng0 = ng;
    for (int g = 0; g < ng0; g++) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (group[i] == g)
                idx[m++] = i;
        if (!sort_group(idx, m, proj))
            continue;
        int base = ng;
        for (int j = 0; j < m; j++) { /* sub-groups keyed by (acquisition, temporal) */
            int i = idx[j], sub = -1;
            for (int h = base; h < ng && sub < 0; h++)
                if (s[first[h]].acquisition == s[i].acquisition &&
                    s[first[h]].temporal == s[i].temporal)
                    sub = h;
            if (sub < 0) {
                first[ng] = i;
                size[ng] = 0;
                sub = ng++;
            }
            size[g]--;
            size[sub]++;
            group[i] = sub;
        }
    }
    /* 3. the main stack: the most frames, the earliest on ties */
    int main_g = -1;
    for (int g = 0; g < ng; g++)
        if (size[g] > 0 && (main_g < 0 || size[g] > size[main_g] ||
                            (size[g] == size[main_g] && first[g] < first[main_g])))
            main_g = g;
    st->n_stacks = 0;
    for (int g = 0; g < ng; g++)
        st->n_stacks += size[g] > 0;
    const struct mms_slice *ref = &s[first[main_g]];
    for (int i = 0; i < n; i++) {
        if (group[i] < 0 || group[i] == main_g)
            continue;
        const struct mms_slice *q = &s[i];
        st->reason[i] = strcmp(q->frame_of_ref, ref->frame_of_ref) != 0 ? MMS_STACK_FRAME_OF_REF
                        : !same_orientation(q, ref)                     ? MMS_STACK_ORIENTATION
                        : q->rows != ref->rows || q->cols != ref->cols  ? MMS_STACK_SIZE
                                                                        : MMS_STACK_ACQUISITION;
    }
    int m = 0, split_off = 0;
    for (int i = 0; i < n; i++) {
        if (group[i] == main_g)
            idx[m++] = i;
        split_off += st->reason[i] == MMS_STACK_ACQUISITION;
    }
    if (m == 1 && split_off > 0) { /* every acquisition has one frame, all at one place */
        rc = mms_why(why, why_len, MMS_EDICOM,
                     "not a volume: %d frames at one position, one per acquisition", 1 + split_off);
        goto fail;
    }
    int valid = 0, by[MMS_STACK_ACQUISITION + 1] = {0};
    for (int i = 0; i < n; i++) {
        valid += group[i] >= 0;
        by[st->reason[i]]++;
    }
    /* the split left a main stack of one frame out of several (one frame of reference or
     * orientation per frame), or fewer frames than the caller's minimum */
    if (m < valid && (m == 1 || m < o->min_slices)) {
        char min[64] = "";
        if (m > 1)
            snprintf(min, sizeof min, ", fewer than min_slices %d", o->min_slices);
        rc = mms_why(why, why_len, MMS_EDICOM,
                     "not a volume: the largest of %d stacks has %d frame%s of %d%s (left out: %d "
                     "in other frames of reference, %d in other orientations, %d of other sizes, "
                     "%d in other acquisitions)",
                     st->n_stacks, m, m == 1 ? "" : "s", valid, min, by[MMS_STACK_FRAME_OF_REF],
                     by[MMS_STACK_ORIENTATION], by[MMS_STACK_SIZE], by[MMS_STACK_ACQUISITION]);
        goto fail;
    }
    if (sort_group(idx, m, proj)) {
        int j = 1;
        while (proj[idx[j]] - proj[idx[j - 1]] >= POS_TOL)
            j++;
        rc = mms_why(why, why_len, MMS_EDICOM,
                     "not a volume: %d frames, two at the same position (%.3f mm along the normal)",
                     m, proj[idx[j]]);
        goto fail;
    }

    /* 4. geometry of the main stack */
    st->n = m;
    if ((st->order = malloc((size_t)m * sizeof *st->order)) == NULL ||
        (st->pos_mm = malloc((size_t)m * sizeof *st->pos_mm)) == NULL ||
        (steps = malloc((size_t)(m > 1 ? m - 1 : 1) * sizeof *steps)) == NULL)
        goto fail;
    memcpy(st->row, ref->iop, sizeof st->row);
    memcpy(st->col, ref->iop + 3, sizeof st->col);
    unit3(st->row);
    double d = dot3(st->row, st->col); /* Gram-Schmidt: col orthogonal to row */
    for (int k = 0; k < 3; k++)
        st->col[k] -= d * st->row[k];
    unit3(st->col);
    cross3(st->row, st->col, st->normal);
    unit3(st->normal);
    for (int j = 0; j < m; j++) {
        st->order[j] = idx[j];
        st->pos_mm[j] = dot3(s[idx[j]].ipp, st->normal);
    }
    memcpy(st->slice_dir, st->normal, sizeof st->slice_dir);
    if (m > 1) {
        const double *a = s[idx[0]].ipp, *b = s[idx[m - 1]].ipp;
        double v[3] = {b[0] - a[0], b[1] - a[1], b[2] - a[2]};
        if (unit3(v)) {
            memcpy(st->slice_dir, v, sizeof v);
            double c = fabs(dot3(v, st->normal));
            double deg = acos(c > 1.0 ? 1.0 : c) * 180.0 / M_PI;
            st->tilt_deg = deg >= TILT_MIN_DEG ? deg : 0.0;
        }
        for (int j = 0; j + 1 < m; j++)
            steps[j] = st->pos_mm[j + 1] - st->pos_mm[j];
        st->min_step_mm = st->max_step_mm = steps[0];
        for (int j = 1; j + 1 < m; j++) {
            st->min_step_mm = steps[j] < st->min_step_mm ? steps[j] : st->min_step_mm;
            st->max_step_mm = steps[j] > st->max_step_mm ? steps[j] : st->max_step_mm;
        }
        double *sorted = malloc((size_t)(m - 1) * sizeof *sorted);
        if (sorted == NULL)
            goto fail;
        memcpy(sorted, steps, (size_t)(m - 1) * sizeof *sorted);
        qsort(sorted, (size_t)(m - 1), sizeof *sorted, cmp_double);
        st->spacing_mm = (m - 1) % 2 ? sorted[(m - 1) / 2]
                                     : 0.5 * (sorted[(m - 1) / 2 - 1] + sorted[(m - 1) / 2]);
        free(sorted);
        if (!(st->spacing_mm <= MMS_SPACING_MAX_MM)) {
            rc = mms_why(why, why_len, MMS_EDICOM,
                         "the median step between slices, %g mm, is over %g mm", st->spacing_mm,
                         MMS_SPACING_MAX_MM);
            goto fail;
        }
        st->irregular = st->max_step_mm - st->spacing_mm > IRREGULAR * st->spacing_mm ||
                        st->spacing_mm - st->min_step_mm > IRREGULAR * st->spacing_mm;
        for (int j = 0; j + 1 < m && !o->allow_gaps; j++) {
            if (steps[j] >= GAP_SLACK * o->max_gap_ratio * st->spacing_mm) {
                rc = mms_why(why, why_len, MMS_EDICOM,
                             "missing slices between %.1f and %.1f mm along the normal (step "
                             "%.2f mm, median %.2f mm)",
                             st->pos_mm[j], st->pos_mm[j + 1], steps[j], st->spacing_mm);
                goto fail;
            }
        }
    }
    free(steps);
    free(group);
    free(idx);
    free(size);
    free(first);
    free(proj);
    *out = st;
    return 0;
fail:
    free(steps);
    free(group);
    free(idx);
    free(size);
    free(first);
    free(proj);
    mms_stack_free(st);
    return rc;
}

void
mms_stack_free(struct mms_stack *st)
{
    if (st == NULL)
        return;
    free(st->order);
    free(st->pos_mm);
    free(st->reason);
    free(st);
}
