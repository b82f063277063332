/* daemon/preview: the PNG of one result (preview.h): planes of the CT with the labels blended
 * over them, and a legend. One pass over the labels finds the volumes, the centroid and the
 * extent of the labelled voxels; the planes are then sampled pixel by pixel, so the CT itself is
 * read only where a plane passes. Threads: any (no shared state). */
#include "daemon/preview.h"

#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <png.h>

#include "common/err.h"
#include "common/fs.h"

/* soft-tissue window */
#define WIN_LO_HU (-160.0)
#define WIN_HI_HU 240.0
#define ALPHA 0.45f  /* of a label's colour over the CT */
#define OUTLINE 0.6f /* a label's border: its colour times this */
#define PLANE_H 384  /* the most pixels a plane is tall */
#define AXIAL_MAX_W 400
#define MARGIN 12
#define GAP 12
#define GLYPH_W 5 /* font cell: 5 x 8 glyph (row 7 is for descenders), 6 x 12 with spacing */
#define GLYPH_H 8
#define ADVANCE 6
#define LINE_H 12
#define NAME_MAX_CHARS 24
#define NOTICE "NOT FOR DIAGNOSTIC USE"
#define OBLIQUE_COS 0.99999 /* cos 0.26 degrees: a grid less aligned is sampled point by point */

enum { PX, PY, PZ }; /* patient axes (LPS): toward the patient's left, posterior, head */

/* The voxel grid as the planes see it. A grid along the patient axes (the usual case) is
 * sampled axis by axis; an oblique or sheared one (gantry tilt) point by point in patient
 * coordinates. */
struct geom {
    int64_t n[3];      /* voxels along voxel axis 0 (columns), 1 (rows), 2 (slices) */
    int64_t stride[3]; /* elements between neighbours along each voxel axis */
    double sp[3];      /* mm between neighbours (the median step for slices) */
    const double *pos; /* (n[2]) slice positions, ascending after pos_sign; NULL: uniform */
    double pos_sign;
    int axis_of[3]; /* patient axis -> voxel axis */
    int sign_of[3]; /* +1 when the index of axis_of[p] grows toward +p */
    bool oblique;
    /* oblique only: */
    double row[3], col[3], nrm[3]; /* along voxel axes 0 and 1; the normal, toward rising k */
    const double (*ipp)[3];        /* (n[2]) slice origins; NULL: origin + k sp[2] slice_dir */
    double origin[3], slice_dir[3];
    double lo[3], hi[3]; /* the grid's bounding box in patient coordinates, mm */
    double *spos;        /* (n[2]) slice positions along nrm, ascending (owned) */
    double *inv_step;    /* (n[2] - 1) 1 / (spos[k + 1] - spos[k]), in spos's allocation */
    double inv_sp[2];
};

/* One pixel's samples along one image axis: linear between i0 and i1 (weight f on i1) for the
 * CT, nearest for the labels; indices are voxel indices along the axis. */
struct tap {
    int64_t i0, i1, near;
    float f;
};

/* A plane: image axes u (to the right) and v (down) run along patient axes pu and pv, toward
 * +pu when du is +1 (+pv when dv is +1); patient axis pfix is held. On a grid along the patient
 * axes, they show voxel axes au and av, the index growing with the image when fu (fv), and
 * voxel axis afix is held at index fix; on an oblique grid, pfix is held at at_mm. */
struct plane {
    int pu, pv, pfix, du, dv;
    int au, av, afix;
    bool fu, fv;
    int64_t fix;
    double at_mm;
    int x0, y0, w, h;
    char caption[24];
    const char *left, *right, *top, *bottom; /* orientation letters */
};

struct canvas {
    uint8_t *px; /* (h, w, 3) RGB */
    int w, h;
};

struct style {
    const char *name[256];
    uint8_t rgb[256][3];
};

/* 5 x 8 glyphs for ASCII 32..126, drawn for mmsegd: one byte a row, bit 4 the left column. */
static const uint8_t font[95][GLYPH_H] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* ' ' */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04, 0x00}, /* '!' */
    {0x0a, 0x0a, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00}, /* '"' */
    {0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a, 0x00}, /* '#' */
    {0x04, 0x0f, 0x14, 0x0e, 0x05, 0x1e, 0x04, 0x00}, /* '$' */
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03, 0x00}, /* '%' */
    {0x0c, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0d, 0x00}, /* '&' */
    {0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00}, /* quote */
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02, 0x00}, /* '(' */
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08, 0x00}, /* ')' */
    {0x00, 0x04, 0x15, 0x0e, 0x15, 0x04, 0x00, 0x00}, /* '*' */
    {0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00, 0x00}, /* '+' */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08}, /* ',' */
    {0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00, 0x00}, /* '-' */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c, 0x00}, /* '.' */
    {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00, 0x00}, /* '/' */
    {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e, 0x00}, /* '0' */
    {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00}, /* '1' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f, 0x00}, /* '2' */
    {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e, 0x00}, /* '3' */
    {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02, 0x00}, /* '4' */
    {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e, 0x00}, /* '5' */
    {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e, 0x00}, /* '6' */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08, 0x00}, /* '7' */
    {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e, 0x00}, /* '8' */
    {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c, 0x00}, /* '9' */
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00, 0x00}, /* ':' */
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x04, 0x08, 0x00}, /* ';' */
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02, 0x00}, /* '<' */
    {0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00, 0x00}, /* '=' */
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08, 0x00}, /* '>' */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04, 0x00}, /* '?' */
    {0x0e, 0x11, 0x01, 0x0d, 0x15, 0x15, 0x0e, 0x00}, /* '@' */
    {0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11, 0x00}, /* 'A' */
    {0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e, 0x00}, /* 'B' */
    {0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e, 0x00}, /* 'C' */
    {0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c, 0x00}, /* 'D' */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f, 0x00}, /* 'E' */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10, 0x00}, /* 'F' */
    {0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f, 0x00}, /* 'G' */
    {0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11, 0x00}, /* 'H' */
    {0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00}, /* 'I' */
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c, 0x00}, /* 'J' */
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11, 0x00}, /* 'K' */
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f, 0x00}, /* 'L' */
    {0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11, 0x00}, /* 'M' */
    {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x00}, /* 'N' */
    {0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e, 0x00}, /* 'O' */
    {0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10, 0x00}, /* 'P' */
    {0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d, 0x00}, /* 'Q' */
    {0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11, 0x00}, /* 'R' */
    {0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e, 0x00}, /* 'S' */
    {0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00}, /* 'T' */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e, 0x00}, /* 'U' */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04, 0x00}, /* 'V' */
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a, 0x00}, /* 'W' */
    {0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11, 0x00}, /* 'X' */
    {0x11, 0x11, 0x0a, 0x04, 0x04, 0x04, 0x04, 0x00}, /* 'Y' */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f, 0x00}, /* 'Z' */
    {0x0e, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0e, 0x00}, /* '[' */
    {0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00, 0x00}, /* backslash */
    {0x0e, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0e, 0x00}, /* ']' */
    {0x04, 0x0a, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00}, /* '^' */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f}, /* '_' */
    {0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00}, /* '`' */
    {0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f, 0x00}, /* 'a' */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1e, 0x00}, /* 'b' */
    {0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e, 0x00}, /* 'c' */
    {0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f, 0x00}, /* 'd' */
    {0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e, 0x00}, /* 'e' */
    {0x06, 0x09, 0x08, 0x1c, 0x08, 0x08, 0x08, 0x00}, /* 'f' */
    {0x00, 0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x0e}, /* 'g' */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00}, /* 'h' */
    {0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e, 0x00}, /* 'i' */
    {0x02, 0x00, 0x06, 0x02, 0x02, 0x02, 0x12, 0x0c}, /* 'j' */
    {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12, 0x00}, /* 'k' */
    {0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00}, /* 'l' */
    {0x00, 0x00, 0x1a, 0x15, 0x15, 0x11, 0x11, 0x00}, /* 'm' */
    {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00}, /* 'n' */
    {0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e, 0x00}, /* 'o' */
    {0x00, 0x00, 0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10}, /* 'p' */
    {0x00, 0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x01}, /* 'q' */
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10, 0x00}, /* 'r' */
    {0x00, 0x00, 0x0f, 0x10, 0x0e, 0x01, 0x1e, 0x00}, /* 's' */
    {0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06, 0x00}, /* 't' */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d, 0x00}, /* 'u' */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04, 0x00}, /* 'v' */
    {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0a, 0x00}, /* 'w' */
    {0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x00}, /* 'x' */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x0e}, /* 'y' */
    {0x00, 0x00, 0x1f, 0x02, 0x04, 0x08, 0x1f, 0x00}, /* 'z' */
    {0x03, 0x04, 0x04, 0x08, 0x04, 0x04, 0x03, 0x00}, /* '{' */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00}, /* '|' */
    {0x18, 0x04, 0x04, 0x02, 0x04, 0x04, 0x18, 0x00}, /* '}' */
    {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00, 0x00}, /* '~' */
};

static const uint8_t white[3] = {235, 235, 235}, grey[3] = {150, 150, 150},
                     yellow[3] = {250, 210, 60}, black[3] = {0, 0, 0}, bg[3] = {22, 24, 28};

/* ------------------------------------------------------------------------------ drawing */

static void
fill(struct canvas *c, int x, int y, int w, int h, const uint8_t rgb[3])
{
    int xa = x < 0 ? 0 : x, ya = y < 0 ? 0 : y;
    int xb = x + w > c->w ? c->w : x + w, yb = y + h > c->h ? c->h : y + h;
    for (int yy = ya; yy < yb; yy++)
        for (int xx = xa; xx < xb; xx++)
            memcpy(c->px + 3 * ((size_t)yy * (size_t)c->w + (size_t)xx), rgb, 3);
}

static int
text_w(const char *s, int scale)
{
    int n = (int)strlen(s);
    return n > 0 ? (n * ADVANCE - 1) * scale : 0;
}

static void
glyphs(struct canvas *c, int x, int y, const char *s, int scale, const uint8_t rgb[3])
{
    for (; *s != '\0'; s++, x += ADVANCE * scale) {
        unsigned ch = (unsigned char)*s;
        const uint8_t *g = font[(ch >= 32 && ch <= 126 ? ch : '?') - 32];
        for (int r = 0; r < GLYPH_H; r++)
            for (int b = 0; b < GLYPH_W; b++)
                if (g[r] >> (GLYPH_W - 1 - b) & 1)
                    fill(c, x + b * scale, y + r * scale, scale, scale, rgb);
    }
}

/* s at (x, y), the top left of its cell; with a dark shadow where it lies over an image. */
static void
text(struct canvas *c, int x, int y, const char *s, int scale, const uint8_t rgb[3], bool shadow)
{
    if (shadow)
        glyphs(c, x + (scale + 1) / 2, y + (scale + 1) / 2, s, scale, black);
    glyphs(c, x, y, s, scale, rgb);
}

/* Copy s into out (len bytes), at most max characters, anything but printable ASCII as '?';
 * a cut string ends in '.'. */
static void
ascii(const char *s, int max, char *out, size_t len)
{
    size_t n = 0;
    if (max > (int)len - 1)
        max = (int)len - 1;
    for (; s != NULL && s[n] != '\0' && (int)n < max; n++) {
        unsigned ch = (unsigned char)s[n];
        out[n] = ch >= 32 && ch <= 126 ? (char)ch : '?';
    }
    if (s != NULL && s[n] != '\0' && n > 0)
        out[n - 1] = '.';
    out[n] = '\0';
}

/* ----------------------------------------------------------------------------- geometry */

/* Which voxel axis runs along each patient axis: the assignment that follows the direction
 * cosines best. Returns the smallest of its three cosines (1 on a grid along the axes). */
static double
orient(const struct mms_volume *v, struct geom *g)
{
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                    {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    double d[3][3]; /* d[a]: the direction in which the index of voxel axis a grows */
    for (int p = 0; p < 3; p++) {
        d[0][p] = v->dir[p][0];
        d[1][p] = v->dir[p][1];
        d[2][p] = v->normal[p] * g->pos_sign;
    }
    int best = 0;
    double best_score = -1.0;
    for (int i = 0; i < 6; i++) {
        double score = 0.0;
        for (int p = 0; p < 3; p++)
            score += fabs(d[perms[i][p]][p]);
        if (score > best_score + 1e-9) {
            best_score = score;
            best = i;
        }
    }
    double worst = 1.0;
    for (int p = 0; p < 3; p++) {
        g->axis_of[p] = perms[best][p];
        g->sign_of[p] = d[g->axis_of[p]][p] >= 0.0 ? 1 : -1;
        worst = fmin(worst, fabs(d[g->axis_of[p]][p]));
    }
    return worst;
}

/* The position in mm of voxel w counted along the image direction (w = 0 first), from voxel 0;
 * fwd: the voxel index grows along the image. */
static double
opos(const struct geom *g, int a, bool fwd, int64_t w)
{
    if (a != 2 || g->pos == NULL)
        return (double)w * g->sp[a];
    int64_t last = g->n[2] - 1;
    return fwd ? g->pos_sign * (g->pos[w] - g->pos[0])
               : g->pos_sign * (g->pos[last] - g->pos[last - w]);
}

/* The extent in mm of voxel axis a, whole voxels at both ends. */
static double
extent(const struct geom *g, int a)
{
    return opos(g, a, true, g->n[a] - 1) + g->sp[a];
}

static int64_t
index_of(const struct geom *g, int a, bool fwd, int64_t w)
{
    return fwd ? w : g->n[a] - 1 - w;
}

/* The samples of n_px pixels spread over voxel axis a. */
static void
taps(const struct geom *g, int a, bool fwd, int n_px, struct tap *t)
{
    int64_t n = g->n[a], w = 0;
    double len = extent(g, a);
    for (int u = 0; u < n_px; u++) {
        double x = (u + 0.5) * len / n_px - 0.5 * g->sp[a];
        while (w + 1 < n && opos(g, a, fwd, w + 1) <= x)
            w++;
        double q0 = opos(g, a, fwd, w), f = 0.0;
        int64_t w1 = w;
        if (w + 1 < n && x > q0) {
            w1 = w + 1;
            f = (x - q0) / (opos(g, a, fwd, w1) - q0);
        }
        t[u].i0 = index_of(g, a, fwd, w);
        t[u].i1 = index_of(g, a, fwd, w1);
        t[u].f = (float)f;
        t[u].near = f < 0.5 ? t[u].i0 : t[u].i1;
    }
}

/* The pixel row or column (0..n_px-1) where voxel index i of axis a lies. */
static int
pixel_of(const struct geom *g, int a, bool fwd, int n_px, int64_t i)
{
    int64_t w = index_of(g, a, fwd, i);
    double x = (opos(g, a, fwd, w) + 0.5 * g->sp[a]) * n_px / extent(g, a) - 0.5;
    int p = (int)floor(x + 0.5);
    return p < 0 ? 0 : p >= n_px ? n_px - 1 : p;
}

/* ------------------------------------------------------------------- oblique geometry */

static double
dot3(const double a[3], const double b[3])
{
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

/* The origin of slice t (a fractional index; linear between the slices, extended past the
 * ends). */
static void
slice_origin(const struct geom *g, double t, double out[3])
{
    int64_t n = g->n[2];
    if (g->ipp != NULL && n > 1) {
        int64_t k = (int64_t)floor(t);
        k = k < 0 ? 0 : k > n - 2 ? n - 2 : k;
        double f = t - (double)k;
        for (int q = 0; q < 3; q++)
            out[q] = g->ipp[k][q] + f * (g->ipp[k + 1][q] - g->ipp[k][q]);
    } else {
        for (int q = 0; q < 3; q++)
            out[q] = g->origin[q] + t * g->sp[2] * g->slice_dir[q];
    }
}

/* The position of slice k along g->nrm (ascending with k). */
static double
slice_pos(const struct geom *g, int64_t k)
{
    if (g->spos != NULL)
        return g->spos[k];
    if (g->pos != NULL)
        return g->pos_sign * g->pos[k];
    double o[3];
    slice_origin(g, (double)k, o);
    return dot3(o, g->nrm);
}

/* The patient point of the fractional voxel coordinates (i, j, t). */
static void
point_of(const struct geom *g, const double ijt[3], double p[3])
{
    slice_origin(g, ijt[2], p);
    for (int q = 0; q < 3; q++)
        p[q] += ijt[0] * g->sp[0] * g->row[q] + ijt[1] * g->sp[1] * g->col[q];
}

/* The fractional voxel coordinates (i, j, t) of patient point p; false outside the grid.
 * *hint: a slice near p (0 at first), updated; neighbouring points find theirs in a step. */
static bool
voxel_of(const struct geom *g, const double p[3], int64_t *hint, double ijt[3])
{
    int64_t n = g->n[2], k = *hint;
    double s = dot3(p, g->nrm), t, o[3], d[3];
    if (n == 1) {
        t = (s - g->spos[0]) / g->sp[2];
        slice_origin(g, t, o);
    } else { /* spos[k] <= s < spos[k + 1], or beyond the first or last slice */
        while (k > 0 && s < g->spos[k])
            k--;
        while (k < n - 2 && s >= g->spos[k + 1])
            k++;
        *hint = k;
        double f = (s - g->spos[k]) * g->inv_step[k];
        t = (double)k + f;
        if (g->ipp != NULL)
            for (int q = 0; q < 3; q++)
                o[q] = g->ipp[k][q] + f * (g->ipp[k + 1][q] - g->ipp[k][q]);
        else
            slice_origin(g, t, o);
    }
    if (!(t >= -0.5 && t <= (double)n - 0.5))
        return false;
    for (int q = 0; q < 3; q++)
        d[q] = p[q] - o[q];
    ijt[0] = dot3(d, g->row) * g->inv_sp[0];
    ijt[1] = dot3(d, g->col) * g->inv_sp[1];
    ijt[2] = t;
    return ijt[0] >= -0.5 && ijt[0] <= (double)g->n[0] - 0.5 && ijt[1] >= -0.5 &&
           ijt[1] <= (double)g->n[1] - 0.5;
}

/* The bounding box of the grid's voxels in patient coordinates. */
static void
bounding_box(struct geom *g)
{
    for (int q = 0; q < 3; q++) {
        g->lo[q] = INFINITY;
        g->hi[q] = -INFINITY;
    }
    for (int c = 0; c < 8; c++) {
        double ijt[3], p[3];
        for (int a = 0; a < 3; a++)
            ijt[a] = c >> a & 1 ? (double)g->n[a] - 0.5 : -0.5;
        point_of(g, ijt, p);
        for (int q = 0; q < 3; q++) {
            g->lo[q] = fmin(g->lo[q], p[q]);
            g->hi[q] = fmax(g->hi[q], p[q]);
        }
    }
}

/* The extent in mm along patient axis p that the planes show. */
static double
span(const struct geom *g, int p)
{
    return g->oblique ? g->hi[p] - g->lo[p] : extent(g, g->axis_of[p]);
}

/* The patient coordinate along axis p at pixel x of n_px, the image running toward +p when
 * d is +1; and back. */
static double
coord_at(const struct geom *g, int p, int d, int n_px, int x)
{
    double f = (x + 0.5) / n_px * (g->hi[p] - g->lo[p]);
    return d > 0 ? g->lo[p] + f : g->hi[p] - f;
}

static int
pixel_at(const struct geom *g, int p, int d, int n_px, double mm)
{
    double f = (d > 0 ? mm - g->lo[p] : g->hi[p] - mm) / (g->hi[p] - g->lo[p]);
    int x = (int)floor(f * n_px);
    return x < 0 ? 0 : x >= n_px ? n_px - 1 : x;
}

/* ------------------------------------------------------------------------------- labels */

struct census {
    int64_t count[256];
    int64_t fg;           /* labelled voxels */
    int64_t sum[3];       /* of their indices along each voxel axis */
    int64_t lo[3], hi[3]; /* their extent along each voxel axis */
};

/* One pass over the labels. */
static void
take_census(const struct geom *g, const uint8_t *labels, struct census *cs)
{
    memset(cs, 0, sizeof *cs);
    for (int a = 0; a < 3; a++) {
        cs->lo[a] = INT64_MAX;
        cs->hi[a] = -1;
    }
    int64_t nc = g->n[0];
    for (int64_t k = 0; k < g->n[2]; k++)
        for (int64_t j = 0; j < g->n[1]; j++) {
            const uint8_t *row = labels + (k * g->n[1] + j) * nc;
            uint64_t any = 0;
            int64_t i = 0;
            for (; i + 8 <= nc; i += 8) {
                uint64_t w;
                memcpy(&w, row + i, 8);
                any |= w;
            }
            for (; i < nc; i++)
                any |= row[i];
            if (any == 0) {
                cs->count[0] += nc;
                continue;
            }
            int64_t n = 0, s = 0, first = -1, last = -1;
            for (i = 0; i < nc;) { /* run by run: labels come in runs */
                uint8_t l = row[i];
                int64_t start = i;
                while (i < nc && row[i] == l)
                    i++;
                cs->count[l] += i - start;
                if (l != 0) {
                    n += i - start;
                    s += (start + i - 1) * (i - start) / 2;
                    if (first < 0)
                        first = start;
                    last = i - 1;
                }
            }
            cs->fg += n;
            cs->sum[0] += s;
            cs->sum[1] += n * j;
            cs->sum[2] += n * k;
            int64_t idx[3][2] = {{first, last}, {j, j}, {k, k}};
            for (int a = 0; a < 3; a++) {
                if (idx[a][0] < cs->lo[a])
                    cs->lo[a] = idx[a][0];
                if (idx[a][1] > cs->hi[a])
                    cs->hi[a] = idx[a][1];
            }
        }
}

/* The centroid of the labelled voxels (the middle without any) along patient axis p, counted
 * toward +p, rounded to a voxel index of axis_of[p]. */
static int64_t
centre_index(const struct geom *g, const struct census *cs, int p)
{
    int a = g->axis_of[p];
    int64_t n = g->n[a];
    double w;
    if (cs->fg == 0)
        w = 0.5 * (double)(n - 1);
    else /* in whole numbers first, so that the same voxels give the same plane either way */
        w = (double)(g->sign_of[p] > 0 ? cs->sum[a] : cs->fg * (n - 1) - cs->sum[a]) /
            (double)cs->fg;
    int64_t wi = (int64_t)floor(w + 0.5);
    wi = wi < 0 ? 0 : wi >= n ? n - 1 : wi;
    return g->sign_of[p] > 0 ? wi : n - 1 - wi;
}

/* The axial plane at fraction f of the labelled extent along the body axis, from the head. */
static int64_t
axial_index(const struct geom *g, const struct census *cs, double f)
{
    int a = g->axis_of[PZ];
    int64_t n = g->n[a], lo = 0, hi = n - 1;
    if (cs->fg > 0) {
        lo = g->sign_of[PZ] > 0 ? cs->lo[a] : n - 1 - cs->hi[a];
        hi = g->sign_of[PZ] > 0 ? cs->hi[a] : n - 1 - cs->lo[a];
    }
    int64_t wi = (int64_t)floor((double)hi - f * (double)(hi - lo) + 0.5);
    wi = wi < 0 ? 0 : wi >= n ? n - 1 : wi;
    return g->sign_of[PZ] > 0 ? wi : n - 1 - wi;
}

/* Oblique grids: the centroid of the labelled voxels (the grid's centre without any). */
static void
centroid_mm(const struct geom *g, const struct census *cs, double p[3])
{
    if (cs->fg == 0) {
        for (int q = 0; q < 3; q++)
            p[q] = 0.5 * (g->lo[q] + g->hi[q]);
        return;
    }
    double ijt[3];
    for (int a = 0; a < 3; a++)
        ijt[a] = (double)cs->sum[a] / (double)cs->fg;
    point_of(g, ijt, p);
}

/* Oblique grids: the height of the axial plane at fraction f of the labelled extent along the
 * body axis, from the head. */
static double
axial_mm(const struct geom *g, const struct census *cs, double f)
{
    double lo = g->lo[PZ], hi = g->hi[PZ];
    if (cs->fg > 0) {
        lo = INFINITY;
        hi = -INFINITY;
        for (int c = 0; c < 8; c++) {
            double ijt[3], p[3];
            for (int a = 0; a < 3; a++)
                ijt[a] = (double)(c >> a & 1 ? cs->hi[a] : cs->lo[a]);
            point_of(g, ijt, p);
            lo = fmin(lo, p[PZ]);
            hi = fmax(hi, p[PZ]);
        }
    }
    return hi - f * (hi - lo);
}

/* ------------------------------------------------------------------------------- planes */

static uint8_t
window(float hu)
{
    float v = (hu - (float)WIN_LO_HU) * (float)(255.0 / (WIN_HI_HU - WIN_LO_HU));
    return (uint8_t)(v > 0.0f ? (v < 255.0f ? v + 0.5f : 255.0f) : 0.0f);
}

/* The CT of plane pl at the window into c, its labels into lab, on a grid along the patient
 * axes: linear between the two nearest voxels along each image axis. */
static void
sample_grid(const struct geom *g, const float *hu, const uint8_t *labels, const struct plane *pl,
            struct canvas *c, struct tap *tu, struct tap *tv, uint8_t *lab)
{
    taps(g, pl->au, pl->fu, pl->w, tu);
    taps(g, pl->av, pl->fv, pl->h, tv);
    const int64_t base = pl->fix * g->stride[pl->afix];
    const int64_t su = g->stride[pl->au], sv = g->stride[pl->av];
    for (int y = 0; y < pl->h; y++) {
        const struct tap *ty = &tv[y];
        const float *r0 = hu + base + ty->i0 * sv, *r1 = hu + base + ty->i1 * sv;
        const uint8_t *rn = labels + base + ty->near * sv;
        uint8_t *out = c->px + 3 * ((size_t)(pl->y0 + y) * (size_t)c->w + (size_t)pl->x0);
        for (int x = 0; x < pl->w; x++) {
            const struct tap *tx = &tu[x];
            int64_t c0 = tx->i0 * su, c1 = tx->i1 * su;
            float a = r0[c0] + tx->f * (r0[c1] - r0[c0]);
            float b = r1[c0] + tx->f * (r1[c1] - r1[c0]);
            out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = window(a + ty->f * (b - a));
            lab[(size_t)y * (size_t)pl->w + (size_t)x] = rn[tx->near * su];
        }
    }
}

/* The same on an oblique or sheared grid: each pixel's patient point back to voxel
 * coordinates, trilinear for the CT, nearest for the labels, black outside the grid. */
static void
sample_oblique(const struct geom *g, const float *hu, const uint8_t *labels, const struct plane *pl,
               struct canvas *c, uint8_t *lab)
{
    int64_t hint = 0;
    for (int y = 0; y < pl->h; y++) {
        uint8_t *out = c->px + 3 * ((size_t)(pl->y0 + y) * (size_t)c->w + (size_t)pl->x0);
        double p[3];
        p[pl->pfix] = pl->at_mm;
        p[pl->pv] = coord_at(g, pl->pv, pl->dv, pl->h, y);
        double u0 = coord_at(g, pl->pu, pl->du, pl->w, 0),
               du = coord_at(g, pl->pu, pl->du, pl->w, 1) - u0;
        for (int x = 0; x < pl->w; x++) {
            double ijt[3];
            p[pl->pu] = u0 + x * du;
            uint8_t grey_v = 0, l = 0;
            if (voxel_of(g, p, &hint, ijt)) {
                int64_t o0 = 0, near = 0, d[3]; /* d: to the next voxel along each axis */
                float f[3];
                for (int a = 0; a < 3; a++) {
                    double u = ijt[a] > 0.0 ? ijt[a] : 0.0, top = (double)(g->n[a] - 1);
                    u = u < top ? u : top;
                    int64_t i0 = (int64_t)u, r = (int64_t)(u + 0.5);
                    f[a] = (float)(u - (double)i0);
                    o0 += i0 * g->stride[a];
                    d[a] = i0 + 1 < g->n[a] ? g->stride[a] : 0;
                    near += r * g->stride[a];
                }
                const float *h0 = hu + o0, *h1 = h0 + d[2];
                float a0 = h0[0] + f[0] * (h0[d[0]] - h0[0]);
                float b0 = h0[d[1]] + f[0] * (h0[d[1] + d[0]] - h0[d[1]]);
                float a1 = h1[0] + f[0] * (h1[d[0]] - h1[0]);
                float b1 = h1[d[1]] + f[0] * (h1[d[1] + d[0]] - h1[d[1]]);
                float c0 = a0 + f[1] * (b0 - a0), c1 = a1 + f[1] * (b1 - a1);
                grey_v = window(c0 + f[2] * (c1 - c0));
                l = labels[near];
            }
            out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = grey_v;
            lab[(size_t)y * (size_t)pl->w + (size_t)x] = l;
        }
    }
}

/* Sample plane pl of the CT at the window, then blend its labels over it, with a darker
 * outline where a label meets another one (or none). tu, tv, lab: scratch of pl->w, pl->h and
 * pl->w x pl->h entries. */
static void
draw_plane(const struct geom *g, const float *hu, const uint8_t *labels, const struct style *st,
           const struct plane *pl, struct canvas *c, struct tap *tu, struct tap *tv, uint8_t *lab)
{
    if (g->oblique)
        sample_oblique(g, hu, labels, pl, c, lab);
    else
        sample_grid(g, hu, labels, pl, c, tu, tv, lab);
    for (int y = 0; y < pl->h; y++) {
        uint8_t *out = c->px + 3 * ((size_t)(pl->y0 + y) * (size_t)c->w + (size_t)pl->x0);
        const uint8_t *l = lab + (size_t)y * (size_t)pl->w;
        for (int x = 0; x < pl->w; x++) {
            if (l[x] == 0)
                continue;
            bool edge = (x > 0 && l[x - 1] != l[x]) || (x + 1 < pl->w && l[x + 1] != l[x]) ||
                        (y > 0 && l[x - pl->w] != l[x]) || (y + 1 < pl->h && l[x + pl->w] != l[x]);
            const uint8_t *rgb = st->rgb[l[x]];
            for (int ch = 0; ch < 3; ch++)
                out[3 * x + ch] =
                    edge ? (uint8_t)(rgb[ch] * OUTLINE + 0.5f)
                         : (uint8_t)(out[3 * x + ch] * (1.0f - ALPHA) + rgb[ch] * ALPHA + 0.5f);
        }
    }
}

static void
plane_init(const struct geom *g, struct plane *pl, int pu, int du, int pv, int dv, int pfix)
{
    pl->pu = pu;
    pl->du = du;
    pl->pv = pv;
    pl->dv = dv;
    pl->pfix = pfix;
    pl->au = g->axis_of[pu];
    pl->fu = g->sign_of[pu] * du > 0;
    pl->av = g->axis_of[pv];
    pl->fv = g->sign_of[pv] * dv > 0;
    pl->afix = g->axis_of[pfix];
}

static void
plane_place(struct plane *pl, int x0, int y0, int w, int h, const char *left, const char *right,
            const char *top, const char *bottom)
{
    pl->x0 = x0;
    pl->y0 = y0;
    pl->w = w;
    pl->h = h;
    pl->left = left;
    pl->right = right;
    pl->top = top;
    pl->bottom = bottom;
}

/* The plane's caption and orientation letters, where they fit. */
static void
annotate(struct canvas *c, const struct plane *pl)
{
    const int s = 2, lw = GLYPH_W * s, lh = (GLYPH_H - 1) * s;
    bool sides = pl->h >= lh + 2 && pl->w >= 4 * lw;
    bool ends = pl->h >= 4 * lh + 16 && pl->w >= 3 * lw;
    if (sides) {
        int y = pl->y0 + pl->h / 2 - lh / 2;
        text(c, pl->x0 + 4, y, pl->left, s, yellow, true);
        text(c, pl->x0 + pl->w - 4 - lw, y, pl->right, s, yellow, true);
    }
    if (ends) {
        int x = pl->x0 + pl->w / 2 - lw / 2;
        text(c, x, pl->y0 + 4, pl->top, s, yellow, true);
        text(c, x, pl->y0 + pl->h - 4 - lh, pl->bottom, s, yellow, true);
    }
    /* the caption at the top left: right of the left letter on a plane too low for both, and
       left of the top letter */
    int cx = pl->x0 + (sides && pl->h < 2 * lh + 24 ? 8 + lw : 0) + 6;
    int end = ends ? pl->x0 + pl->w / 2 - lw / 2 - 6 : pl->x0 + pl->w - 6;
    for (int cs = 2; cs >= 1; cs--)
        if (pl->h >= GLYPH_H * cs + 8 && cx + text_w(pl->caption, cs) <= end) {
            text(c, cx, pl->y0 + 4, pl->caption, cs, white, true);
            break;
        }
}

/* Where the axial planes lie, on a plane whose vertical axis is the body axis: a tick outside
 * both edges (the planes are numbered from the head, so the ticks need no number). */
static void
mark_axials(struct canvas *c, const struct geom *g, const struct plane *pl, const struct plane *ax,
            int n_ax)
{
    for (int i = 0; i < n_ax; i++) {
        int y = pl->y0 + (g->oblique ? pixel_at(g, pl->pv, pl->dv, pl->h, ax[i].at_mm)
                                     : pixel_of(g, pl->av, pl->fv, pl->h, ax[i].fix));
        fill(c, pl->x0 - 7, y, 6, 1, yellow);
        fill(c, pl->x0 + pl->w + 1, y, 6, 1, yellow);
    }
}

/* ------------------------------------------------------------------------------- legend */

struct legend {
    int scale, cols, rows, col_w, line_h, w, h;
    int name_chars, ml_chars;
};

#define WINDOW_NOTE "W 400 / L 40 HU"

static void
legend_name(const struct style *st, int label, char *out, size_t len)
{
    if (st->name[label] != NULL)
        ascii(st->name[label], NAME_MAX_CHARS, out, len);
    else
        snprintf(out, len, "label %d", label);
}

/* A volume for the legend: tenths of a mL, hundredths under 1 mL. Returns its length. */
static int
format_ml(double ml, char *out, size_t len)
{
    if (ml < 0.005)
        return snprintf(out, len, "<0.01 mL");
    return snprintf(out, len, ml < 0.995 ? "%.2f mL" : "%.1f mL", ml);
}

/* The legend's shape for the labels of r, in at most avail_h pixels when that can be. */
static void
legend_layout(const struct style *st, const struct mms_preview_result *r, int avail_h,
              struct legend *lg)
{
    memset(lg, 0, sizeof *lg);
    for (int i = 0; i < r->n_labels; i++) {
        char s[64];
        legend_name(st, r->labels[i].label, s, sizeof s);
        if ((int)strlen(s) > lg->name_chars)
            lg->name_chars = (int)strlen(s);
        int n = format_ml(r->labels[i].ml, s, sizeof s);
        if (n > lg->ml_chars)
            lg->ml_chars = n;
    }
    int n = r->n_labels > 0 ? r->n_labels : 1; /* else one line: "no label found" */
    if (r->n_labels == 0)
        lg->name_chars = (int)strlen("no label found");
    for (lg->scale = 2; lg->scale >= 1; lg->scale--) {
        int s = lg->scale;
        lg->line_h = LINE_H * s;
        int rows_fit = avail_h / lg->line_h - 2; /* the window note below, after a blank */
        if (rows_fit < 1)
            rows_fit = 1;
        lg->cols = (n + rows_fit - 1) / rows_fit;
        if (lg->cols <= 2)
            break;
    }
    if (lg->scale < 1)
        lg->scale = 1;
    int s = lg->scale;
    lg->line_h = LINE_H * s;
    lg->rows = (n + lg->cols - 1) / lg->cols;
    lg->col_w = (GLYPH_H - 1) * s + 4 * s + (lg->name_chars + 2 + lg->ml_chars) * ADVANCE * s;
    lg->w = lg->cols * lg->col_w + (lg->cols - 1) * 3 * GAP;
    if (lg->w < text_w(WINDOW_NOTE, s))
        lg->w = text_w(WINDOW_NOTE, s);
    lg->h = (lg->rows + 2) * lg->line_h;
}

static void
draw_legend(struct canvas *c, const struct style *st, const struct mms_preview_result *r,
            const struct legend *lg, int x0, int y0)
{
    const int s = lg->scale, sw = (GLYPH_H - 1) * s;
    if (r->n_labels == 0)
        text(c, x0, y0, "no label found", s, grey, false);
    for (int i = 0; i < r->n_labels; i++) {
        int x = x0 + i / lg->rows * (lg->col_w + 3 * GAP), y = y0 + i % lg->rows * lg->line_h;
        int label = r->labels[i].label;
        fill(c, x, y, sw, sw, white);
        fill(c, x + 1, y + 1, sw - 2, sw - 2, st->rgb[label]);
        char name[64], ml[64];
        legend_name(st, label, name, sizeof name);
        format_ml(r->labels[i].ml, ml, sizeof ml);
        text(c, x + sw + 4 * s, y, name, s, white, false);
        text(c, x + lg->col_w - text_w(ml, s), y, ml, s, white, false);
    }
    text(c, x0, y0 + (lg->rows + 1) * lg->line_h, WINDOW_NOTE, s, grey, false);
}

/* ---------------------------------------------------------------------------------- PNG */

struct membuf {
    uint8_t *p;
    size_t n, cap;
    bool nomem;
    char err[128];
};

static void
on_png_write(png_structp png, png_bytep data, size_t len)
{
    struct membuf *m = png_get_io_ptr(png);
    if (len > m->cap - m->n) {
        size_t cap = m->cap > 0 ? m->cap : (size_t)1 << 20;
        while (len > cap - m->n)
            cap *= 2;
        uint8_t *p = realloc(m->p, cap);
        if (p == NULL) {
            m->nomem = true;
            png_error(png, "out of memory");
        }
        m->p = p;
        m->cap = cap;
    }
    memcpy(m->p + m->n, data, len);
    m->n += len;
}

static void
on_png_flush(png_structp png)
{
    (void)png;
}

static void
on_png_error(png_structp png, png_const_charp msg)
{
    struct membuf *m = png_get_error_ptr(png);
    snprintf(m->err, sizeof m->err, "%s", msg);
    png_longjmp(png, 1);
}

static void
on_png_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void
png_body(png_structp png, png_infop info, const struct canvas *c, struct membuf *m)
{
    png_set_write_fn(png, m, on_png_write, on_png_flush);
    png_set_IHDR(png, info, (png_uint_32)c->w, (png_uint_32)c->h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    /* fast, and about as small as the default on CT planes */
    png_set_compression_level(png, 3);
    png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_UP);
    png_write_info(png, info);
    for (int y = 0; y < c->h; y++)
        png_write_row(png, c->px + 3 * (size_t)y * (size_t)c->w);
    png_write_end(png, NULL);
}

/* c as a PNG in m (m->p is the caller's to free, also on failure). */
static int
encode_png(const struct canvas *c, struct membuf *m, char *why, size_t why_len)
{
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, m, on_png_error, on_png_warning);
    png_infop info = png != NULL ? png_create_info_struct(png) : NULL;
    if (info == NULL) {
        png_destroy_write_struct(&png, NULL);
        return mms_why(why, why_len, MMS_ENOMEM, "preview: libpng: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return mms_why(why, why_len, m->nomem ? MMS_ENOMEM : MMS_EIO, "preview: libpng: %s",
                       m->err);
    }
    png_body(png, info, c, m);
    png_destroy_write_struct(&png, &info);
    return 0;
}

/* --------------------------------------------------------------------------------- file */

static int
write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return mms_err_errno();
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* data to path through path.tmp-RANDOM, synced and renamed; the directory synced after. */
static int
write_file(const char *path, const uint8_t *data, size_t n, char *why, size_t why_len)
{
    char pre[PATH_MAX], tmp[PATH_MAX + 32], dir[PATH_MAX];
    if (strlen(path) >= sizeof pre - 8)
        return mms_why(why, why_len, MMS_ENAMETOOLONG, "preview: path too long");
    snprintf(pre, sizeof pre, "%s.tmp", path);
    int rc = mms_fs_random_name(pre, tmp, sizeof tmp);
    if (rc < 0)
        return mms_why(why, why_len, rc, "preview: getrandom: %s", mms_strerror(rc));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        rc = mms_err_errno();
        return mms_why(why, why_len, rc, "preview: %s: %s", tmp, mms_strerror(rc));
    }
    const char *step = "write";
    if ((rc = write_all(fd, data, n)) == 0 && fsync(fd) != 0) {
        step = "fsync";
        rc = mms_err_errno();
    }
    if (close(fd) != 0 && rc == 0) {
        step = "close";
        rc = mms_err_errno();
    }
    if (rc < 0) {
        unlink(tmp);
        return mms_why(why, why_len, rc, "preview: %s: %s: %s", tmp, step, mms_strerror(rc));
    }
    if (rename(tmp, path) != 0) {
        rc = mms_err_errno();
        unlink(tmp);
        return mms_why(why, why_len, rc, "preview: rename to %s: %s", path, mms_strerror(rc));
    }
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else
        slash[slash == dir ? 1 : 0] = '\0';
    if ((rc = mms_fs_fsync_dir(dir)) < 0)
        return mms_why(why, why_len, rc, "preview: fsync %s: %s", dir, mms_strerror(rc));
    return 0;
}

/* ---------------------------------------------------------------------------------- API */

static void
style_of(const struct mms_card *card, struct style *st)
{
    memset(st, 0, sizeof *st);
    for (int l = 1; l < 256; l++) { /* labels the card lacks: distinct, fixed colours */
        st->rgb[l][0] = (uint8_t)(80 + (l * 97) % 170);
        st->rgb[l][1] = (uint8_t)(80 + (l * 57) % 170);
        st->rgb[l][2] = (uint8_t)(80 + (l * 31) % 170);
    }
    for (int i = 0; i < card->n_labels; i++) {
        const struct mms_label *l = &card->labels[i];
        if (l->id < 1 || l->id > 255)
            continue;
        st->name[l->id] = l->segment_label != NULL ? l->segment_label : l->name;
        memcpy(st->rgb[l->id], l->rgb, 3);
    }
}

/* Check v and set up g; the slice positions are used when they are monotonic. Free g->spos. */
static int
geom_of(const struct mms_volume *v, struct geom *g, char *why, size_t why_len)
{
    memset(g, 0, sizeof *g);
    int64_t nv = 1;
    for (int a = 0; a < 3; a++) {
        if (v->dims[a] < 1 || v->dims[a] > INT32_MAX || __builtin_mul_overflow(nv, v->dims[a], &nv))
            return mms_why(why, why_len, MMS_EINVAL, "preview: bad volume size %lld x %lld x %lld",
                           (long long)v->dims[0], (long long)v->dims[1], (long long)v->dims[2]);
        if (!(v->spacing[a] > 0.0) || !isfinite(v->spacing[a]))
            return mms_why(why, why_len, MMS_EINVAL, "preview: bad voxel spacing %g x %g x %g",
                           v->spacing[0], v->spacing[1], v->spacing[2]);
        g->n[a] = v->dims[a];
        g->sp[a] = v->spacing[a];
    }
    g->stride[0] = 1;
    g->stride[1] = g->n[0];
    g->stride[2] = g->n[0] * g->n[1];
    g->pos_sign = 1.0;
    int64_t last = g->n[2] - 1;
    if (v->pos_mm != NULL && last > 0 && v->pos_mm[last] != v->pos_mm[0] &&
        isfinite(v->pos_mm[last] - v->pos_mm[0])) {
        g->pos_sign = v->pos_mm[last] > v->pos_mm[0] ? 1.0 : -1.0;
        g->pos = v->pos_mm;
        for (int64_t k = 0; k < last; k++)
            if (!(g->pos_sign * (v->pos_mm[k + 1] - v->pos_mm[k]) >= 0.0))
                g->pos = NULL;
    }
    if (g->pos == NULL)
        g->pos_sign = 1.0;
    double align = orient(v, g), tilt = 1.0;
    if (v->ipp != NULL && last > 0) { /* the slices' progression against the normal */
        double step[3], len;
        for (int q = 0; q < 3; q++)
            step[q] = v->ipp[last][q] - v->ipp[0][q];
        if ((len = sqrt(dot3(step, step))) > 0.0)
            tilt = fabs(dot3(step, v->normal)) / len;
    }
    g->oblique = !(align >= OBLIQUE_COS && tilt >= OBLIQUE_COS);
    if (!g->oblique)
        return 0;
    for (int q = 0; q < 3; q++) {
        g->row[q] = v->dir[q][0];
        g->col[q] = v->dir[q][1];
        g->nrm[q] = v->normal[q] * g->pos_sign;
        g->slice_dir[q] = v->dir[q][2];
        g->origin[q] = v->ipp != NULL ? v->ipp[0][q] : v->origin[q];
    }
    g->ipp = (const double(*)[3])v->ipp;
    if (!(fabs(dot3(g->slice_dir, g->nrm)) > 0.1)) /* unset: along the normal */
        memcpy(g->slice_dir, g->nrm, sizeof g->slice_dir);
    if (dot3(g->slice_dir, g->nrm) < 0.0)
        for (int q = 0; q < 3; q++)
            g->slice_dir[q] = -g->slice_dir[q];
    if (g->pos == NULL && last > 0 && slice_pos(g, last) < slice_pos(g, 0))
        for (int q = 0; q < 3; q++) /* slices against the normal, and no positions */
            g->nrm[q] = -g->nrm[q];
    double *spos = malloc(2 * (size_t)g->n[2] * sizeof *spos);
    if (spos == NULL)
        return mms_why(why, why_len, MMS_ENOMEM, "preview: out of memory");
    for (int64_t k = 0; k <= last; k++)
        spos[k] = slice_pos(g, k);
    g->spos = spos;
    g->inv_step = spos + g->n[2];
    for (int64_t k = 0; k < last; k++) { /* a repeated position: the nominal step */
        double step = spos[k + 1] - spos[k];
        g->inv_step[k] = 1.0 / (step > 0.0 ? step : g->sp[2]);
    }
    g->inv_sp[0] = 1.0 / g->sp[0];
    g->inv_sp[1] = 1.0 / g->sp[1];
    bounding_box(g);
    return 0;
}

int
mms_preview_render(const struct mms_volume *v, const uint8_t *labels, const struct mms_card *card,
                   struct mms_preview_image *img, struct mms_preview_result *res, char *why,
                   size_t why_len)
{
    if (img != NULL)
        memset(img, 0, sizeof *img);
    if (v == NULL || v->hu == NULL || labels == NULL || card == NULL || img == NULL ||
        card->n_labels < 0 || (card->n_labels > 0 && card->labels == NULL))
        return mms_why(why, why_len, MMS_EINVAL, "preview: missing argument");
    struct geom g;
    int rc = geom_of(v, &g, why, why_len);
    if (rc < 0)
        return rc;

    /* what is labelled, and how much */
    struct census *cs = malloc(sizeof *cs);
    struct mms_preview_result *r = malloc(sizeof *r);
    struct style *st = malloc(sizeof *st);
    struct canvas c = {NULL, 0, 0};
    struct tap *tu = NULL, *tv = NULL;
    uint8_t *lab = NULL;
    if (cs == NULL || r == NULL || st == NULL) {
        rc = mms_why(why, why_len, MMS_ENOMEM, "preview: out of memory");
        goto out;
    }
    take_census(&g, labels, cs);
    memset(r, 0, sizeof *r);
    double voxel_ml = g.sp[0] * g.sp[1] * g.sp[2] / 1000.0;
    for (int l = 1; l < 256; l++)
        if (cs->count[l] > 0) {
            struct mms_preview_label *e = &r->labels[r->n_labels++];
            e->label = l;
            e->voxels = cs->count[l];
            e->ml = (double)cs->count[l] * voxel_ml;
        }
    style_of(card, st);

    /* layout: a row of axial planes, a row with the coronal and the sagittal plane, the legend
       on the right */
    double lx = span(&g, PX), ly = span(&g, PY), lz = span(&g, PZ);
    double sa = fmin(PLANE_H / ly, AXIAL_MAX_W / lx);
    int wa = (int)fmax(1.0, lrint(lx * sa)), ha = (int)fmax(1.0, lrint(ly * sa));
    int row1_w = 3 * wa + 2 * GAP;
    double sc = fmin(PLANE_H / lz, (row1_w - GAP) / (lx + ly));
    int wc = (int)fmax(1.0, lrint(lx * sc)), ws = (int)fmax(1.0, lrint(ly * sc)),
        hc = (int)fmax(1.0, lrint(lz * sc));
    int left_w = row1_w > wc + GAP + ws ? row1_w : wc + GAP + ws;
    int y1 = MARGIN + 2 * LINE_H + 4, y2 = y1 + ha + GAP, bottom = y2 + hc;
    struct legend lg;
    legend_layout(st, r, bottom - y1, &lg);
    int xl = MARGIN + left_w + GAP + 8;
    c.w = xl + lg.w + MARGIN;
    c.h = (bottom > y1 + lg.h ? bottom : y1 + lg.h) + MARGIN;

    struct plane pl[5];
    memset(pl, 0, sizeof pl);
    static const double at[3] = {0.25, 0.5, 0.75};
    double centre[3];
    if (g.oblique)
        centroid_mm(&g, cs, centre);
    for (int i = 0; i < 3; i++) { /* toward the patient's left and back, across the body axis */
        plane_init(&g, &pl[i], PX, 1, PY, 1, PZ);
        if (g.oblique)
            pl[i].at_mm = axial_mm(&g, cs, at[i]);
        else
            pl[i].fix = axial_index(&g, cs, at[i]);
        plane_place(&pl[i], MARGIN + i * (wa + GAP), y1, wa, ha, "R", "L", "A", "P");
        snprintf(pl[i].caption, sizeof pl[i].caption, "Axial %d", i + 1);
    }
    plane_init(&g, &pl[3], PX, 1, PZ, -1, PY); /* toward the patient's left and the feet */
    plane_init(&g, &pl[4], PY, 1, PZ, -1, PX); /* toward the back and the feet */
    for (int i = 3; i < 5; i++) {
        if (g.oblique)
            pl[i].at_mm = centre[pl[i].pfix];
        else
            pl[i].fix = centre_index(&g, cs, pl[i].pfix);
    }
    plane_place(&pl[3], MARGIN, y2, wc, hc, "R", "L", "S", "I");
    plane_place(&pl[4], MARGIN + wc + GAP, y2, ws, hc, "A", "P", "S", "I");
    snprintf(pl[3].caption, sizeof pl[3].caption, "Coronal");
    snprintf(pl[4].caption, sizeof pl[4].caption, "Sagittal");

    int max_w = wa > wc ? wa : wc, max_h = ha > hc ? ha : hc;
    max_w = max_w > ws ? max_w : ws;
    c.px = malloc((size_t)c.w * (size_t)c.h * 3);
    tu = malloc((size_t)max_w * sizeof *tu);
    tv = malloc((size_t)max_h * sizeof *tv);
    lab = malloc((size_t)max_w * (size_t)max_h);
    if (c.px == NULL || tu == NULL || tv == NULL || lab == NULL) {
        rc = mms_why(why, why_len, MMS_ENOMEM, "preview: out of memory for %d x %d pixels", c.w,
                     c.h);
        goto out;
    }
    fill(&c, 0, 0, c.w, c.h, bg);
    for (int i = 0; i < 5; i++)
        draw_plane(&g, v->hu, labels, st, &pl[i], &c, tu, tv, lab);
    for (int i = 0; i < 5; i++)
        annotate(&c, &pl[i]);
    mark_axials(&c, &g, &pl[3], pl, 3);
    mark_axials(&c, &g, &pl[4], pl, 3);

    char name[64], version[32], header[160];
    ascii(card->name != NULL ? card->name : "?", 48, name, sizeof name);
    ascii(card->version != NULL ? card->version : "?", 24, version, sizeof version);
    snprintf(header, sizeof header, "mmsegd %s %s", name, version);
    /* the notice on the right of the header line, which is cut to leave room for it */
    int ns = c.w - 2 * MARGIN >= 2 * text_w(NOTICE, 2) ? 2 : 1; /* small on a narrow picture */
    int notice_x = c.w - MARGIN - text_w(NOTICE, ns);
    int fit = (notice_x - GAP - MARGIN + 2) / (ADVANCE * 2);
    if (fit >= 0 && fit < (int)strlen(header))
        header[fit] = '\0';
    text(&c, MARGIN, MARGIN, header, 2, white, false);
    text(&c, notice_x, MARGIN + (ns == 1 ? LINE_H / 2 : 0), NOTICE, ns, yellow, false);
    draw_legend(&c, st, r, &lg, xl, y1);

    r->width = img->width = c.w;
    r->height = img->height = c.h;
    img->rgb = c.px;
    c.px = NULL;
    if (res != NULL)
        *res = *r;
out:
    free(lab);
    free(tv);
    free(tu);
    free(c.px);
    free(st);
    free(r);
    free(cs);
    free(g.spos);
    return rc;
}

int
mms_preview_save_png(const struct mms_preview_image *img, const char *path, char *why,
                     size_t why_len)
{
    if (img == NULL || img->rgb == NULL || path == NULL || path[0] == '\0')
        return mms_why(why, why_len, MMS_EINVAL, "preview: missing argument");
    const struct canvas c = {img->rgb, img->width, img->height};
    struct membuf m;
    memset(&m, 0, sizeof m);
    int rc = encode_png(&c, &m, why, why_len);
    if (rc == 0)
        rc = write_file(path, m.p, m.n, why, why_len);
    free(m.p);
    return rc;
}

void
mms_preview_image_free(struct mms_preview_image *img)
{
    if (img != NULL) {
        free(img->rgb);
        img->rgb = NULL;
    }
}

int
mms_preview_write(const struct mms_volume *v, const uint8_t *labels, const struct mms_card *card,
                  const char *path, struct mms_preview_result *res, char *why, size_t why_len)
{
    if (path == NULL || path[0] == '\0')
        return mms_why(why, why_len, MMS_EINVAL, "preview: missing argument");
    struct mms_preview_image img = {NULL, 0, 0};
    struct mms_preview_result r;
    int rc = mms_preview_render(v, labels, card, &img, &r, why, why_len);
    if (rc == 0 && (rc = mms_preview_save_png(&img, path, why, why_len)) == 0 && res != NULL)
        *res = r;
    mms_preview_image_free(&img);
    return rc;
}
