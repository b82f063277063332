/* Tests of the label outlines of the RT Structure Set (dicom/contour.c): on hand-made slices
 * (one pixel, a ring with its hole, two pixels touching at a corner, a checkerboard, the
 * whole slice, an L shape) and on random ones, the polygons filled back by parity at every
 * pixel centre give exactly the label's pixels; every polygon is closed, axis-parallel, with a
 * point only where it turns; the counts of polygons and points where they are known. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "dicom/contour.h"
#include "tests/tap.h"

/* Is the centre of pixel (i, j), (i + 0.5, j + 0.5), inside an odd number of the polygons?
 * A ray toward +x counts the vertical edges it crosses. */
static bool
inside(const struct mms_contours *c, int64_t i, int64_t j)
{
    const double px = (double)i + 0.5, py = (double)j + 0.5;
    bool in = false;
    for (int64_t p = 0; p < c->n; p++) {
        int64_t a = c->start[p], n = c->start[p + 1] - a;
        for (int64_t q = 0; q < n; q++) {
            const int32_t *u = &c->xy[2 * (a + q)], *v = &c->xy[2 * (a + (q + 1) % n)];
            if (u[0] != v[0])
                continue; /* horizontal */
            double y0 = u[1] < v[1] ? u[1] : v[1], y1 = u[1] < v[1] ? v[1] : u[1];
            if (py > y0 && py < y1 && (double)u[0] > px)
                in = !in;
        }
    }
    return in;
}

/* The shape of the polygons: at least 4 points each, edges axis-parallel and not empty,
 * consecutive edges turning (no straight point). */
static bool
well_formed(const struct mms_contours *c, char *why, size_t len)
{
    for (int64_t p = 0; p < c->n; p++) {
        int64_t a = c->start[p], n = c->start[p + 1] - a;
        if (n < 4 || (n & 1) != 0) {
            snprintf(why, len, "polygon %lld has %lld points", (long long)p, (long long)n);
            return false;
        }
        for (int64_t q = 0; q < n; q++) {
            const int32_t *u = &c->xy[2 * (a + q)], *v = &c->xy[2 * (a + (q + 1) % n)],
                          *w = &c->xy[2 * (a + (q + 2) % n)];
            bool h1 = u[1] == v[1] && u[0] != v[0], v1 = u[0] == v[0] && u[1] != v[1];
            bool h2 = v[1] == w[1] && v[0] != w[0], v2 = v[0] == w[0] && v[1] != w[1];
            if (!(h1 || v1) || (h1 && h2) || (v1 && v2)) {
                snprintf(why, len, "polygon %lld: (%d,%d) (%d,%d) (%d,%d)", (long long)p, u[0],
                         u[1], v[0], v[1], w[0], w[1]);
                return false;
            }
        }
    }
    return true;
}

/* Trace label lab of s (rows x cols) in its box, and check it against the pixels. */
static bool
check(const uint8_t *s, int64_t rows, int64_t cols, uint8_t lab, struct mms_contours *c,
      const char *name, int64_t want_polys, int64_t want_points)
{
    int64_t r0 = rows, r1 = -1, c0 = cols, c1 = -1;
    for (int64_t j = 0; j < rows; j++)
        for (int64_t i = 0; i < cols; i++)
            if (s[j * cols + i] == lab) {
                r0 = j < r0 ? j : r0;
                r1 = j > r1 ? j : r1;
                c0 = i < c0 ? i : c0;
                c1 = i > c1 ? i : c1;
            }
    int rc = mms_contours_trace(s, rows, cols, lab, r0, r1, c0, c1, c);
    char why[160] = "";
    bool shape = rc == 0 && well_formed(c, why, sizeof why);
    int64_t wrong = 0;
    for (int64_t j = 0; rc == 0 && j < rows; j++)
        for (int64_t i = 0; i < cols; i++)
            wrong += inside(c, i, j) != (s[j * cols + i] == lab);
    bool counts =
        (want_polys < 0 || c->n == want_polys) && (want_points < 0 || c->points == want_points);
    return ok(rc == 0 && shape && wrong == 0 && counts,
              "%s: %lld polygons, %lld points, %lld pixels wrong by parity%s%s", name,
              (long long)c->n, (long long)c->points, (long long)wrong, why[0] ? "; " : "", why);
}

int
main(void)
{
    plan(12, 60);
    struct mms_contours c;
    memset(&c, 0, sizeof c);
    uint8_t s[64 * 64];

    memset(s, 0, sizeof s);
    s[3 * 8 + 4] = 7;
    check(s, 8, 8, 7, &c, "one pixel", 1, 4);
    ok(c.n == 1 && c.xy[0] >= 4 && c.xy[0] <= 5 && c.xy[1] >= 3 && c.xy[1] <= 4,
       "one pixel: its corners are (4..5, 3..4)");

    memset(s, 0, sizeof s); /* a 5 x 5 ring around a 1-pixel hole, at the slice's corner */
    for (int j = 0; j < 5; j++)
        for (int i = 0; i < 5; i++)
            s[j * 8 + i] =
                (i >= 1 && i <= 3 && j >= 1 && j <= 3 && !(i == 2 && j == 2)) || i == 0 || j == 0
                    ? 1
                    : 0;
    check(s, 8, 8, 1, &c, "a ring with a hole, on the border", -1, -1);

    memset(s, 0, sizeof s); /* two pixels that touch at a corner: two outlines */
    s[2 * 8 + 2] = 1;
    s[3 * 8 + 3] = 1;
    check(s, 8, 8, 1, &c, "two pixels touching at a corner", 2, 8);
    s[2 * 8 + 3] = 1; /* joined by a third: one L-shaped outline of 6 points */
    check(s, 8, 8, 1, &c, "an L of three pixels", 1, 6);

    for (int j = 0; j < 8; j++) /* a checkerboard: 32 squares */
        for (int i = 0; i < 8; i++)
            s[j * 8 + i] = (uint8_t)((i + j) & 1);
    check(s, 8, 8, 1, &c, "a checkerboard", 32, 128);
    check(s, 8, 8, 0, &c, "the other squares of the checkerboard", 32, 128);

    memset(s, 5, sizeof s);
    check(s, 64, 64, 5, &c, "the whole slice", 1, 4);
    ok(mms_contours_trace(s, 64, 64, 5, 0, 64, 0, 63, &c) == MMS_EINVAL,
       "a box outside the slice: MMS_EINVAL");

    /* random slices: noise, and blobs of several labels */
    uint64_t x = 0x9E3779B97F4A7C15ull;
    int64_t bad = 0, polys = 0;
    for (int t = 0; t < 200; t++) {
        int rows = 1 + (int)(x % 64), cols = 1 + (int)((x >> 8) % 64),
            dens = (int)((x >> 16) % 100);
        for (int q = 0; q < rows * cols; q++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s[q] = (int)(x % 100) < dens ? (uint8_t)(1 + (x >> 32) % 3) : 0;
        }
        for (uint8_t lab = 1; lab <= 3; lab++) {
            bool any = memchr(s, lab, (size_t)(rows * cols)) != NULL;
            if (!any)
                continue;
            int64_t r0 = 0, r1 = rows - 1, c0 = 0, c1 = cols - 1;
            if (mms_contours_trace(s, rows, cols, lab, r0, r1, c0, c1, &c) != 0) {
                bad++;
                continue;
            }
            char why[160];
            if (!well_formed(&c, why, sizeof why))
                bad++;
            for (int j = 0; j < rows; j++)
                for (int i = 0; i < cols; i++)
                    bad += inside(&c, i, j) != (s[j * cols + i] == lab);
            polys += c.n;
        }
    }
    ok(bad == 0,
       "200 random slices of 1 to 64 x 64 pixels, 3 labels: %lld polygons, %lld "
       "defects (pixels wrong by parity or bad polygons)",
       (long long)polys, (long long)bad);

    /* blobs: a disc with two holes inside another label's square */
    memset(s, 0, sizeof s);
    for (int j = 0; j < 64; j++)
        for (int i = 0; i < 64; i++) {
            int di = i - 30, dj = j - 33;
            if (di * di + dj * dj <= 400)
                s[j * 64 + i] = 2;
            if ((i - 25) * (i - 25) + (j - 30) * (j - 30) <= 9 ||
                (i - 36) * (i - 36) + (j - 38) * (j - 38) <= 4)
                s[j * 64 + i] = 0;
        }
    check(s, 64, 64, 2, &c, "a disc with two holes: 3 outlines", 3, -1);
    mms_contours_free(&c);
    ok(c.start == NULL && c.xy == NULL && c.edges == NULL && c.n == 0, "free empties it");
    return tap_failed != 0;
}
