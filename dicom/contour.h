/* dicom: the outlines of one label on one slice, as closed polygons along the pixel edges, for
 * the RT Structure Set (rtstruct.h). Threads: any; one call at a time per mms_contours. */
#ifndef MMS_DICOM_CONTOUR_H
#define MMS_DICOM_CONTOUR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The polygons of the last mms_contours_trace(), and the memory it reuses.
 * Coordinates are pixel corners: pixel (column i, row j) spans x = i..i + 1, y = j..j + 1, so
 * its centre is (i + 0.5, j + 0.5). Polygon p has the points start[p] to start[p + 1] - 1
 * (x = xy[2 q], y = xy[2 q + 1]), closed (the last point joins the first, which is not
 * repeated), a point only where the outline turns. Outer outlines run one way and the outlines
 * of holes the other (the label lies on the same side of every edge): filling each polygon and
 * combining them by parity (even-odd) gives the label's pixels back exactly, and so does
 * testing each pixel centre against all of them by parity. Diagonal neighbours are separate
 * (4-connected regions): polygons never cross, and meet at most at a corner. */
struct mms_contours {
    int64_t n;      /* polygons */
    int64_t points; /* in all */
    int64_t *start; /* n + 1 */
    int32_t *xy;    /* 2 x points */
    /* reused between calls */
    size_t cap_polys, cap_points, cap_edges;
    uint8_t *edges;
};

/* The outlines of the pixels equal to label in the slice (rows x cols, row-major) within the
 * box of rows r0..r1 and columns c0..c1 (inclusive; every such pixel must lie in it) into c,
 * replacing what it held. Returns 0, MMS_EINVAL (a box outside the slice) or MMS_ENOMEM. */
int mms_contours_trace(const uint8_t *slice, int64_t rows, int64_t cols, uint8_t label, int64_t r0,
                       int64_t r1, int64_t c0, int64_t c1, struct mms_contours *c);

/* Free what c holds; c is then empty (zeroed). */
void mms_contours_free(struct mms_contours *c);

#ifdef __cplusplus
}
#endif
#endif
