/* Tests of the result preview (daemon/preview.c) on synthetic volumes: the PNG reads back with
 * libpng at the reported size, the volumes in mL are exact for boxes, a labelled pixel has the
 * blended colour, the legend lists the labels present only, the planes have their true aspect
 * ratio and the radiological orientation (patient's right on the image's left, anterior and
 * head up), the same patient gives the same picture whatever the order of rows, columns and
 * slices or the plane of acquisition, and a bad path fails without leaving a temporary file. */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <png.h>

#include "common/err.h"
#include "daemon/preview.h"
#include "tests/tap.h"

/* Allocation failure: the link wraps malloc, calloc and realloc (-Wl,--wrap); while fail_at > 0
 * the call that makes n_alloc reach it returns NULL. */
static int fail_at, n_alloc;
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);

static bool
fail_now(void)
{
    return fail_at > 0 && ++n_alloc == fail_at;
}

void *
__wrap_malloc(size_t n)
{
    return fail_now() ? NULL : __real_malloc(n);
}

void *
__wrap_calloc(size_t n, size_t m)
{
    return fail_now() ? NULL : __real_calloc(n, m);
}

void *
__wrap_realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __real_realloc(p, n);
}

/* The patient: a grid of NX x NY x NZ voxels along +x (the patient's left), +y (posterior) and
 * +z (head), spacings exact in binary so that every variant below sees the same positions. */
#define NX 64
#define NY 48
#define NZ 40
static const int64_t base_n[3] = {NX, NY, NZ};
static const double base_sp[3] = {0.75, 0.625, 2.0};

/* A box of label `label` on the base grid: [lo, hi) along x, y, z. */
struct box {
    int label;
    int lo[3], hi[3];
};

struct scene {
    const struct box *boxes;
    int n_boxes;
    bool textured; /* HU varying with position, else 240 (white at the window) everywhere */
};

static float
hu_at(const struct scene *sc, const int b[3])
{
    if (!sc->textured)
        return 240.0f;
    return (float)(-200 + (b[0] * 7 + b[1] * 13 + b[2] * 29) % 500);
}

static uint8_t
label_at(const struct scene *sc, const int b[3])
{
    uint8_t l = 0;
    for (int i = 0; i < sc->n_boxes; i++) {
        const struct box *x = &sc->boxes[i];
        if (b[0] >= x->lo[0] && b[0] < x->hi[0] && b[1] >= x->lo[1] && b[1] < x->hi[1] &&
            b[2] >= x->lo[2] && b[2] < x->hi[2])
            l = (uint8_t)x->label;
    }
    return l;
}

/* One acquisition of the scene: rows run along axis (sign) row, columns along col, slices along
 * nrm (each +-1 .. +-3 for +-x, +-y, +-z). The voxel (i, j, k) lies at origin + i*row + j*col +
 * k*nrm (spacings included); nrm need not be row x col (a hand-built volume with its slices
 * reversed). */
struct vol {
    struct mms_volume v;
    uint8_t *labels;
};

static void
vol_free(struct vol *x)
{
    free(x->v.hu);
    free(x->v.ipp);
    free(x->v.pos_mm);
    free(x->labels);
    memset(x, 0, sizeof *x);
}

static int
vol_make(const struct scene *sc, int row, int col, int nrm, struct vol *x)
{
    memset(x, 0, sizeof *x);
    struct mms_volume *v = &x->v;
    const int ax[3] = {row, col, nrm};
    int p[3], s[3], first[3];
    for (int a = 0; a < 3; a++) {
        p[a] = abs(ax[a]) - 1;
        s[a] = ax[a] > 0 ? 1 : -1;
        v->dims[a] = base_n[p[a]];
        v->spacing[a] = base_sp[p[a]];
        first[a] = s[a] > 0 ? 0 : (int)base_n[p[a]] - 1;
        v->origin[p[a]] = first[a] * base_sp[p[a]];
        for (int q = 0; q < 3; q++)
            v->dir[q][a] = q == p[a] ? s[a] : 0.0;
    }
    for (int q = 0; q < 3; q++)
        v->normal[q] = v->dir[q][2];
    size_t n = (size_t)(NX * NY * NZ);
    v->hu = malloc(n * sizeof *v->hu);
    x->labels = malloc(n);
    v->ipp = malloc((size_t)v->dims[2] * sizeof *v->ipp);
    v->pos_mm = malloc((size_t)v->dims[2] * sizeof *v->pos_mm);
    if (v->hu == NULL || x->labels == NULL || v->ipp == NULL || v->pos_mm == NULL)
        return MMS_ENOMEM;
    for (int64_t k = 0; k < v->dims[2]; k++) {
        memcpy(v->ipp[k], v->origin, sizeof v->ipp[k]);
        v->ipp[k][p[2]] += s[2] * (double)k * v->spacing[2];
        v->pos_mm[k] = s[2] * v->ipp[k][p[2]];
    }
    size_t o = 0;
    for (int64_t k = 0; k < v->dims[2]; k++)
        for (int64_t j = 0; j < v->dims[1]; j++)
            for (int64_t i = 0; i < v->dims[0]; i++, o++) {
                const int64_t idx[3] = {i, j, k};
                int b[3];
                for (int a = 0; a < 3; a++)
                    b[p[a]] = first[a] + s[a] * (int)idx[a];
                v->hu[o] = hu_at(sc, b);
                x->labels[o] = label_at(sc, b);
            }
    return 0;
}

/* An oblique or sheared grid of n voxels (spacing sp): voxel (i, j, k) at
 * ipp0 + k step + i sp[0] row + j sp[1] col, the normal row x col; HU 240 everywhere and label 1
 * where the voxel's centre lies in the patient box [lo, hi) (mm). */
static int
vol_make_oblique(const int64_t n[3], const double sp[3], const double row[3], const double col[3],
                 const double ipp0[3], const double step[3], const double lo[3], const double hi[3],
                 struct vol *x)
{
    memset(x, 0, sizeof *x);
    struct mms_volume *v = &x->v;
    double nrm[3] = {row[1] * col[2] - row[2] * col[1], row[2] * col[0] - row[0] * col[2],
                     row[0] * col[1] - row[1] * col[0]};
    double len = sqrt(step[0] * step[0] + step[1] * step[1] + step[2] * step[2]);
    for (int a = 0; a < 3; a++) {
        v->dims[a] = n[a];
        v->dir[a][0] = row[a];
        v->dir[a][1] = col[a];
        v->dir[a][2] = step[a] / len;
        v->normal[a] = nrm[a];
        v->origin[a] = ipp0[a];
    }
    v->spacing[0] = sp[0];
    v->spacing[1] = sp[1];
    v->spacing[2] = fabs(step[0] * nrm[0] + step[1] * nrm[1] + step[2] * nrm[2]);
    size_t nv = (size_t)(n[0] * n[1] * n[2]);
    v->hu = malloc(nv * sizeof *v->hu);
    x->labels = malloc(nv);
    v->ipp = malloc((size_t)n[2] * sizeof *v->ipp);
    v->pos_mm = malloc((size_t)n[2] * sizeof *v->pos_mm);
    if (v->hu == NULL || x->labels == NULL || v->ipp == NULL || v->pos_mm == NULL)
        return MMS_ENOMEM;
    size_t o = 0;
    for (int64_t k = 0; k < n[2]; k++) {
        for (int a = 0; a < 3; a++)
            v->ipp[k][a] = ipp0[a] + (double)k * step[a];
        v->pos_mm[k] = v->ipp[k][0] * nrm[0] + v->ipp[k][1] * nrm[1] + v->ipp[k][2] * nrm[2];
        for (int64_t j = 0; j < n[1]; j++)
            for (int64_t i = 0; i < n[0]; i++, o++) {
                bool in = true;
                for (int a = 0; a < 3; a++) {
                    double p =
                        v->ipp[k][a] + (double)i * sp[0] * row[a] + (double)j * sp[1] * col[a];
                    in = in && p >= lo[a] && p < hi[a];
                }
                v->hu[o] = 240.0f;
                x->labels[o] = in ? 1 : 0;
            }
    }
    return 0;
}

/* ------------------------------------------------------------------------------ the card */

static struct mms_label card_labels[3] = {
    {.id = 1, .name = "liver", .segment_label = "Liver", .rgb = {200, 40, 40}},
    {.id = 2, .name = "spleen", .segment_label = "Spleen", .rgb = {40, 200, 40}},
    {.id = 3, .name = "kidney_left", .segment_label = "Left kidney", .rgb = {40, 40, 220}},
};
static struct mms_card card = {
    .name = "test-model", .version = "1.2.3", .n_labels = 3, .labels = card_labels};

/* --------------------------------------------------------------------------- the picture */

struct img {
    uint8_t *px; /* RGB */
    int w, h;
};

static bool
img_read(const char *path, struct img *im)
{
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    im->px = NULL;
    if (!png_image_begin_read_from_file(&pi, path))
        return false;
    pi.format = PNG_FORMAT_RGB;
    im->w = (int)pi.width;
    im->h = (int)pi.height;
    im->px = malloc(PNG_IMAGE_SIZE(pi));
    if (im->px == NULL || !png_image_finish_read(&pi, NULL, im->px, 0, NULL)) {
        png_image_free(&pi);
        free(im->px);
        im->px = NULL;
        return false;
    }
    return true;
}

static const uint8_t *
at(const struct img *im, int x, int y)
{
    return im->px + 3 * ((size_t)y * (size_t)im->w + (size_t)x);
}

static bool
is_rgb(const uint8_t *p, const uint8_t want[3], int tol)
{
    for (int c = 0; c < 3; c++)
        if (abs(p[c] - want[c]) > tol)
            return false;
    return true;
}

static bool
is_white(const uint8_t *p)
{
    return p[0] == 255 && p[1] == 255 && p[2] == 255;
}

/* The label colour blended over white (HU 240 at W 400 / L 40). */
static void
blended(const uint8_t rgb[3], uint8_t out[3])
{
    for (int c = 0; c < 3; c++)
        out[c] = (uint8_t)lrint(255 * 0.55 + rgb[c] * 0.45);
}

struct rect {
    int x0, y0, w, h;
};

/* The planes of a picture of a constant-HU scene: the runs of rows, then of columns, holding
 * pure white (only a plane is pure white). Returns how many were found (at most max). */
static int
find_planes(const struct img *im, struct rect *r, int max)
{
    int n = 0;
    for (int y = 0; y < im->h;) {
        int y0 = y;
        while (y < im->h) {
            bool any = false;
            for (int x = 0; x < im->w && !any; x++)
                any = is_white(at(im, x, y));
            if (!any)
                break;
            y++;
        }
        if (y == y0) {
            y++;
            continue;
        }
        for (int x = 0; x < im->w;) {
            int x0 = x;
            while (x < im->w) {
                bool any = false;
                for (int yy = y0; yy < y && !any; yy++)
                    any = is_white(at(im, x, yy));
                if (!any)
                    break;
                x++;
            }
            if (x == x0) {
                x++;
                continue;
            }
            if (n < max)
                r[n] = (struct rect){x0, y0, x - x0, y - y0};
            n++;
        }
    }
    return n;
}

/* The bounding box, relative to plane r, of the pixels of label colour rgb (blended or
 * outline); false when there is none. */
static bool
label_bbox(const struct img *im, const struct rect *r, const uint8_t rgb[3], struct rect *bb)
{
    uint8_t bl[3], ol[3];
    blended(rgb, bl);
    for (int c = 0; c < 3; c++)
        ol[c] = (uint8_t)lrint(rgb[c] * 0.6);
    int x0 = INT32_MAX, y0 = INT32_MAX, x1 = -1, y1 = -1;
    for (int y = 0; y < r->h; y++)
        for (int x = 0; x < r->w; x++) {
            const uint8_t *p = at(im, r->x0 + x, r->y0 + y);
            if (is_rgb(p, bl, 1) || is_rgb(p, ol, 1)) {
                x0 = x < x0 ? x : x0;
                y0 = y < y0 ? y : y0;
                x1 = x > x1 ? x : x1;
                y1 = y > y1 ? y : y1;
            }
        }
    *bb = (struct rect){x0, y0, x1 - x0 + 1, y1 - y0 + 1};
    return x1 >= 0;
}

static bool
has_pixel(const struct img *im, const uint8_t rgb[3])
{
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < im->w; x++)
            if (is_rgb(at(im, x, y), rgb, 0))
                return true;
    return false;
}

/* Files in dir whose name contains part. */
static int
count_files(const char *dir, const char *part)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (d == NULL)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strstr(e->d_name, part) != NULL;
    closedir(d);
    return n;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ----------------------------------------------------------------------------------- main */

int
main(void)
{
    plan(54, 120);
    char dir[] = "/tmp/mmsegd-test-preview-XXXXXX", path[256], why[512];
    if (mkdtemp(dir) == NULL) {
        printf("Bail out! mkdtemp failed\n");
        return 1;
    }
    const double voxel_ml = base_sp[0] * base_sp[1] * base_sp[2] / 1000.0;

    /* 1. volumes, colours, the legend: labels 1 and 3 from the card, 7 that the card lacks */
    static const struct box boxes1[] = {
        {1, {8, 6, 10}, {40, 30, 30}},   /* 32 x 24 x 20 */
        {3, {44, 20, 14}, {56, 32, 22}}, /* 12 x 12 x 8 */
        {7, {50, 36, 4}, {54, 40, 6}},   /* 4 x 4 x 2 */
    };
    struct scene sc1 = {boxes1, 3, false};
    struct vol x;
    struct mms_preview_result res;
    struct img im = {NULL, 0, 0};
    if (vol_make(&sc1, 1, 2, 3, &x) < 0) {
        printf("Bail out! out of memory\n");
        return 1;
    }
    snprintf(path, sizeof path, "%s/boxes.png", dir);
    memset(&res, 0, sizeof res);
    int rc = mms_preview_write(&x.v, x.labels, &card, path, &res, why, sizeof why);
    if (!ok(rc == 0, "preview of three boxes written"))
        diag("%s", why);
    ok(img_read(path, &im), "it reads back as a PNG");
    is_int(im.w, res.width, "its width is the one reported");
    is_int(im.h, res.height, "its height is the one reported");
    ok(res.width >= 1000 && res.width <= 1650 && res.height >= 400 && res.height <= 1000,
       "its size is a screen's (%d x %d)", res.width, res.height);
    is_int(res.n_labels, 3, "three labels present");
    is_int(res.labels[0].label, 1, "sorted by label: 1");
    is_int(res.labels[1].label, 3, "3");
    is_int(res.labels[2].label, 7, "7");
    is_int(res.labels[0].voxels, 32 * 24 * 20, "label 1: voxels of its box");
    is_int(res.labels[1].voxels, 12 * 12 * 8, "label 3: voxels of its box");
    is_int(res.labels[2].voxels, 4 * 4 * 2, "label 7: voxels of its box");
    ok(fabs(res.labels[0].ml - 32 * 24 * 20 * voxel_ml) < 1e-9 &&
           fabs(res.labels[1].ml - 12 * 12 * 8 * voxel_ml) < 1e-9 &&
           fabs(res.labels[2].ml - 4 * 4 * 2 * voxel_ml) < 1e-9,
       "the volumes in mL are voxels x spacing product / 1000 (%.4f, %.4f, %.4f)", res.labels[0].ml,
       res.labels[1].ml, res.labels[2].ml);
    struct rect pr[8];
    int np = im.px != NULL ? find_planes(&im, pr, 8) : 0;
    is_int(np, 5, "five planes: three axial, a coronal and a sagittal one");
    if (np == 5) {
        /* label 1 fills the middle axial plane from x 8 to 40 of 64 and y 6 to 30 of 48 */
        const struct rect *a = &pr[1];
        int cx = (int)(a->w * (24.0 / NX)), cy = (int)(a->h * (18.0 / NY));
        uint8_t want[3];
        blended(card_labels[0].rgb, want);
        const uint8_t *p = at(&im, a->x0 + cx, a->y0 + cy);
        if (!ok(is_rgb(p, want, 1), "inside label 1 the middle axial plane has the blended colour"))
            diag("got %d %d %d, want %d %d %d", p[0], p[1], p[2], want[0], want[1], want[2]);
        uint8_t edge[3] = {120, 24, 24};
        struct rect bb;
        ok(label_bbox(&im, a, card_labels[0].rgb, &bb) &&
               is_rgb(at(&im, a->x0 + bb.x0, a->y0 + cy), edge, 1),
           "label 1 has a darker outline");
        /* true aspect ratio: 48 x 30 mm axial, 48 x 80 mm coronal, 30 x 80 mm sagittal */
        double lx = NX * base_sp[0], ly = NY * base_sp[1], lz = NZ * base_sp[2];
        ok(fabs((double)a->w / a->h - lx / ly) < 0.01, "axial aspect %d x %d for %g x %g mm", a->w,
           a->h, lx, ly);
        ok(fabs((double)pr[3].w / pr[3].h - lx / lz) < 0.01,
           "coronal aspect %d x %d for %g x %g mm", pr[3].w, pr[3].h, lx, lz);
        ok(fabs((double)pr[4].w / pr[4].h - ly / lz) < 0.01,
           "sagittal aspect %d x %d for %g x %g mm", pr[4].w, pr[4].h, ly, lz);
        ok(pr[0].h <= 384 && pr[3].h == 384 && pr[4].h == 384,
           "planes at most 384 pixels tall, the coronal and sagittal ones 384 (%d, %d)", pr[0].h,
           pr[3].h);
    } else {
        for (int i = 0; i < 6; i++)
            ok(false, "plane checks (planes not found)");
    }
    ok(has_pixel(&im, card_labels[0].rgb) && has_pixel(&im, card_labels[2].rgb),
       "the legend has swatches of labels 1 and 3");
    ok(!has_pixel(&im, card_labels[1].rgb), "and none of label 2, which is absent");
    free(im.px);
    im.px = NULL;
    vol_free(&x);

    /* 2. orientation: one box on the patient's left, anterior, toward the head */
    static const struct box boxes2[] = {{1, {40, 4, 24}, {56, 16, 36}}};
    struct scene sc2 = {boxes2, 1, false};
    snprintf(path, sizeof path, "%s/left.png", dir);
    rc = vol_make(&sc2, 1, 2, 3, &x);
    if (rc == 0)
        rc = mms_preview_write(&x.v, x.labels, &card, path, &res, why, sizeof why);
    if (!ok(rc == 0 && img_read(path, &im), "preview of a box on the left written and read"))
        diag("%s", why);
    np = im.px != NULL ? find_planes(&im, pr, 8) : 0;
    struct rect bb[5];
    bool found = np == 5;
    for (int i = 0; found && i < 5; i++)
        found = label_bbox(&im, &pr[i], card_labels[0].rgb, &bb[i]);
    ok(found, "the box shows in all five planes");
    bool right = found, up = found;
    for (int i = 0; found && i < 4; i++) {
        right = right && bb[i].x0 > pr[i].w / 2;
        up = up && bb[i].y0 + bb[i].h <= pr[i].h / 2 + 1;
    }
    ok(right, "the patient's left is on the image's right (axial and coronal)");
    ok(up, "anterior is up in axial, the head up in coronal");
    ok(found && bb[4].x0 + bb[4].w <= pr[4].w / 2 + 1 && bb[4].y0 + bb[4].h <= pr[4].h / 2 + 1,
       "anterior is on the left and the head up in sagittal");
    if (found && !(right && up))
        diag("axial box x %d..%d of %d, coronal x %d..%d of %d", bb[1].x0, bb[1].x0 + bb[1].w,
             pr[1].w, bb[3].x0, bb[3].x0 + bb[3].w, pr[3].w);
    free(im.px);
    im.px = NULL;
    vol_free(&x);

    /* 3. the same patient stored in other orders gives the same picture */
    static const struct box boxes3[] = {{1, {8, 6, 10}, {40, 30, 30}},
                                        {3, {44, 20, 14}, {56, 32, 22}},
                                        {2, {20, 10, 2}, {30, 40, 9}}};
    struct scene sc3 = {boxes3, 3, true};
    snprintf(path, sizeof path, "%s/ref.png", dir);
    struct img ref = {NULL, 0, 0};
    rc = vol_make(&sc3, 1, 2, 3, &x);
    if (rc == 0)
        rc = mms_preview_write(&x.v, x.labels, &card, path, &res, why, sizeof why);
    if (!ok(rc == 0 && img_read(path, &ref), "preview of a textured scene written and read"))
        diag("%s", why);
    vol_free(&x);
    static const struct {
        int row, col, nrm;
        const char *what;
    } variants[] = {
        {1, 2, -3, "slices stored in reverse order, the normal flipped (hand-built)"},
        {-1, 2, -3, "columns and slices reversed"},
        {1, -2, -3, "rows and slices reversed"},
        {2, -3, -1, "a sagittal acquisition"},
        {1, -3, 2, "a coronal acquisition"},
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        snprintf(path, sizeof path, "%s/variant%zu.png", dir, i);
        rc = vol_make(&sc3, variants[i].row, variants[i].col, variants[i].nrm, &x);
        if (rc == 0)
            rc = mms_preview_write(&x.v, x.labels, &card, path, &res, why, sizeof why);
        bool same = rc == 0 && img_read(path, &im) && ref.px != NULL && im.w == ref.w &&
                    im.h == ref.h && memcmp(im.px, ref.px, (size_t)im.w * im.h * 3) == 0;
        ok(same, "%s: the same picture", variants[i].what);
        if (rc < 0)
            diag("%s", why);
        free(im.px);
        im.px = NULL;
        vol_free(&x);
    }
    free(ref.px);

    /* 4. nothing labelled: planes through the middle, an empty legend */
    struct scene sc4 = {NULL, 0, true};
    snprintf(path, sizeof path, "%s/empty.png", dir);
    rc = vol_make(&sc4, 1, 2, 3, &x);
    if (rc == 0)
        rc = mms_preview_write(&x.v, x.labels, &card, path, &res, why, sizeof why);
    ok(rc == 0 && res.n_labels == 0 && img_read(path, &im) && im.w == res.width,
       "a volume without labels gives a preview without legend entries");
    free(im.px);
    im.px = NULL;

    /* 5. failures: each allocation in turn, then the file system, then the arguments */
    snprintf(path, sizeof path, "%s/nomem.png", dir);
    bool all_enomem = true, clean = true;
    int calls = 0;
    for (fail_at = 1; fail_at < 100; fail_at++) {
        n_alloc = 0;
        rc = mms_preview_write(&x.v, x.labels, &card, path, &res, why, sizeof why);
        if (rc == 0)
            break;
        all_enomem = all_enomem && rc == MMS_ENOMEM;
        clean = clean && access(path, F_OK) != 0 && count_files(dir, ".tmp") == 0;
        calls = fail_at;
    }
    fail_at = 0;
    ok(all_enomem && clean && calls >= 5 && rc == 0,
       "allocation failure at each of %d calls: MMS_ENOMEM, nothing written; then success", calls);
    unlink(path);
    why[0] = '\0';
    rc = mms_preview_write(&x.v, x.labels, &card, "/nonexistent-mmsegd-dir/p.png", &res, why,
                           sizeof why);
    is_int(rc, -ENOENT, "a missing directory: -ENOENT");
    ok(why[0] != '\0', "with a reason: %s", why);
    snprintf(path, sizeof path, "%s/adir.png", dir);
    mkdir(path, 0700);
    memset(&res, 0x5a, sizeof res);
    rc = mms_preview_write(&x.v, x.labels, &card, path, &res, why, sizeof why);
    ok(rc < 0, "a directory in the way: %s", why);
    is_int(count_files(dir, ".tmp"), 0, "no temporary file is left");
    is_int(res.n_labels, 0x5a5a5a5a, "the result is untouched on failure");
    rmdir(path);
    is_int(mms_preview_write(NULL, x.labels, &card, path, NULL, why, sizeof why), MMS_EINVAL,
           "no volume: MMS_EINVAL");
    is_int(mms_preview_write(&x.v, NULL, &card, path, NULL, why, sizeof why), MMS_EINVAL,
           "no labels: MMS_EINVAL");
    is_int(mms_preview_write(&x.v, x.labels, NULL, path, NULL, why, sizeof why), MMS_EINVAL,
           "no card: MMS_EINVAL");
    int64_t d0 = x.v.dims[0];
    x.v.dims[0] = 0;
    is_int(mms_preview_write(&x.v, x.labels, &card, path, NULL, why, sizeof why), MMS_EINVAL,
           "an empty volume: MMS_EINVAL");
    x.v.dims[0] = d0;
    x.v.spacing[2] = 0.0;
    is_int(mms_preview_write(&x.v, x.labels, &card, path, NULL, why, sizeof why), MMS_EINVAL,
           "a zero spacing: MMS_EINVAL");
    ok(access(path, F_OK) != 0, "and nothing is written");
    vol_free(&x);

    /* 7. oblique grids, sampled in patient coordinates: a gantry tilt of 20 degrees (slices
       moving along z only, so the grid is sheared) and a grid turned by 30 degrees about z */
    {
        const double c20 = cos(20 * M_PI / 180), s20 = sin(20 * M_PI / 180);
        const double c30 = cos(30 * M_PI / 180), s30 = sin(30 * M_PI / 180);
        const int64_t on[3] = {80, 80, 50};
        const double osp[3] = {1.0, 1.0, 0.0};
        const double box_lo[3] = {10, -10, 20}, box_hi[3] = {30, 10, 60};
        const double row_t[3] = {1, 0, 0}, col_t[3] = {0, c20, -s20};
        const double ipp_t[3] = {-40, -40, 0}, step_t[3] = {0, 0, 2};
        snprintf(path, sizeof path, "%s/tilt.png", dir);
        rc = vol_make_oblique(on, osp, row_t, col_t, ipp_t, step_t, box_lo, box_hi, &x);
        if (rc == 0)
            rc = mms_preview_write(&x.v, x.labels, &card, path, &res, why, sizeof why);
        if (!ok(rc == 0 && img_read(path, &im), "preview of a tilted, sheared grid written"))
            diag("%s", why);
        np = im.px != NULL ? find_planes(&im, pr, 8) : 0;
        found = np == 5;
        for (int i = 0; found && i < 5; i++)
            found = label_bbox(&im, &pr[i], card_labels[0].rgb, &bb[i]);
        /* a 20 x 20 x 40 mm box: square in axial, twice as tall as wide in coronal and sagittal
           (the sheared stack unsheared: a parallelogram would be 20 + 40 tan 20 mm wide) */
        ok(found && fabs((double)bb[1].w / bb[1].h - 1.0) < 0.12,
           "axial: the box is square (%d x %d)", found ? bb[1].w : 0, found ? bb[1].h : 0);
        ok(found && fabs((double)bb[3].w / bb[3].h - 0.5) < 0.08,
           "coronal: the box is 20 x 40 mm (%d x %d)", found ? bb[3].w : 0, found ? bb[3].h : 0);
        ok(found && fabs((double)bb[4].w / bb[4].h - 0.5) < 0.08,
           "sagittal: the box is 20 x 40 mm, not sheared (%d x %d)", found ? bb[4].w : 0,
           found ? bb[4].h : 0);
        free(im.px);
        im.px = NULL;
        vol_free(&x);

        /* turned by 30 degrees: the box on the patient's left, anterior, toward the head */
        const double row_r[3] = {c30, s30, 0}, col_r[3] = {-s30, c30, 0};
        const double ipp_r[3] = {-20, -60, 0}, step_r[3] = {0, 0, 2};
        const double left_lo[3] = {15, -30, 60}, left_hi[3] = {35, -15, 90};
        snprintf(path, sizeof path, "%s/turned.png", dir);
        rc = vol_make_oblique(on, osp, row_r, col_r, ipp_r, step_r, left_lo, left_hi, &x);
        if (rc == 0)
            rc = mms_preview_write(&x.v, x.labels, &card, path, &res, why, sizeof why);
        if (!ok(rc == 0 && img_read(path, &im), "preview of a grid turned by 30 degrees written"))
            diag("%s", why);
        np = im.px != NULL ? find_planes(&im, pr, 8) : 0;
        found = np == 5;
        for (int i = 0; found && i < 5; i++)
            found = label_bbox(&im, &pr[i], card_labels[0].rgb, &bb[i]);
        right = found;
        up = found;
        for (int i = 0; found && i < 4; i++) {
            right = right && bb[i].x0 > pr[i].w / 2;
            up = up && bb[i].y0 + bb[i].h <= pr[i].h / 2 + 1;
        }
        ok(right, "turned grid: the patient's left on the image's right (axial and coronal)");
        ok(up, "turned grid: anterior up in axial, the head up in coronal");
        if (!found)
            diag("%d planes", np);
        free(im.px);
        im.px = NULL;
        vol_free(&x);
    }

    /* 6. speed on a CT-sized volume: one pass over the labels, planes sampled */
    struct vol big;
    memset(&big, 0, sizeof big);
    const int64_t bn[3] = {512, 512, 120};
    size_t nb = (size_t)(bn[0] * bn[1] * bn[2]);
    big.v.hu = malloc(nb * sizeof *big.v.hu);
    big.labels = calloc(nb, 1);
    if (big.v.hu != NULL && big.labels != NULL) {
        for (int a = 0; a < 3; a++) {
            big.v.dims[a] = bn[a];
            big.v.spacing[a] = a < 2 ? 0.7 : 2.5;
            big.v.dir[a][a] = 1.0;
        }
        big.v.normal[2] = 1.0;
        for (size_t i = 0; i < nb; i++)
            big.v.hu[i] = (float)(i % 1000) - 500.0f;
        for (int64_t k = 30; k < 90; k++)
            for (int64_t j = 150; j < 350; j++)
                memset(big.labels + (k * 512 + j) * 512 + 200, 1 + (int)(k % 3), 150);
        snprintf(path, sizeof path, "%s/big.png", dir);
        double t0 = now_s();
        rc = mms_preview_write(&big.v, big.labels, &card, path, &res, why, sizeof why);
        double dt = now_s() - t0;
        ok(rc == 0 && res.n_labels == 3 && res.labels[0].voxels == 20 * 200 * 150,
           "512 x 512 x 120 without positions: written in %.3f s", dt);
    } else {
        skip("out of memory for the speed test");
    }
    free(big.v.hu);
    free(big.labels);

    /* clean up */
    DIR *d = opendir(dir);
    if (d != NULL) {
        for (struct dirent *e; (e = readdir(d)) != NULL;)
            if (e->d_name[0] != '.') {
                char f[512];
                snprintf(f, sizeof f, "%s/%s", dir, e->d_name);
                unlink(f);
            }
        closedir(d);
    }
    rmdir(dir);
    return done_testing();
}
