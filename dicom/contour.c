/* dicom: outlines of a label along the pixel edges (contour.h).
 *
 * Every edge between a pixel of the label and one that is not (or the border) is an edge of an
 * outline, directed so that the label lies on its same side: the top edge of a labelled pixel
 * runs left, its left edge down, its bottom edge right, its right edge up (x right, y down).
 * Each corner keeps the directions that leave it as bits. Following the edges from corner to
 * corner closes every outline; where two leave one corner (two labelled pixels that touch only
 * diagonally) the walk turns toward the label, which keeps the two pixels' outlines apart.
 * Only the corners where the direction changes are kept. */
#include "dicom/contour.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

enum { L, D, R, U }; /* the walk turns toward the label: from direction d to (d + 1) % 4 */
static const int dx[4] = {-1, 0, 1, 0}, dy[4] = {0, 1, 0, -1};

/* p (of *cap elements of size bytes) with room for need: p itself, or a larger copy (*cap
 * updated), or NULL when out of memory (p is left as it was). */
static void *
grow(void *p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return p;
    size_t n = *cap > 0 ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(p, n * size);
    if (q != NULL)
        *cap = n;
    return q;
}

int
mms_contours_trace(const uint8_t *slice, int64_t rows, int64_t cols, uint8_t label, int64_t r0,
                   int64_t r1, int64_t c0, int64_t c1, struct mms_contours *c)
{
    c->n = 0;
    c->points = 0;
    if (slice == NULL || r0 < 0 || c0 < 0 || r1 < r0 || c1 < c0 || r1 >= rows || c1 >= cols)
        return MMS_EINVAL;
    const int64_t w = c1 - c0 + 2, h = r1 - r0 + 2; /* corners of the box */
    uint8_t *e = grow(c->edges, &c->cap_edges, (size_t)(w * h), 1);
    if (e == NULL)
        return MMS_ENOMEM;
    c->edges = e;
    memset(e, 0, (size_t)(w * h));

    /* the edges, at the corner each leaves (box coordinates) */
#define IN(i, j)                                                                                   \
    ((i) >= 0 && (i) < w - 1 && (j) >= 0 && (j) < h - 1 &&                                         \
     slice[(r0 + (j)) * cols + c0 + (i)] == label)
    int64_t edges = 0;
    for (int64_t j = 0; j < h - 1; j++) {
        const uint8_t *row = slice + (r0 + j) * cols + c0;
        for (int64_t i = 0; i < w - 1; i++) {
            if (row[i] != label)
                continue;
            if (!IN(i, j - 1)) {
                e[j * w + i + 1] |= 1u << L;
                edges++;
            }
            if (!IN(i, j + 1)) {
                e[(j + 1) * w + i] |= 1u << R;
                edges++;
            }
            if (!IN(i - 1, j)) {
                e[j * w + i] |= 1u << D;
                edges++;
            }
            if (!IN(i + 1, j)) {
                e[(j + 1) * w + i + 1] |= 1u << U;
                edges++;
            }
        }
    }
#undef IN
    /* a walk visits each edge once: at most `edges` points in all, before the straight ones go */
    int32_t *xy = grow(c->xy, &c->cap_points, 2 * (size_t)edges + 2, sizeof(int32_t));
    if (xy == NULL)
        return MMS_ENOMEM;
    c->xy = xy;
    uint8_t *dir_of = malloc((size_t)edges + 1);
    if (dir_of == NULL)
        return MMS_ENOMEM;

    int64_t at = 0; /* points kept */
    for (int64_t s = 0; s < w * h; s++) {
        if (e[s] == 0)
            continue;
        int64_t *start = grow(c->start, &c->cap_polys, (size_t)c->n + 2, sizeof(int64_t));
        if (start == NULL) {
            free(dir_of);
            return MMS_ENOMEM;
        }
        c->start = start;
        const int64_t sx = s % w, sy = s / w;
        int d = __builtin_ctz(e[s]);
        const int closing = (d + 3) % 4; /* the direction that pairs with d at the start */
        int64_t x = sx, y = sy, k = 0, first = at;
        for (;;) {
            e[y * w + x] &= (uint8_t) ~(1u << d);
            xy[2 * (first + k)] = (int32_t)(c0 + x);
            xy[2 * (first + k) + 1] = (int32_t)(r0 + y);
            dir_of[k++] = (uint8_t)d;
            x += dx[d];
            y += dy[d];
            if (x == sx && y == sy && d == closing)
                break;
            const unsigned out = e[y * w + x];
            if (out == 0) /* cannot happen: every corner has as many edges in as out */
                break;
            const int turn = (d + 1) % 4;
            d = (out & (1u << turn)) != 0 ? turn : __builtin_ctz(out);
        }
        /* keep the corners where the direction changes */
        int64_t m = 0;
        for (int64_t q = 0; q < k; q++)
            if (dir_of[q] != dir_of[(q + k - 1) % k]) {
                xy[2 * (first + m)] = xy[2 * (first + q)];
                xy[2 * (first + m) + 1] = xy[2 * (first + q) + 1];
                m++;
            }
        c->start[c->n++] = first;
        at = first + m;
        s--; /* the same corner may start another outline */
    }
    free(dir_of);
    int64_t *start = grow(c->start, &c->cap_polys, (size_t)c->n + 1, sizeof(int64_t));
    if (start == NULL)
        return MMS_ENOMEM;
    c->start = start;
    c->start[c->n] = at;
    c->points = at;
    return 0;
}

void
mms_contours_free(struct mms_contours *c)
{
    free(c->start);
    free(c->xy);
    free(c->edges);
    memset(c, 0, sizeof *c);
}
