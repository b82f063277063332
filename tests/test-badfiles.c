/* Crafted inputs against the readers of received data: each class of file that once crashed
 * the daemon (undefined lengths on text elements in implicit VR, lengths beyond the file, in
 * the data set and in the file meta, truncation, byte flips in the header, nesting in group
 * 0000 and inside a deflated data set, resource amplification) is generated here from valid
 * CT files of the shared test data, then read as the spool reads a received instance
 * (mms_header_read_digest) and pre-scanned in memory: each gives a clear refusal, in bounded
 * time, and nothing crashes (run under ASan in CI).
 * With "--write DIR" the cases are written to DIR instead (the seed corpus of the fuzzers). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#include "common/err.h"
#include "dicom/dicom.h"
#include "tests/find-testdata.h"
#include "tests/tap.h"

struct buf {
    uint8_t *p;
    size_t n;
};

static char td[1024], tmpdir[256], write_dir[1024];
static struct buf base_ex, base_im; /* explicit VR LE and implicit VR LE CT files */
static int n_written;

static struct buf
load(const char *rel)
{
    char path[2048];
    struct buf b = {NULL, 0};
    snprintf(path, sizeof path, "%s/%s", td, rel);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return b;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b.p = malloc((size_t)n);
    if (b.p != NULL && fread(b.p, 1, (size_t)n, f) == (size_t)n)
        b.n = (size_t)n;
    fclose(f);
    return b;
}

static struct buf
dup_buf(struct buf s)
{
    struct buf b = {malloc(s.n + 16), s.n};
    memcpy(b.p, s.p, s.n);
    return b;
}

static void
put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void
put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Where the top-level element (g, e) of a valid file begins (its tag), from the pre-scan;
 * the value's offset in *val. 0 when absent. */
static size_t
find_tag(struct buf b, uint16_t g, uint16_t e, size_t *val)
{
    /* first occurrence of the tag bytes after the file meta whose length field matches */
    struct mms_prescan pre;
    char why[256];
    if (mms_dicom_prescan(b.p, b.n, MMS_DICOM_MAX_NESTING, &pre, why, sizeof why) != 0)
        return 0;
    uint8_t t[4] = {(uint8_t)g, (uint8_t)(g >> 8), (uint8_t)e, (uint8_t)(e >> 8)};
    for (size_t i = pre.dataset_at; i + 12 <= b.n && (pre.pixel_at == 0 || i < pre.pixel_at); i++)
        if (memcmp(b.p + i, t, 4) == 0) {
            *val = i + 8; /* a short VR (explicit) or implicit VR: 8 bytes of header */
            return i;
        }
    return 0;
}

/* Insert n bytes at offset at. */
static void
insert(struct buf *b, size_t at, const void *p, size_t n)
{
    b->p = realloc(b->p, b->n + n + 16);
    memmove(b->p + at + n, b->p + at, b->n - at);
    memcpy(b->p + at, p, n);
    b->n += n;
}

/* Explicit VR LE data set bytes: tag, then an SQ of undefined length and an item, depth times,
 * closed again. */
static void
nested_explicit(struct buf *out, uint16_t g, uint16_t e, int depth)
{
    size_t n = (size_t)depth * 20 + (size_t)depth * 16;
    uint8_t *p = malloc(n), *q = p;
    for (int i = 0; i < depth; i++) {
        put16(q, g), put16(q + 2, e), memcpy(q + 4, "SQ", 2), put16(q + 6, 0);
        put32(q + 8, 0xffffffffu);
        put16(q + 12, 0xfffe), put16(q + 14, 0xe000), put32(q + 16, 0xffffffffu);
        q += 20;
    }
    for (int i = 0; i < depth; i++) {
        put16(q, 0xfffe), put16(q + 2, 0xe00d), put32(q + 4, 0);
        put16(q + 8, 0xfffe), put16(q + 10, 0xe0dd), put32(q + 12, 0);
        q += 16;
    }
    out->p = p;
    out->n = (size_t)(q - p);
}

/* The file meta of b with its transfer syntax replaced by ts (same length, NUL padded). */
static bool
set_ts(struct buf *b, const char *ts)
{
    static const uint8_t t[6] = {0x02, 0x00, 0x10, 0x00, 'U', 'I'};
    for (size_t i = 132; i + 8 < b->n && i < 1024; i++)
        if (memcmp(b->p + i, t, 6) == 0) {
            unsigned l = b->p[i + 6] | b->p[i + 7] << 8;
            if (strlen(ts) > l)
                return false;
            memset(b->p + i + 8, 0, l);
            memcpy(b->p + i + 8, ts, strlen(ts));
            return true;
        }
    return false;
}

/* b with its data set replaced by the raw deflate of data set ds (n bytes), meta declaring
 * deflated explicit VR LE (the original transfer syntax UID is long enough for it). */
static struct buf
deflated(struct buf base, const uint8_t *ds, size_t n, size_t zeros)
{
    struct mms_prescan pre;
    char why[256];
    struct buf b = {NULL, 0};
    if (mms_dicom_prescan(base.p, base.n, MMS_DICOM_MAX_NESTING, &pre, why, sizeof why) != 0)
        return b;
    struct buf m = {malloc(pre.dataset_at + 64), pre.dataset_at};
    memcpy(m.p, base.p, pre.dataset_at);
    /* a 22-character UID where the meta holds 20: pad the value to 22 */
    static const uint8_t t[6] = {0x02, 0x00, 0x10, 0x00, 'U', 'I'};
    for (size_t i = 132; i + 8 < m.n; i++)
        if (memcmp(m.p + i, t, 6) == 0) {
            unsigned l = m.p[i + 6] | m.p[i + 7] << 8;
            size_t want = strlen("1.2.840.10008.1.2.1.99");
            if (l < want) {
                uint8_t pad[2] = {0, 0};
                insert(&m, i + 8 + l, pad, want - l);
                put16(m.p + i + 6, (unsigned)want);
                /* (0002,0000), the group length, first in the meta: its value at 140 */
                uint32_t gl = (uint32_t)(m.p[140] | m.p[141] << 8 | m.p[142] << 16);
                put32(m.p + 140, gl + (uint32_t)(want - l));
            }
            memcpy(m.p + i + 8, "1.2.840.10008.1.2.1.99", want);
            break;
        }
    /* the group length no longer counts: drop it to zero-length-free form by leaving it;
     * readers go by the group number */
    z_stream z;
    memset(&z, 0, sizeof z);
    deflateInit2(&z, 9, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
    size_t cap = deflateBound(&z, n + zeros) + 1024;
    b.p = malloc(m.n + cap);
    memcpy(b.p, m.p, m.n);
    z.next_out = b.p + m.n;
    z.avail_out = (uInt)cap;
    z.next_in = (Bytef *)ds;
    z.avail_in = (uInt)n;
    deflate(&z, zeros > 0 ? Z_NO_FLUSH : Z_FINISH);
    static uint8_t zero[1 << 16];
    while (zeros > 0) {
        size_t k = zeros < sizeof zero ? zeros : sizeof zero;
        zeros -= k;
        z.next_in = zero;
        z.avail_in = (uInt)k;
        deflate(&z, zeros > 0 ? Z_NO_FLUSH : Z_FINISH);
    }
    b.n = m.n + (cap - z.avail_out);
    deflateEnd(&z);
    free(m.p);
    return b;
}

/* ------------------------------------------------------------------------------ cases */
struct result {
    int rc;
    char why[512];
    double seconds;
};

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Read b as the spool reads a received instance; also pre-scan it in memory. */
static struct result
run(const char *name, struct buf b)
{
    struct result r = {0, "", 0.0};
    if (write_dir[0] != '\0') {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", write_dir, name);
        FILE *f = fopen(path, "wb");
        if (f != NULL) {
            fwrite(b.p, 1, b.n, f);
            fclose(f);
            n_written++;
        }
        return r;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/badfile-XXXXXX", tmpdir);
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, b.p, b.n) != (ssize_t)b.n) {
        r.rc = -errno;
        snprintf(r.why, sizeof r.why, "cannot write %.400s", path);
        return r;
    }
    close(fd);
    double t0 = now_s();
    struct mms_header h;
    char digest[65];
    r.rc = mms_header_read_digest(path, &h, digest, r.why, sizeof r.why);
    if (r.rc == 0) { /* GDCM reads what the pre-scan passes, whatever the path takes: no crash */
        struct mms_header hg;
        char wg[512];
        (void)mms_header_read_gdcm(path, &hg, wg, sizeof wg);
    }
    struct mms_prescan pre;
    char why2[256] = "";
    int prc = mms_dicom_prescan(b.p, b.n, MMS_DICOM_MAX_NESTING, &pre, why2, sizeof why2);
    r.seconds = now_s() - t0;
    if (r.rc == 0 && prc < 0) { /* the file reader and the memory reader disagree */
        r.rc = 1;
        snprintf(r.why, sizeof r.why, "accepted from the file, refused in memory: %s", why2);
    }
    unlink(path);
    return r;
}

/* The case must be refused with a reason containing want, within max_s seconds. */
static void
expect_refused(const char *name, struct buf b, const char *want, double max_s)
{
    struct result r = run(name, b);
    free(b.p);
    if (write_dir[0] != '\0')
        return;
    ok(r.rc == MMS_EDICOM && r.why[0] != '\0' && (want == NULL || strstr(r.why, want) != NULL) &&
           r.seconds < max_s,
       "%s: refused in %.2f s (%s)", name, r.seconds,
       r.why[0] != '\0' ? strchr(r.why, ':') != NULL ? strchr(r.why, ':') + 2 : r.why
                        : "no reason");
}

/* Random byte flips in the header of base (seeded): none may crash; every refusal has a
 * reason. */
static void
flips(const char *name, struct buf base, int count, uint32_t seed)
{
    struct mms_prescan pre;
    char why[256];
    mms_dicom_prescan(base.p, base.n, MMS_DICOM_MAX_NESTING, &pre, why, sizeof why);
    size_t hdr_end = pre.pixel_at != 0 ? (size_t)pre.pixel_at : base.n;
    int refused = 0, accepted = 0, bad = 0;
    uint32_t s = seed;
    for (int i = 0; i < count; i++) {
        struct buf b = dup_buf(base);
        s = s * 1103515245u + 12345u;
        int k = 4 + (int)((s >> 16) % 5);
        for (int j = 0; j < k; j++) {
            s = s * 1103515245u + 12345u;
            size_t at = 128 + (size_t)(s >> 8) % (hdr_end - 128);
            s = s * 1103515245u + 12345u;
            b.p[at] ^= (uint8_t)(1 + (s >> 16) % 255);
        }
        char nm[128];
        snprintf(nm, sizeof nm, "%s-%03d", name, i);
        if (write_dir[0] != '\0' && i >= 16) { /* a few of them seed the fuzzers */
            free(b.p);
            continue;
        }
        struct result r = run(nm, b);
        free(b.p);
        if (r.rc == 0)
            accepted++;
        else if (r.rc == MMS_EDICOM && r.why[0] != '\0' && r.seconds < 2.0)
            refused++;
        else {
            bad++;
            diag("%s: rc %d in %.2f s: %s", nm, r.rc, r.seconds, r.why);
        }
    }
    if (write_dir[0] == '\0')
        ok(bad == 0,
           "%s: %d files with 4-8 bytes of the header flipped: %d refused with a "
           "reason, %d accepted, none crashed",
           name, count, refused, accepted);
}

int
main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write") == 0)
        snprintf(write_dir, sizeof write_dir, "%s", argv[2]);
    if (!find_testdata(td, sizeof td)) {
        if (write_dir[0] != '\0')
            return 0;
        skip_all("the shared test data is not here (set MMS_TESTDATA to its folder)");
    }
    base_ex = load("dcm_qa_ct/In/GE/01.dcm");
    base_im = load("dcmqi/data/segmentations/ct-3slice/01.dcm");
    if (base_ex.n == 0 || base_im.n == 0) {
        if (write_dir[0] != '\0')
            return 0;
        skip_all("dcm_qa_ct/In/GE/01.dcm or dcmqi/.../ct-3slice/01.dcm is not in the test data");
    }
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s", t != NULL && t[0] != '\0' ? t : "/tmp");
    if (write_dir[0] == '\0')
        plan(42, 600);

    /* the valid files themselves pass */
    if (write_dir[0] == '\0') {
        struct result r = run("valid-explicit", base_ex);
        ok(r.rc == 0, "the explicit VR base file is read (%s)", r.why);
        r = run("valid-implicit", base_im);
        ok(r.rc == 0, "the implicit VR base file is read (%s)", r.why);
    }

    /* 1. undefined length on a text element, implicit VR little endian */
    static const struct {
        const char *name;
        uint16_t g, e;
    } text[] = {
        {"undef-sop-instance", 0x0008, 0x0018}, {"undef-modality", 0x0008, 0x0060},
        {"undef-series-uid", 0x0020, 0x000e},   {"undef-ipp", 0x0020, 0x0032},
        {"undef-iop", 0x0020, 0x0037},          {"undef-pixel-spacing", 0x0028, 0x0030},
        {"undef-window-width", 0x0028, 0x1051},
    };
    for (size_t i = 0; i < sizeof text / sizeof text[0]; i++) {
        struct buf b = dup_buf(base_im);
        size_t val, at = find_tag(b, text[i].g, text[i].e, &val);
        if (at == 0) {
            ok(false, "%s: (%04X,%04X) not found in the base file", text[i].name, text[i].g,
               text[i].e);
            free(b.p);
            continue;
        }
        put32(b.p + at + 4, 0xffffffffu);
        expect_refused(text[i].name, b, "undefined length", 2.0);
    }

    /* 2. lengths beyond the file: 0xFFFFFFF0 on UI and IS (implicit), on UT (explicit), on a
     * meta element; a meta UID made long */
    {
        struct buf b = dup_buf(base_im);
        size_t val, at = find_tag(b, 0x0008, 0x0018, &val);
        put32(b.p + at + 4, 0xfffffff0u);
        expect_refused("huge-ui-implicit", b, "declares", 1.0);
        b = dup_buf(base_im);
        at = find_tag(b, 0x0020, 0x0013, &val);
        put32(b.p + at + 4, 0xfffffff0u);
        expect_refused("huge-is-implicit", b, "declares", 1.0);
        /* explicit: (0008,0018) UI becomes UT with a 32-bit length */
        b = dup_buf(base_ex);
        at = find_tag(b, 0x0008, 0x0018, &val);
        uint8_t four[4] = {0, 0, 0, 0};
        insert(&b, at + 6, four, 4);
        memcpy(b.p + at + 4, "UT", 2);
        put16(b.p + at + 6, 0);
        put32(b.p + at + 8, 0xfffffff0u);
        expect_refused("huge-ut-explicit", b, "declares", 1.0);
        /* meta: (0002,0001) OB, the version, is the meta's one long element */
        b = dup_buf(base_ex);
        static const uint8_t ver[6] = {0x02, 0x00, 0x01, 0x00, 'O', 'B'};
        size_t m = 0;
        for (size_t i = 132; i + 12 < b.n && i < 400; i++)
            if (memcmp(b.p + i, ver, 6) == 0) {
                m = i;
                break;
            }
        if (m != 0)
            put32(b.p + m + 8, 0xfffffff0u);
        expect_refused("huge-meta-ob", b, "file meta information", 1.0);
        /* meta: an element with a VR that does not exist (GDCM asserted on it; found by
         * fuzz-volume) */
        b = dup_buf(base_ex);
        static const uint8_t inst[6] = {0x02, 0x00, 0x03, 0x00, 'U', 'I'};
        for (size_t i = 132; i + 8 < b.n && i < 400; i++)
            if (memcmp(b.p + i, inst, 6) == 0) {
                memcpy(b.p + i + 4, "EI", 2);
                break;
            }
        expect_refused("meta-unknown-vr", b, "no valid VR", 1.0);
        /* meta: its first element in group 0001, after DICM: GDCM guessed big endian and
         * allocated 3.5 GB for a swapped length (found by fuzz-prescan) */
        b = dup_buf(base_ex);
        b.p[132] = 0x01;
        expect_refused("meta-group-0001", b, "no file meta information (group 0002)", 1.0);
        /* a data set without meta whose first element is not in group 0008: GDCM guessed its
         * encoding wrong and allocated 4 GB (found by fuzz-prescan) */
        {
            struct mms_prescan pre;
            char pw[256];
            mms_dicom_prescan(base_ex.p, base_ex.n, MMS_DICOM_MAX_NESTING, &pre, pw, sizeof pw);
            static const uint8_t odd[8] = {0x68, 0x3a, 0x2f, 0x00, 'S', 'H', 0, 0};
            struct buf bare = {malloc(base_ex.n + 16), 0};
            memcpy(bare.p, odd, sizeof odd);
            memcpy(bare.p + sizeof odd, base_ex.p + pre.dataset_at,
                   base_ex.n - (size_t)pre.dataset_at);
            bare.n = sizeof odd + base_ex.n - (size_t)pre.dataset_at;
            expect_refused("bare-first-group-3a68", bare, "first element is in group 3A68", 1.0);
        }
        /* SOP Class UID written with VR UV: GDCM's StringFilter asserted on it (found by
         * fuzz-prescan); read as absent */
        {
            b = dup_buf(base_ex);
            size_t v3, at3 = find_tag(b, 0x0008, 0x0016, &v3);
            if (at3 != 0) {
                unsigned l = b.p[at3 + 6] | b.p[at3 + 7] << 8;
                static const uint8_t reserved[4] = {0, 0, 0, 0};
                insert(&b, at3 + 6, reserved, 4);
                memcpy(b.p + at3 + 4, "UV", 2);
                put16(b.p + at3 + 6, 0);
                put32(b.p + at3 + 8, l);
            }
            struct result r = run("sop-class-uv", b);
            free(b.p);
            if (write_dir[0] == '\0')
                ok(at3 != 0 && r.rc <= 0, "sop-class-uv: read without a crash (rc %d%s%s)", r.rc,
                   r.why[0] != '\0' ? ": " : "", r.why);
        }
        /* a sequence delimiter with a length: GDCM asserted (found by fuzz-prescan) */
        {
            struct buf sq;
            nested_explicit(&sq, 0x0009, 0x1000, 1); /* before Patient's Name */
            put32(sq.p + sq.n - 4, 4);               /* the sequence delimiter's length */
            size_t v2, at2 = find_tag(base_ex, 0x0010, 0x0010, &v2);
            b = dup_buf(base_ex);
            if (at2 != 0)
                insert(&b, at2, sq.p, sq.n);
            free(sq.p);
            expect_refused("sequence-delimiter-length", b, "a sequence delimiter with length 4",
                           1.0);
        }
        /* meta: a group length beyond the end of the file, with the preamble (the file cut
         * after it) and without (the file meta's first element alone; GDCM asserted on it,
         * found by fuzz-volume) */
        b = dup_buf(base_ex);
        b.n = 144;
        expect_refused("meta-group-length-cut", b, "group length", 1.0);
        b = dup_buf(base_ex);
        memmove(b.p, b.p + 132, 12);
        b.n = 12;
        expect_refused("meta-group-length-no-preamble", b, "group length", 1.0);
        /* meta: a group length that ends inside the last meta element (GDCM asserted on
         * it with and without the preamble; found by fuzz-prescan and fuzz-volume) */
        b = dup_buf(base_ex);
        put32(b.p + 140, (uint32_t)(b.p[140] | b.p[141] << 8) - 2);
        expect_refused("meta-group-length-inside", b, "ends inside", 1.0);
        /* the file meta alone (GDCM asserted at the end of the file; fuzz-volume) */
        {
            struct mms_prescan pm;
            char w2[256];
            mms_dicom_prescan(base_ex.p, base_ex.n, MMS_DICOM_MAX_NESTING, &pm, w2, sizeof w2);
            b = dup_buf(base_ex);
            b.n = (size_t)pm.dataset_at;
            expect_refused("meta-only", b, "no data set", 1.0);
        }
        /* an explicit VR data set declared implicit: refused in the declared syntax, not left
         * to GDCM's recovery (which asserted on such a file; fuzz-prescan) */
        b = dup_buf(base_ex);
        set_ts(&b, "1.2.840.10008.1.2");
        expect_refused("ts-mismatch", b, "declares", 1.0);
        /* data set: the same */
        b = dup_buf(base_ex);
        at = find_tag(b, 0x0008, 0x0060, &val);
        memcpy(b.p + at + 4, "QQ", 2);
        expect_refused("unknown-vr", b, "no valid VR", 1.0);
        /* meta: the transfer syntax UID holds letters */
        b = dup_buf(base_ex);
        set_ts(&b, "1.2.840.10008.1.2.X");
        expect_refused("meta-bad-ts", b, "not a valid UID", 1.0);
    }

    /* 3. truncation at a few hundred bytes */
    static const size_t cut[] = {140, 454, 630};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < 3; i++) {
            struct buf b = dup_buf(k == 0 ? base_ex : base_im);
            b.n = cut[i];
            char nm[64];
            snprintf(nm, sizeof nm, "truncated-%s-%zu", k == 0 ? "explicit" : "implicit", cut[i]);
            expect_refused(nm, b, NULL, 1.0);
        }

    /* 4. nesting: a group 0000 element holding deep sequences; the same in a deflated set */
    {
        struct buf seq, b;
        struct mms_prescan pre;
        char why[256];
        mms_dicom_prescan(base_ex.p, base_ex.n, MMS_DICOM_MAX_NESTING, &pre, why, sizeof why);
        nested_explicit(&seq, 0x0000, 0x1000, 5000);
        b = dup_buf(base_ex);
        insert(&b, (size_t)pre.dataset_at, seq.p, seq.n);
        expect_refused("nested-group0000", b, "nested deeper", 2.0);
        /* implicit: the same nesting, undefined lengths read as sequences */
        struct buf imp = {malloc(5000 * 32), 0};
        for (int i = 0; i < 5000; i++) {
            uint8_t *q = imp.p + imp.n;
            put16(q, 0x0000), put16(q + 2, 0x1000), put32(q + 4, 0xffffffffu);
            put16(q + 8, 0xfffe), put16(q + 10, 0xe000), put32(q + 12, 0xffffffffu);
            imp.n += 16;
        }
        mms_dicom_prescan(base_im.p, base_im.n, MMS_DICOM_MAX_NESTING, &pre, why, sizeof why);
        b = dup_buf(base_im);
        insert(&b, (size_t)pre.dataset_at, imp.p, imp.n);
        free(imp.p);
        expect_refused("nested-group0000-implicit", b, "nested deeper", 2.0);
        /* deflated: the explicit data set behind the nesting, deflated */
        mms_dicom_prescan(base_ex.p, base_ex.n, MMS_DICOM_MAX_NESTING, &pre, why, sizeof why);
        size_t dn = seq.n + (base_ex.n - (size_t)pre.dataset_at);
        uint8_t *ds = malloc(dn);
        memcpy(ds, seq.p, seq.n);
        memcpy(ds + seq.n, base_ex.p + pre.dataset_at, base_ex.n - (size_t)pre.dataset_at);
        b = deflated(base_ex, ds, dn, 0);
        expect_refused("nested-deflated", b, "nested deeper", 2.0);
        /* a deflated set that is sound passes */
        b = deflated(base_ex, base_ex.p + pre.dataset_at, base_ex.n - (size_t)pre.dataset_at, 0);
        if (write_dir[0] == '\0') {
            struct result r = run("deflated-valid", b);
            ok(r.rc == 0, "a sound deflated data set is read (%s)", r.why);
        } else {
            run("deflated-valid", b);
        }
        free(b.p);
        free(ds);
        free(seq.p);
    }

    /* 4b. UN holding items in a big endian data set: the items are implicit VR little endian
     * to DCMTK and to the pre-scan, byte-swapped to GDCM, which took an item length of 88 as
     * 1.4 GB and cleared that much (found by fuzz-prescan). Undefined length, then defined
     * lengths beginning with an item tag in either byte order. */
    {
        struct mms_prescan pre;
        char why[256];
        mms_dicom_prescan(base_ex.p, base_ex.n, MMS_DICOM_MAX_NESTING, &pre, why, sizeof why);
        /* (0008,0060) CS "CT", big endian */
        static const uint8_t modality[] = {0x00, 0x08, 0x00, 0x60, 'C', 'S', 0x00, 0x02, 'C', 'T'};
        /* an item of 8 bytes holding (0008,1150) of length 0, implicit VR little endian; the
         * same item with its tag and length big endian */
        static const uint8_t item_le[] = {0xfe, 0xff, 0x00, 0xe0, 8, 0, 0, 0,
                                          0x08, 0x00, 0x50, 0x11, 0, 0, 0, 0};
        static const uint8_t item_be[] = {0xff, 0xfe, 0xe0, 0x00, 0, 0, 0, 8,
                                          0x08, 0x00, 0x50, 0x11, 0, 0, 0, 0};
        static const uint8_t seq_end[] = {0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0};
        for (int v = 0; v < 3; v++) {
            struct buf b = {malloc(pre.dataset_at + 128), pre.dataset_at};
            memcpy(b.p, base_ex.p, pre.dataset_at);
            set_ts(&b, "1.2.840.10008.1.2.2");
            memcpy(b.p + b.n, modality, sizeof modality);
            b.n += sizeof modality;
            /* (0008,2112) UN, big endian; undefined length or 16 */
            static const uint8_t un[] = {0x00, 0x08, 0x21, 0x12, 'U', 'N', 0, 0};
            memcpy(b.p + b.n, un, sizeof un);
            b.n += sizeof un;
            uint8_t len[4] = {0xff, 0xff, 0xff, 0xff};
            if (v > 0)
                len[0] = len[1] = len[2] = 0, len[3] = 16;
            memcpy(b.p + b.n, len, 4);
            b.n += 4;
            memcpy(b.p + b.n, v == 2 ? item_be : item_le, 16);
            b.n += 16;
            if (v == 0) {
                memcpy(b.p + b.n, seq_end, sizeof seq_end);
                b.n += sizeof seq_end;
            }
            static const char *names[] = {"un-items-big-endian", "un-items-big-endian-defined",
                                          "un-items-big-endian-swapped"};
            expect_refused(names[v], b, "UN holding items in a big endian", 1.0);
        }
    }

    /* 5. amplification: a 34 KB file declaring a 4 GB element; a deflate bomb */
    {
        struct buf b = dup_buf(base_ex);
        size_t val, at = find_tag(b, 0x0008, 0x0018, &val);
        uint8_t four[4] = {0, 0, 0, 0};
        insert(&b, at + 6, four, 4);
        memcpy(b.p + at + 4, "OB", 2);
        put16(b.p + at + 6, 0);
        put32(b.p + at + 8, 0xfffffff0u);
        b.n = 34 * 1024;
        expect_refused("amplify-34k-4g", b, "declares", 1.0);
        /* an explicit data set whose private OB holds 400 MB of zeros, deflated (~400 KB) */
        uint8_t ob[12];
        put16(ob, 0x0009), put16(ob + 2, 0x1010), memcpy(ob + 4, "OB", 2), put16(ob + 6, 0);
        put32(ob + 8, 400u << 20);
        b = deflated(base_ex, ob, sizeof ob, (size_t)400 << 20);
        expect_refused("amplify-deflate-bomb", b, "inflates to more than", 5.0);
    }

    /* 6. a few random byte flips in the header */
    flips("flips-explicit", base_ex, write_dir[0] != '\0' ? 16 : 150, 1);
    flips("flips-implicit", base_im, write_dir[0] != '\0' ? 16 : 150, 2);

    free(base_ex.p);
    free(base_im.p);
    if (write_dir[0] != '\0') {
        fprintf(stderr, "%d cases written to %s\n", n_written, write_dir);
        return 0;
    }
    return done_testing();
}
