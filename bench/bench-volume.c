/* bench-volume: time a DICOM folder to a volume in memory.
 *
 *   bench-volume DIR [--threads LIST] [--runs R]
 *
 * One timed run: walk DIR (every regular file), read every file's header, keep the readable
 * images (not DICOMDIR or directory files), take the series with the most files (the first
 * on ties, paths sorted), and build its volume (mms_volume_build, decoding on T threads).
 * LIST is a comma-separated list of thread counts (default 1,2). One untimed run first warms
 * the page cache, so the figures are for files in memory; then R rounds (default 5), each
 * running every thread count once in turn.
 * Prints one JSON object per thread count: the median and minimum wall time, the medians of
 * its two parts (walk and headers; volume build), the volume's size, the input read (file
 * bytes) per second, voxels per second, and the sum of all HU values, which every thread
 * count must give alike. tools/bench-volume.sh runs it beside dcm2niix. */
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/err.h"
#include "bench/bench.h"
#include "dicom/dicom.h"

#define MAX_CONFIGS 16

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The folder's files; nftw has no context argument. */
struct walk {
    char **paths;
    int n, cap;
    uint64_t bytes;
    int rc;
};
static struct walk *walk_cur;

static int
on_entry(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)ftw;
    struct walk *w = walk_cur;
    if (type != FTW_F || !S_ISREG(sb->st_mode))
        return 0;
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 256;
        char **v = realloc(w->paths, (size_t)cap * sizeof *v);
        if (v == NULL)
            return w->rc = MMS_ENOMEM, 1;
        w->paths = v;
        w->cap = cap;
    }
    if ((w->paths[w->n] = strdup(p)) == NULL)
        return w->rc = MMS_ENOMEM, 1;
    w->n++;
    w->bytes += (uint64_t)sb->st_size;
    return 0;
}

static void
walk_free(struct walk *w)
{
    for (int i = 0; i < w->n; i++)
        free(w->paths[i]);
    free(w->paths);
    memset(w, 0, sizeof *w);
}

/* What one run found and how long its parts took. */
struct result {
    double walk_headers_s, build_s;
    int files, read, series, used;
    uint64_t bytes;
    int64_t dims[3];
    double tilt_deg, hu_sum;
};

/* One run: folder to volume. The volume is summed and freed after the clock stops. */
static int
run_once(const char *dir, int threads, struct result *res, char *why, size_t why_len)
{
    double t0 = now_s();
    struct walk w = {0};
    walk_cur = &w;
    int rc = nftw(dir, on_entry, 16, FTW_PHYS);
    walk_cur = NULL;
    if (rc != 0) {
        rc = w.rc < 0 ? w.rc : -errno;
        snprintf(why, why_len, "%s: %s", dir, mms_strerror(rc));
        walk_free(&w);
        return rc;
    }
    qsort(w.paths, (size_t)w.n, sizeof *w.paths, cmp_str);
    struct mms_header *h = malloc((size_t)(w.n ? w.n : 1) * sizeof *h);
    const char **p = malloc((size_t)(w.n ? w.n : 1) * sizeof *p);
    if (h == NULL || p == NULL) {
        free(h);
        free(p);
        walk_free(&w);
        return MMS_ENOMEM;
    }
    int m = 0;
    for (int i = 0; i < w.n; i++) {
        if (mms_header_read(w.paths[i], &h[m], NULL, 0) < 0)
            continue;
        if (mms_sop_class_is_dicomdir(h[m].media_class) ||
            mms_sop_class_is_dicomdir(h[m].sop_class) || h[m].sop_class[0] == '\0')
            continue;
        p[m++] = w.paths[i];
    }
    /* the series with the most files; its files are moved to the front, in path order */
    int best = -1, best_n = 0, n_series = 0;
    for (int i = 0; i < m; i++) {
        int seen = 0, count = 0;
        for (int j = 0; j < m && !seen; j++)
            seen = j < i && strcmp(h[j].series_uid, h[i].series_uid) == 0;
        if (seen)
            continue;
        n_series++;
        for (int j = i; j < m; j++)
            count += strcmp(h[j].series_uid, h[i].series_uid) == 0;
        if (count > best_n) {
            best = i;
            best_n = count;
        }
    }
    char uid[sizeof h->series_uid] = "";
    if (best >= 0)
        memcpy(uid, h[best].series_uid, sizeof uid);
    int k = 0;
    for (int i = 0; best >= 0 && i < m; i++) {
        if (strcmp(h[i].series_uid, uid) != 0)
            continue;
        if (i != k) {
            struct mms_header th = h[k];
            const char *tp = p[k];
            h[k] = h[i];
            p[k] = p[i];
            h[i] = th;
            p[i] = tp;
        }
        k++;
    }
    double t1 = now_s();
    struct mms_volume *v = NULL;
    rc = MMS_EDICOM;
    if (k == 0)
        snprintf(why, why_len, "%s: no readable DICOM image", dir);
    else {
        struct mms_volume_opts o = {.stack = {.max_gap_ratio = 2.0, .allow_gaps = false},
                                    .max_voxels = 1000000000u,
                                    .threads = threads};
        rc = mms_volume_build(p, h, k, &o, &v, why, why_len);
    }
    double t2 = now_s();
    if (rc == 0) {
        *res = (struct result){.walk_headers_s = t1 - t0,
                               .build_s = t2 - t1,
                               .files = w.n,
                               .read = m,
                               .series = n_series,
                               .used = k,
                               .bytes = w.bytes,
                               .dims = {v->dims[0], v->dims[1], v->dims[2]},
                               .tilt_deg = v->tilt_deg};
        size_t nv = (size_t)(v->dims[0] * v->dims[1] * v->dims[2]);
        double sum = 0.0;
        for (size_t i = 0; i < nv; i++)
            sum += v->hu[i];
        res->hu_sum = sum;
        mms_volume_free(v);
    }
    free(h);
    free(p);
    walk_free(&w);
    return rc;
}

static void
json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static int
usage(void)
{
    fprintf(stderr, "usage: bench-volume DIR [--threads LIST] [--runs R]\n"
                    "  LIST: thread counts separated by commas (default 1,2)\n");
    return 2;
}

int
main(int argc, char **argv)
{
    const char *dir = NULL;
    int threads[MAX_CONFIGS] = {1, 2}, nt = 2, runs = 5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            char *s = argv[++i], *end;
            nt = 0;
            do {
                long t = strtol(s, &end, 10);
                if (end == s || t < 1 || t > 1024 || nt == MAX_CONFIGS || (*end && *end != ','))
                    return usage();
                threads[nt++] = (int)t;
                s = end + 1;
            } while (*end == ',');
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = atoi(argv[++i]);
        } else if (argv[i][0] != '-' && dir == NULL) {
            dir = argv[i];
        } else {
            return usage();
        }
    }
    if (dir == NULL || runs < 1 || runs > 1000)
        return usage();
    char why[1024] = "";
    struct result first, r;
    int rc = run_once(dir, threads[0], &first, why, sizeof why); /* warm-up, untimed */
    if (rc < 0) {
        fprintf(stderr, "bench-volume: %s\n", why[0] ? why : mms_strerror(rc));
        return 1;
    }
    double *t = malloc((size_t)(nt * runs) * sizeof *t);
    double *th = malloc((size_t)(nt * runs) * sizeof *th);
    double *tb = malloc((size_t)(nt * runs) * sizeof *tb);
    if (t == NULL || th == NULL || tb == NULL)
        return 1;
    for (int i = 0; i < runs; i++) {
        for (int c = 0; c < nt; c++) {
            if ((rc = run_once(dir, threads[c], &r, why, sizeof why)) < 0) {
                fprintf(stderr, "bench-volume: %s\n", why[0] ? why : mms_strerror(rc));
                return 1;
            }
            if (r.hu_sum != first.hu_sum || r.dims[2] != first.dims[2]) {
                fprintf(stderr,
                        "bench-volume: %d threads gave another volume (%lld slices, HU sum "
                        "%.17g) than the warm-up (%lld, %.17g)\n",
                        threads[c], (long long)r.dims[2], r.hu_sum, (long long)first.dims[2],
                        first.hu_sum);
                return 1;
            }
            t[c * runs + i] = (r.walk_headers_s + r.build_s) * 1e3;
            th[c * runs + i] = r.walk_headers_s * 1e3;
            tb[c * runs + i] = r.build_s * 1e3;
        }
    }
    uint64_t vox = (uint64_t)(first.dims[0] * first.dims[1] * first.dims[2]);
    for (int c = 0; c < nt; c++) {
        const double *tc = t + c * runs;
        double med = median(tc, runs), mn = tc[0];
        for (int i = 1; i < runs; i++)
            mn = tc[i] < mn ? tc[i] : mn;
        printf("{\"impl\": \"mmsegd\", \"dir\": ");
        json_string(dir);
        printf(", \"threads\": %d, \"runs_ms\": [", threads[c]);
        for (int i = 0; i < runs; i++)
            printf("%s%.2f", i ? ", " : "", tc[i]);
        printf("], \"median_ms\": %.2f, \"min_ms\": %.2f, \"walk_headers_median_ms\": %.2f, "
               "\"build_median_ms\": %.2f, \"files\": %d, \"dicom_images\": %d, \"series\": %d, "
               "\"files_used\": %d, \"dims\": [%lld, %lld, %lld], \"slices\": %lld, "
               "\"voxels\": %llu, \"tilt_deg\": %.2f, \"input_mb\": %.2f, \"mb_per_s\": %.1f, "
               "\"mvoxels_per_s\": %.1f, \"hu_sum\": %.17g, "
               "\"cache\": \"warm (one untimed run first)\"}\n",
               med, mn, median(th + c * runs, runs), median(tb + c * runs, runs), first.files,
               first.read, first.series, first.used, (long long)first.dims[0],
               (long long)first.dims[1], (long long)first.dims[2], (long long)first.dims[2],
               (unsigned long long)vox, first.tilt_deg, (double)first.bytes / 1e6,
               (double)first.bytes / 1e6 / (med * 1e-3), (double)vox / 1e6 / (med * 1e-3),
               first.hu_sum);
    }
    free(t);
    free(th);
    free(tb);
    return 0;
}
