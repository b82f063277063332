/* Tests of the main-stack geometry (dicom/stack.c, design.md section 5) on synthetic headers:
 * sorting by position, spacing, gaps, duplicates, repeated acquisitions, localizers, other
 * frames of reference, gantry tilt and oblique orientations. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "dicom/dicom.h"
#include "tests/tap.h"

#define MAXN 64

static struct mms_slice sl[MAXN];
static const struct mms_stack_opts opts = {.max_gap_ratio = 2.0, .allow_gaps = false};

/* n axial frames, 512x512, z = z0 + i * dz (i in input order given by perm, or identity) */
static void
axial(int n, double z0, double dz, const int *perm)
{
    for (int i = 0; i < n; i++) {
        int k = perm != NULL ? perm[i] : i;
        struct mms_slice *s = &sl[i];
        memset(s, 0, sizeof *s);
        strcpy(s->frame_of_ref, "1.2.3");
        double iop[6] = {1, 0, 0, 0, 1, 0};
        memcpy(s->iop, iop, sizeof iop);
        s->ipp[0] = -250.0;
        s->ipp[1] = -250.0;
        s->ipp[2] = z0 + k * dz;
        s->rows = s->cols = 512;
        s->acquisition = 1;
        s->temporal = -1;
    }
}

static int
run(int n, const struct mms_stack_opts *o, struct mms_stack **st, char *why)
{
    why[0] = '\0';
    return mms_stack_find(sl, n, o, st, why, 256);
}

int
main(void)
{
    struct mms_stack *st = NULL;
    char why[256];
    int rc;
    plan(31, 30);

    /* shuffled input: the order comes from positions, never from input or instance order */
    static const int perm[10] = {3, 7, 0, 9, 1, 8, 2, 6, 4, 5};
    axial(10, 100.0, 2.5, perm);
    rc = run(10, &opts, &st, why);
    ok(rc == 0 && st->n == 10 && st->n_stacks == 1, "ten shuffled axial frames: one stack of 10");
    bool sorted = rc == 0;
    for (int j = 0; sorted && j < 10; j++)
        sorted = perm[st->order[j]] == j && fabs(st->pos_mm[j] - (100.0 + 2.5 * j)) < 1e-9;
    ok(sorted, "sorted by the projection of IPP on the normal");
    ok(rc == 0 && fabs(st->spacing_mm - 2.5) < 1e-9 && !st->irregular && st->tilt_deg == 0.0,
       "spacing 2.5 mm, regular, no tilt");
    mms_stack_free(st);
    st = NULL;

    /* a missing slice: an error, or kept as irregular spacing with allow_gaps */
    static const int gap[9] = {0, 1, 2, 3, 4, 6, 7, 8, 9};
    axial(9, 0.0, 2.5, gap);
    rc = run(9, &opts, &st, why);
    ok(rc == MMS_EDICOM && strstr(why, "missing slices between 10.0 and 15.0 mm") != NULL,
       "a missing slice fails: %s", why);
    struct mms_stack_opts allow = {.max_gap_ratio = 2.0, .allow_gaps = true};
    rc = run(9, &allow, &st, why);
    ok(rc == 0 && st->n == 9 && st->irregular && fabs(st->max_step_mm - 5.0) < 1e-9,
       "with allow_gaps the stack is kept, irregular, its 5 mm step measured");
    mms_stack_free(st);
    st = NULL;

    /* irregular spacing below the gap ratio is kept as measured */
    axial(6, 0.0, 2.5, NULL);
    sl[3].ipp[2] = 8.0;
    sl[4].ipp[2] = 11.0;
    sl[5].ipp[2] = 14.0;
    rc = run(6, &opts, &st, why);
    ok(rc == 0 && st->irregular && fabs(st->pos_mm[3] - 8.0) < 1e-9,
       "steps of 2.5 and 3 mm: irregular, positions kept");
    mms_stack_free(st);
    st = NULL;

    /* duplicates: the same position twice in one acquisition, or every frame at one place */
    axial(5, 0.0, 2.5, NULL);
    sl[4].ipp[2] = 5.0;
    rc = run(5, &opts, &st, why);
    ok(rc == MMS_EDICOM && strstr(why, "not a volume") != NULL, "two frames at one position: %s",
       why);
    axial(5, 0.0, 0.0, NULL);
    rc = run(5, &opts, &st, why);
    ok(rc == MMS_EDICOM && strstr(why, "not a volume") != NULL, "all frames at one position: %s",
       why);

    /* every frame at one place, each its own acquisition: split into ones, still no volume */
    axial(4, 61.5, 0.0, NULL);
    for (int i = 0; i < 4; i++)
        sl[i].acquisition = 15 - i;
    rc = run(4, &opts, &st, why);
    ok(rc == MMS_EDICOM && strstr(why, "not a volume: 4 frames at one position") != NULL,
       "four acquisitions of one frame at one place: %s", why);

    /* repeated positions in two acquisitions: split, the larger is the volume */
    axial(10, 0.0, 2.5, NULL);
    for (int i = 0; i < 8; i++) {
        sl[10 + i] = sl[i];
        sl[10 + i].acquisition = 2;
    }
    rc = run(18, &opts, &st, why);
    ok(rc == 0 && st->n == 10 && st->n_stacks == 2 && st->reason[12] == MMS_STACK_ACQUISITION &&
           st->reason[3] == MMS_STACK_MAIN,
       "two acquisitions at the same places: stacks of 10 and 8, the 10 kept");
    mms_stack_free(st);
    st = NULL;
    /* the same positions in two temporal positions of one acquisition */
    for (int i = 0; i < 8; i++) {
        sl[10 + i].acquisition = 1;
        sl[10 + i].temporal = 2;
    }
    rc = run(18, &opts, &st, why);
    ok(rc == 0 && st->n == 10 && st->reason[15] == MMS_STACK_ACQUISITION,
       "two temporal positions: split the same way");
    mms_stack_free(st);
    st = NULL;
    /* acquisition numbers that change per slice without repeated positions do not split */
    axial(10, 0.0, 2.5, NULL);
    for (int i = 0; i < 10; i++)
        sl[i].acquisition = 100 + i;
    rc = run(10, &opts, &st, why);
    ok(rc == 0 && st->n == 10 && st->n_stacks == 1,
       "a new AcquisitionNumber on every slice (no repeats): one stack");
    mms_stack_free(st);
    st = NULL;

    /* a localizer (another orientation), another frame of reference, another size */
    axial(10, 0.0, 2.5, NULL);
    for (int i = 10; i < 13; i++) {
        sl[i] = sl[0];
        double cor[6] = {1, 0, 0, 0, 0, -1};
        memcpy(sl[i].iop, cor, sizeof cor);
        sl[i].ipp[1] = (i - 10) * 10.0;
    }
    sl[13] = sl[1];
    strcpy(sl[13].frame_of_ref, "9.9.9");
    sl[14] = sl[2];
    sl[14].rows = 256;
    rc = run(15, &opts, &st, why);
    ok(rc == 0 && st->n == 10 && st->n_stacks == 4, "axial + localizer + other FoR + other size: "
                                                    "4 stacks, the axial one kept");
    ok(rc == 0 && st->reason[11] == MMS_STACK_ORIENTATION &&
           st->reason[13] == MMS_STACK_FRAME_OF_REF && st->reason[14] == MMS_STACK_SIZE,
       "each other frame says why it was left out");
    mms_stack_free(st);
    st = NULL;
    /* IOP that differs by less than the tolerance is the same orientation */
    axial(10, 0.0, 2.5, NULL);
    sl[4].iop[0] = 0.9999996;
    sl[4].iop[1] = 0.0008;
    rc = run(10, &opts, &st, why);
    ok(rc == 0 && st->n == 10, "IOP within 1e-3 per cosine: one stack");
    mms_stack_free(st);
    st = NULL;

    /* gantry tilt 18.5 deg: IPP moves along y as z increases; spacing along the normal */
    double t = tan(18.5 * M_PI / 180.0);
    axial(20, 0.0, 2.5, NULL);
    for (int i = 0; i < 20; i++)
        sl[i].ipp[1] = -250.0 + t * 2.5 * i;
    rc = run(20, &opts, &st, why);
    ok(rc == 0 && fabs(st->tilt_deg - 18.5) < 1e-6 && fabs(st->spacing_mm - 2.5) < 1e-9,
       "gantry tilt: %.6f deg, spacing %.3f mm along the normal", rc == 0 ? st->tilt_deg : 0.0,
       rc == 0 ? st->spacing_mm : 0.0);
    ok(rc == 0 && fabs(st->slice_dir[1] - sin(18.5 * M_PI / 180.0)) < 1e-9 &&
           fabs(st->normal[2] - 1.0) < 1e-12,
       "slice direction keeps the shear, the normal stays row x column");
    mms_stack_free(st);
    st = NULL;
    /* an oblique orientation with slices along its normal: no tilt */
    double c = cos(18.5 * M_PI / 180.0), sn = sin(18.5 * M_PI / 180.0);
    axial(12, 0.0, 2.5, NULL);
    for (int i = 0; i < 12; i++) {
        double iop[6] = {1, 0, 0, 0, c, -sn};
        memcpy(sl[i].iop, iop, sizeof iop);
        double nrm[3] = {0, sn, c}; /* row x col */
        for (int k = 0; k < 3; k++)
            sl[i].ipp[k] = (k == 0 ? -250.0 : 0.0) + 3.0 * i * nrm[k];
    }
    rc = run(12, &opts, &st, why);
    ok(rc == 0 && st->tilt_deg == 0.0 && fabs(st->spacing_mm - 3.0) < 1e-9,
       "oblique orientation, slices along its normal: no tilt, spacing 3 mm");
    mms_stack_free(st);
    st = NULL;

    /* positions decreasing in the input (feet first) are sorted ascending just the same */
    axial(10, 50.0, -5.0, NULL);
    rc = run(10, &opts, &st, why);
    ok(rc == 0 && st->order[0] == 9 && st->pos_mm[0] == 5.0 && st->spacing_mm == 5.0,
       "positions decreasing in input order: sorted ascending along the normal");
    mms_stack_free(st);
    st = NULL;

    /* bad orientations are refused frame by frame; none valid is an error */
    axial(6, 0.0, 2.5, NULL);
    memset(sl[2].iop, 0, sizeof sl[2].iop);
    sl[3].iop[3] = 1.0; /* row = col: not orthogonal */
    sl[3].iop[4] = 0.0;
    rc = run(6, &opts, &st, why);
    ok(rc == MMS_EDICOM || (rc == 0 && st->reason[2] == MMS_STACK_BAD_ORIENTATION &&
                            st->reason[3] == MMS_STACK_BAD_ORIENTATION),
       "zero and non-orthogonal IOP: those frames are refused");
    ok(rc == MMS_EDICOM && strstr(why, "missing slices") != NULL,
       "and the hole they leave is a gap: %s", why);
    mms_stack_free(st);
    st = NULL;
    for (int i = 0; i < 3; i++)
        sl[i].iop[0] = NAN;
    rc = run(2, &opts, &st, why);
    ok(rc == MMS_EINVAL && strstr(why, "no frame") != NULL, "no valid frame: %s", why);
    sl[0].iop[0] = 1.0;
    sl[0].ipp[2] = INFINITY;
    rc = run(1, &opts, &st, why);
    ok(rc == MMS_EINVAL, "an infinite position is refused");

    /* one frame */
    axial(1, 7.0, 2.5, NULL);
    rc = run(1, &opts, &st, why);
    ok(rc == 0 && st->n == 1 && st->spacing_mm == 0.0 && st->tilt_deg == 0.0,
       "one frame: a stack of one, spacing 0");
    mms_stack_free(st);
    st = NULL;
    is_int(mms_stack_find(sl, 0, &opts, &st, why, sizeof why), MMS_EINVAL, "no frames at all");
    ok(st == NULL, "out untouched on failure");

    /* one frame of reference per frame: no stack of more than one frame, not a volume */
    axial(12, 0.0, 2.5, NULL);
    for (int i = 0; i < 12; i++)
        snprintf(sl[i].frame_of_ref, sizeof sl[i].frame_of_ref, "1.2.3.%d", i);
    rc = run(12, &opts, &st, why);
    ok(rc == MMS_EDICOM &&
           strstr(why, "not a volume: the largest of 12 stacks has 1 frame of 12 (left out: 11 "
                       "in other frames of reference") != NULL,
       "one frame of reference per frame: %s", why);
    /* two frames of reference: the main stack under min_slices fails, at 0 it is kept */
    axial(14, 0.0, 2.5, NULL);
    for (int i = 8; i < 14; i++)
        strcpy(sl[i].frame_of_ref, "9.9.9");
    struct mms_stack_opts o10 = opts;
    o10.min_slices = 10;
    rc = run(14, &o10, &st, why);
    ok(rc == MMS_EDICOM && strstr(why, "has 8 frames of 14, fewer than min_slices 10") != NULL,
       "8 + 6 frames in two frames of reference, min_slices 10: %s", why);
    rc = run(14, &opts, &st, why);
    ok(rc == 0 && st->n == 8 && st->n_stacks == 2, "the same without a minimum: a stack of 8");
    mms_stack_free(st);
    st = NULL;
    /* positions beyond 1e6 mm are left out like a bad orientation */
    axial(4, 0.0, 2.5, NULL);
    sl[3].ipp[0] = 1e30;
    rc = run(4, &opts, &st, why);
    ok(rc == 0 && st->n == 3 && st->reason[3] == MMS_STACK_BAD_ORIENTATION,
       "a position of 1e30 mm: that frame is left out");
    mms_stack_free(st);
    st = NULL;
    /* a median step over 1000 mm */
    axial(4, 0.0, 5000.0, NULL);
    rc = run(4, &opts, &st, why);
    ok(rc == MMS_EDICOM && strstr(why, "5000 mm, is over 1000 mm") != NULL,
       "5000 mm between slices: %s", why);
    return done_testing();
}
