/* dicom: a structural pre-scan of a DICOM file before any toolkit parses it.
 *
 * GDCM reads nested sequences recursively, trusts declared lengths (it allocates what an
 * element declares before it reads it) and asserts or dereferences where the structure of a
 * data set makes no sense. So nothing received reaches it before this walker has read the whole
 * element structure up to the pixel data, without recursion, and found it sound: every length
 * within the bytes present, undefined lengths only on sequences and encapsulated pixel data,
 * items only inside sequences, sequences and items nested no deeper than a bound (group 0000
 * and private elements included), file meta information well formed, deflated data sets
 * inflated within a size cap and walked too. What the walker refuses comes with a one-line
 * reason; what it accepts the toolkits can read without trusting a length.
 * Threads: reentrant. */
#include "dicom/dicom.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/err.h"

/* The attributes of enum mms_tag, in its order (group << 16 | element). */
const uint32_t mms__dicom_tags[MMS_TAG_COUNT] = {
    0x00080008, 0x00080016, 0x00080018, 0x00080060, 0x00180050, 0x0020000d, 0x0020000e, 0x00200012,
    0x00200013, 0x00200032, 0x00200037, 0x00200052, 0x00200100, 0x00280002, 0x00280004, 0x00280008,
    0x00280010, 0x00280011, 0x00280030, 0x00280100, 0x00280101, 0x00280103, 0x00280120, 0x00281052,
    0x00281053, 0x52009229, 0x52009230, 0x0008103e, 0x00180015, 0x00201002, 0x00100010, 0x00100020,
};

#define UNDEFINED 0xffffffffu
#define MAX_LEVELS 1024 /* containers tracked; deeper files are refused */
#define PIXEL_DATA 0x7fe00010u
/* inflated bytes kept to walk: a deflated header is smaller (the fuzz targets keep less, as
 * their inflate floor is smaller: see dicom.h) */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define KEEP ((size_t)256 << 10)
#else
#define KEEP ((size_t)16 << 20)
#endif
#define TS_IMPLICIT "1.2.840.10008.1.2"
#define TS_EXPLICIT "1.2.840.10008.1.2.1"
#define TS_DEFLATED "1.2.840.10008.1.2.1.99"
#define TS_BIG "1.2.840.10008.1.2.2"

enum enc { ENC_IMPLICIT, ENC_EXPLICIT, ENC_BIG };

/* What a level of nesting holds: data elements (the data set, an item), items (a sequence),
 * or fragments (encapsulated pixel data). */
enum kind { K_ELEMENTS, K_ITEMS, K_FRAGMENTS };

struct level {
    size_t end; /* SIZE_MAX: undefined length, ends at its delimiter */
    uint8_t kind;
    bool implicit;
};

/* The outcome of one walk. */
enum walk_rc { WALK_OK, WALK_BAD, WALK_DEEP };

struct walker {
    const uint8_t *p;
    size_t n, pos;
    int max_depth;
    char *why;
    size_t why_len;
};

static uint16_t
u16(const uint8_t *b, bool big)
{
    return big ? (uint16_t)(b[0] << 8 | b[1]) : (uint16_t)(b[1] << 8 | b[0]);
}

static uint32_t
u32(const uint8_t *b, bool big)
{
    return big ? (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]
               : (uint32_t)b[3] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[1] << 8 | b[0];
}

static bool
is_vr(const uint8_t *vr, const char *s)
{
    return vr[0] == (uint8_t)s[0] && vr[1] == (uint8_t)s[1];
}

static bool
long_vr(const uint8_t *vr)
{
    static const char *const l[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ",
                                    "SV", "UC", "UN", "UR", "UT", "UV"};
    for (size_t i = 0; i < sizeof l / sizeof l[0]; i++)
        if (is_vr(vr, l[i]))
            return true;
    return false;
}

/* One of the VRs of PS3.5 (GDCM asserts on another one in the file meta information). */
static bool
known_vr(const uint8_t *vr)
{
    static const char all[] =
        "AEASATCSDADSDTFDFLISLOLTOBODOFOLOVOWPNSHSLSQSSSTSVTMUCUIULUNURUSUTUV";
    for (size_t i = 0; i + 1 < sizeof all; i += 2)
        if (is_vr(vr, all + i))
            return true;
    return false;
}

static enum walk_rc
fail(struct walker *w, enum walk_rc rc, const char *fmt, ...)
{
    if (w->why != NULL && w->why_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->why, w->why_len, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* Record where the value of a wanted top-level attribute lies (its first occurrence). */
static void
record(struct mms_prescan *info, uint32_t tag, const uint8_t *vr, size_t at, uint32_t len)
{
    for (int i = 0; i < MMS_TAG_COUNT; i++) {
        if (mms__dicom_tags[i] != tag)
            continue;
        struct mms_scan_value *v = &info->v[i];
        if (!v->found) {
            v->found = true;
            v->at = at;
            v->len = len;
            if (vr != NULL) {
                v->vr[0] = (char)vr[0];
                v->vr[1] = (char)vr[1];
            }
        }
        return;
    }
}

/* One of the attributes read as values, never a sequence. */
static bool
value_tag(uint32_t tag)
{
    for (int i = 0; i < MMS_TAG_COUNT; i++)
        if (mms__dicom_tags[i] == tag)
            return i != MMS_TAG_SHARED_GROUPS && i != MMS_TAG_FRAME_GROUPS;
    return false;
}

/* The bytes at b (n of them) begin with an item or a sequence delimitation tag. */
static bool
item_next(const uint8_t *b, size_t n, bool big)
{
    if (n < 4 || u16(b, big) != 0xfffe)
        return false;
    uint16_t e = u16(b + 2, big);
    return e == 0xe000 || e == 0xe0dd;
}

/* The fragments of top-level encapsulated pixel data: each within the bytes present, ended by
 * a sequence delimiter. */
static bool
fragments_fit(const uint8_t *p, size_t n, size_t pos, bool big)
{
    while (n - pos >= 8) {
        uint16_t g = u16(p + pos, big), e = u16(p + pos + 2, big);
        uint32_t l = u32(p + pos + 4, big);
        pos += 8;
        if (g != 0xfffe)
            return false;
        if (e == 0xe0dd)
            return l == 0;
        if (e != 0xe000 || l == UNDEFINED || l > n - pos)
            return false;
        pos += l;
    }
    return false;
}

/* Items inside UN hold implicit VR little endian (DICOM PS3.5 6.2.2); in a big endian data set
 * GDCM reads them byte-swapped, so their lengths mean other things to the two toolkits: one
 * such length made GDCM allocate and clear gigabytes. Refused. */
#define UN_BIG_ENDIAN                                                                              \
    "data element (%04X,%04X) at byte %zu: UN holding items in a big endian data set (the "        \
    "toolkits disagree on their byte order)"

/* Walk the data set at w->pos in encoding enc to its top-level pixel data or its end.
 * WALK_OK with info filled, WALK_BAD (structure broken) or WALK_DEEP (nested too deep), with the
 * reason in w->why. */
static enum walk_rc
walk(struct walker *w, enum enc enc, struct mms_prescan *info)
{
    struct level lv[MAX_LEVELS];
    int depth = 0, limit = w->max_depth < MAX_LEVELS ? w->max_depth : MAX_LEVELS;
    const uint8_t *p = w->p;
    const size_t n = w->n;
    size_t pos = w->pos;

    for (;;) {
        while (depth > 0 && lv[depth - 1].end != SIZE_MAX && pos >= lv[depth - 1].end) {
            if (pos > lv[depth - 1].end)
                return fail(w, WALK_BAD,
                            "an element crosses the end of its sequence or item at byte %zu",
                            lv[depth - 1].end);
            depth--;
        }
        if (pos == n)
            break;
        if (n - pos < 8)
            return fail(w, WALK_BAD, "truncated: %zu bytes at byte %zu are not a whole element",
                        n - pos, pos);
        const enum kind kind = depth > 0 ? (enum kind)lv[depth - 1].kind : K_ELEMENTS;
        const bool implicit = depth > 0 ? lv[depth - 1].implicit : enc == ENC_IMPLICIT;
        const bool big = enc == ENC_BIG && !implicit;
        const size_t at = pos;
        const uint16_t g = u16(p + pos, big), e = u16(p + pos + 2, big);
        const uint32_t tag = (uint32_t)g << 16 | e;

        if (g == 0xfffe) { /* items and delimiters: tag and a 4-byte length */
            uint32_t l = u32(p + pos + 4, big);
            pos += 8;
            if (e == 0xe000 && kind == K_FRAGMENTS) {
                if (l == UNDEFINED || l > n - pos)
                    return fail(w, WALK_BAD,
                                "pixel data fragment at byte %zu declares %u bytes, %zu remain", at,
                                (unsigned)l, n - pos);
                pos += l;
            } else if (e == 0xe000) {
                if (kind != K_ITEMS)
                    return fail(w, WALK_BAD, "an item outside a sequence at byte %zu", at);
                if (l != UNDEFINED && l > n - pos)
                    return fail(w, WALK_BAD, "item at byte %zu declares %u bytes, %zu remain", at,
                                (unsigned)l, n - pos);
                if (depth >= limit)
                    return fail(w, WALK_DEEP, "sequences nested deeper than %d levels at byte %zu",
                                limit, at);
                lv[depth++] =
                    (struct level){l == UNDEFINED ? SIZE_MAX : pos + l, K_ELEMENTS, implicit};
            } else if ((e == 0xe00d || e == 0xe0dd) && l != 0) {
                /* GDCM asserts on it (found by fuzz-prescan) */
                return fail(w, WALK_BAD, "a %s delimiter with length %u (not 0) at byte %zu",
                            e == 0xe00d ? "item" : "sequence", (unsigned)l, at);
            } else if (e == 0xe00d) {
                if (depth == 0 || kind != K_ELEMENTS)
                    return fail(w, WALK_BAD, "an item delimiter outside an item at byte %zu", at);
                depth--;
            } else if (e == 0xe0dd) {
                if (depth == 0 || kind == K_ELEMENTS)
                    return fail(w, WALK_BAD, "a sequence delimiter outside a sequence at byte %zu",
                                at);
                depth--;
            } else {
                return fail(w, WALK_BAD, "unknown item tag (FFFE,%04X) at byte %zu", e, at);
            }
            continue;
        }
        if (kind != K_ELEMENTS)
            return fail(w, WALK_BAD,
                        "data element (%04X,%04X) inside a sequence, not in an item, at "
                        "byte %zu",
                        g, e, at);

        const uint8_t *vr = NULL;
        uint32_t l;
        if (implicit) {
            l = u32(p + pos + 4, false);
            pos += 8;
        } else {
            vr = p + pos + 4;
            if (!known_vr(vr))
                return fail(w, WALK_BAD, "data element (%04X,%04X) at byte %zu has no valid VR", g,
                            e, at);
            if (long_vr(vr)) {
                if (n - pos < 12)
                    return fail(w, WALK_BAD, "truncated: data element (%04X,%04X) at byte %zu", g,
                                e, at);
                l = u32(p + pos + 8, big);
                pos += 12;
            } else {
                l = u16(p + pos + 6, big);
                pos += 8;
            }
        }
        if (tag == PIXEL_DATA && depth == 0) { /* the header ends here */
            info->pixel_at = pos;
            info->pixel_len = l;
            info->pixel_fits = l == UNDEFINED ? fragments_fit(p, n, pos, big) : l <= n - pos;
            return WALK_OK;
        }
        if (l == UNDEFINED) {
            bool un = vr != NULL && is_vr(vr, "UN");
            bool sq = vr != NULL ? is_vr(vr, "SQ") || un : item_next(p + pos, n - pos, false);
            if (tag == PIXEL_DATA && (vr == NULL || is_vr(vr, "OB") || is_vr(vr, "OW"))) {
                if (depth >= limit)
                    return fail(w, WALK_DEEP, "sequences nested deeper than %d levels at byte %zu",
                                limit, at);
                lv[depth++] = (struct level){SIZE_MAX, K_FRAGMENTS, implicit};
                continue;
            }
            if (!sq || value_tag(tag))
                return fail(w, WALK_BAD,
                            "data element (%04X,%04X) at byte %zu has an undefined length, "
                            "which only sequences and encapsulated pixel data may have",
                            g, e, at);
            if (depth >= limit)
                return fail(w, WALK_DEEP, "sequences nested deeper than %d levels at byte %zu",
                            limit, at);
            if (un && enc == ENC_BIG)
                return fail(w, WALK_BAD, UN_BIG_ENDIAN, g, e, at);
            if (depth == 0)
                record(info, tag, vr, pos, l);
            /* UN of undefined length holds implicit VR little endian items */
            lv[depth++] = (struct level){SIZE_MAX, K_ITEMS, implicit || un};
            continue;
        }
        if (l > n - pos)
            return fail(w, WALK_BAD,
                        "data element (%04X,%04X) at byte %zu declares %u bytes, %zu remain", g, e,
                        at, (unsigned)l, n - pos);
        if (depth == 0)
            record(info, tag, vr, pos, l);
        /* a sequence of defined length; in implicit VR, and in UN (which the toolkits may
         * read as implicit VR items), a value that begins with an item is read as one */
        bool sq = vr != NULL && is_vr(vr, "SQ");
        bool as_items = !sq && (vr == NULL || is_vr(vr, "UN")) && l >= 8 &&
                        u16(p + pos, false) == 0xfffe && u16(p + pos + 2, false) == 0xe000;
        if (vr != NULL && is_vr(vr, "UN") && enc == ENC_BIG && l >= 8 &&
            (as_items || (u16(p + pos, true) == 0xfffe && u16(p + pos + 2, true) == 0xe000)))
            return fail(w, WALK_BAD, UN_BIG_ENDIAN, g, e, at);
        if (sq || as_items) {
            if (depth >= limit)
                return fail(w, WALK_DEEP, "sequences nested deeper than %d levels at byte %zu",
                            limit, at);
            lv[depth++] = (struct level){pos + l, K_ITEMS, implicit || as_items};
            continue;
        }
        pos += l;
    }
    if (depth > 0)
        return fail(w, WALK_BAD, "truncated: %d sequence%s or item%s still open at the end", depth,
                    depth == 1 ? "" : "s", depth == 1 ? "" : "s");
    return WALK_OK;
}

/* A UID of the file meta information (the first one wins when the group repeats); false when
 * it is longer than 64 characters or holds other characters than digits and dots. */
static bool
meta_uid(const uint8_t *v, uint32_t l, char *out, size_t n)
{
    while (l > 0 && (v[l - 1] == ' ' || v[l - 1] == '\0'))
        l--;
    if (l >= n)
        return false;
    for (uint32_t i = 0; i < l; i++)
        if (!(v[i] == '.' || (v[i] >= '0' && v[i] <= '9')))
            return false;
    if (out[0] == '\0') {
        memcpy(out, v, l);
        out[l] = '\0';
    }
    return true;
}

/* Inflate the deflated data set in (n bytes): its first bytes, up to KEEP, into a new buffer
 * (*out, *out_len), the rest only counted, and refuse it when it inflates beyond cap bytes.
 * 0, MMS_ENOMEM, or MMS_EDICOM with the reason. */
static int
inflate_capped(const uint8_t *in, size_t n, size_t cap, uint8_t **out, size_t *out_len, char *why,
               size_t why_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK)
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory (zlib)");
    static const size_t chunk = 64 << 10;
    size_t size = n < KEEP / 4 ? 4 * n + chunk : KEEP, kept = 0, total = 0, done_in = 0;
    uint8_t *buf = malloc(size), *scratch = malloc(chunk), *nb;
    int rc = buf != NULL && scratch != NULL ? 0 : MMS_ENOMEM, zrc;
    while (rc == 0) {
        bool keep = kept < KEEP;
        if (keep && kept == size) {
            size_t ns = size > KEEP / 2 ? KEEP : 2 * size;
            if ((nb = realloc(buf, ns)) == NULL) {
                rc = MMS_ENOMEM;
                break;
            }
            buf = nb, size = ns;
        }
        z.next_in = (Bytef *)(in + done_in);
        z.avail_in = n - done_in > UINT32_MAX ? UINT32_MAX : (uInt)(n - done_in);
        z.next_out = keep ? buf + kept : scratch;
        z.avail_out = (uInt)(keep ? size - kept : chunk);
        uInt ai = z.avail_in, ao = z.avail_out;
        zrc = inflate(&z, Z_NO_FLUSH);
        done_in += ai - z.avail_in;
        total += ao - z.avail_out;
        if (keep)
            kept += ao - z.avail_out;
        if (total > cap)
            rc = mms_why(why, why_len, MMS_EDICOM,
                         "deflated data set inflates to more than %zu MiB (%zu bytes compressed)",
                         cap >> 20, n);
        else if (zrc == Z_STREAM_END)
            break;
        else if (zrc != Z_OK && zrc != Z_BUF_ERROR)
            rc = mms_why(why, why_len, MMS_EDICOM, "deflated data set is corrupt (zlib: %s)",
                         z.msg != NULL ? z.msg : "error");
        else if (ai - z.avail_in == 0 && ao - z.avail_out == 0)
            rc = mms_why(why, why_len, MMS_EDICOM, "deflated data set is truncated");
    }
    inflateEnd(&z);
    free(scratch);
    if (rc == MMS_ENOMEM)
        mms_why(why, why_len, rc, "out of memory inflating the data set");
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = kept;
    return 0;
}

/* A data set without file meta information walks, but its first element is not in group 0008,
 * where every data set begins: GDCM guesses the encoding from that element, and from another
 * group guessed wrong and allocated gigabytes (found by fuzz-prescan). */
static int
bare_not_0008(const uint8_t *data, char *why, size_t why_len)
{
    return mms_why(why, why_len, MMS_EDICOM,
                   "a data set without file meta information whose first element is in group "
                   "%04X, not 0008",
                   u16(data, false));
}

int
mms_dicom_prescan(const uint8_t *data, size_t len, int max_depth, struct mms_prescan *info,
                  char *why, size_t why_len)
{
    struct walker w = {.p = data, .n = len, .max_depth = max_depth, .why = why, .why_len = why_len};
    memset(info, 0, sizeof *info);
    char *ts = info->transfer_syntax;
    bool meta = len >= 132 && memcmp(data + 128, "DICM", 4) == 0;
    /* without the preamble, a file may still begin with its meta information (GDCM reads it
     * so, and asserts where it is malformed) */
    if (!meta && len >= 8 && u16(data, false) == 0x0002 && known_vr(data + 4))
        meta = true, w.pos = 0;
    else if (meta)
        w.pos = 132;
    else if (len >= 4 && (u16(data, false) == 0x0002 || u16(data, true) == 0x0002))
        /* group 0002 first, but not as explicit VR little endian: GDCM still reads it as the
         * file meta, and asserts (found by fuzz-prescan) */
        return mms_why(why, why_len, MMS_EDICOM,
                       "file meta information without its preamble is not explicit VR little "
                       "endian (no valid VR at byte 4)");
    enum enc enc = ENC_IMPLICIT;
    size_t group_end = 0; /* where (0002,0000) says the file meta ends */
    if (meta) {
        /* file meta information: explicit VR little endian, group 0002; right after "DICM"
         * (GDCM otherwise guesses, once as big endian, and allocated gigabytes for a length it
         * swapped: found by fuzz-prescan) */
        if (len - w.pos < 8 || u16(data + w.pos, false) != 0x0002)
            return mms_why(why, why_len, MMS_EDICOM,
                           "no file meta information (group 0002) after the DICM prefix");
        while (len - w.pos >= 8 && u16(data + w.pos, false) == 0x0002) {
            const size_t at = w.pos;
            uint16_t el = u16(data + w.pos + 2, false);
            const uint8_t *vr = data + w.pos + 4;
            if (!known_vr(vr))
                return mms_why(why, why_len, MMS_EDICOM,
                               "file meta information: element (0002,%04X) at byte %zu has no "
                               "valid VR",
                               el, at);
            size_t hdr = long_vr(vr) ? 12 : 8;
            if (len - w.pos < hdr)
                return mms_why(why, why_len, MMS_EDICOM,
                               "file meta information: truncated at byte %zu", at);
            uint32_t l = hdr == 12 ? u32(data + w.pos + 8, false) : u16(data + w.pos + 6, false);
            if (l == UNDEFINED || l > len - w.pos - hdr)
                return mms_why(why, why_len, MMS_EDICOM,
                               "file meta information: element (0002,%04X) at byte %zu declares "
                               "%u bytes, %zu remain",
                               el, at, (unsigned)l, len - w.pos - hdr);
            const uint8_t *v = data + w.pos + hdr;
            if (el == 0x0000 && l == 4 && u32(v, false) > len - w.pos - hdr - l)
                return mms_why(why, why_len, MMS_EDICOM,
                               "file meta information: its group length %u goes beyond the end "
                               "of the file",
                               (unsigned)u32(v, false));
            if (el == 0x0000 && l == 4 && group_end == 0)
                group_end = w.pos + hdr + l + u32(v, false);
            else if (group_end != 0 && w.pos < group_end && w.pos + hdr + l > group_end)
                return mms_why(why, why_len, MMS_EDICOM,
                               "file meta information: its group length ends inside element "
                               "(0002,%04X)",
                               el);
            bool uid_ok = true;
            if (el == 0x0002)
                uid_ok = meta_uid(v, l, info->media_class, sizeof info->media_class);
            else if (el == 0x0003)
                uid_ok = meta_uid(v, l, info->media_instance, sizeof info->media_instance);
            else if (el == 0x0010)
                uid_ok = meta_uid(v, l, ts, sizeof info->transfer_syntax);
            if (!uid_ok)
                return mms_why(why, why_len, MMS_EDICOM,
                               "file meta information: (0002,%04X) is not a valid UID (digits "
                               "and dots, at most 64)",
                               el);
            w.pos += hdr + l;
        }
        info->dataset_at = w.pos;
        if (w.pos == len) /* GDCM asserts at the end of the file right after the meta */
            return mms_why(why, why_len, MMS_EDICOM, "no data set after the file meta information");
        enc = strcmp(ts, TS_IMPLICIT) == 0 ? ENC_IMPLICIT
              : strcmp(ts, TS_BIG) == 0    ? ENC_BIG
                                           : ENC_EXPLICIT;
        if (strcmp(ts, TS_DEFLATED) == 0) {
            /* deflated: the toolkits inflate all of it; walk what they would read, and refuse
             * a data set that inflates beyond the cap */
            size_t in = len - w.pos, cap = MMS_DICOM_INFLATE_MAX;
            if (in < MMS_DICOM_INFLATE_MAX / MMS_DICOM_INFLATE_RATIO)
                cap = in * MMS_DICOM_INFLATE_RATIO < MMS_DICOM_INFLATE_MIN
                          ? MMS_DICOM_INFLATE_MIN
                          : in * MMS_DICOM_INFLATE_RATIO;
            uint8_t *raw = NULL;
            size_t raw_len = 0;
            int rc = inflate_capped(data + w.pos, in, cap, &raw, &raw_len, why, why_len);
            if (rc < 0)
                return rc;
            struct mms_prescan sub;
            memset(&sub, 0, sizeof sub);
            struct walker dw = {.p = raw, .n = raw_len, .max_depth = max_depth};
            char reason[200] = "";
            dw.why = reason;
            dw.why_len = sizeof reason;
            enum walk_rc wr = walk(&dw, ENC_EXPLICIT, &sub);
            free(raw);
            if (wr != WALK_OK && raw_len == KEEP && sub.pixel_at == 0)
                return mms_why(why, why_len, MMS_EDICOM,
                               "deflated data set: no pixel data in its first %zu KiB", KEEP >> 10);
            if (wr != WALK_OK)
                return mms_why(why, why_len, MMS_EDICOM, "deflated data set: %s", reason);
            return 0; /* not complete: the values lie in the inflated bytes */
        }
    } else {
        enc = ENC_IMPLICIT; /* a bare data set: implicit VR little endian, else explicit */
    }
    info->big_endian = enc == ENC_BIG;

    /* the declared encoding; without one (no meta, or no transfer syntax in it) the
     * toolkits detect the encoding, so the data set passes when it walks soundly in one */
    const size_t start = w.pos;
    struct mms_prescan first = *info;
    enum walk_rc wr = walk(&w, enc, info);
    if (wr == WALK_OK && !meta && len >= 2 && u16(data, false) != 0x0008)
        return bare_not_0008(data, why, why_len);
    if (wr == WALK_OK) {
        info->complete = true;
        return 0;
    }
    /* with a declared transfer syntax, only that one: GDCM's recovery from a data set that
     * breaks off in it asserts where the other encodings would walk */
    if (wr == WALK_DEEP || ts[0] != '\0')
        return MMS_EDICOM;
    /* a bare data set in big endian is not detected as such by GDCM, which then reads it in
     * another encoding and asserts (a 12-byte (1200,0000) UL element, found by fuzzing):
     * without a declared transfer syntax only the little-endian encodings pass */
    static const enum enc all[2] = {ENC_IMPLICIT, ENC_EXPLICIT};
    for (int i = 0; i < 2; i++) {
        if (all[i] == enc)
            continue;
        struct mms_prescan alt = first;
        char reason[200] = "";
        struct walker aw = {.p = data,
                            .n = len,
                            .pos = start,
                            .max_depth = max_depth,
                            .why = reason,
                            .why_len = sizeof reason};
        enum walk_rc ar = walk(&aw, all[i], &alt);
        if (ar == WALK_DEEP)
            return mms_why(why, why_len, MMS_EDICOM, "%s", reason);
        if (ar == WALK_OK && len >= 2 && u16(data, false) != 0x0008)
            return bare_not_0008(data, why, why_len);
        if (ar == WALK_OK) {
            *info = first; /* not complete: the toolkit reads it in the encoding it detects */
            return 0;
        }
    }
    if (!meta && why != NULL && why_len > 0) {
        char reason[256];
        snprintf(reason, sizeof reason, "%s", why);
        snprintf(why, why_len, "not DICOM (no DICM prefix, and not a data set: %s)", reason);
    }
    return MMS_EDICOM;
}

int
mms_dicom_prescan_file(const char *path, struct mms_prescan *info, char *why, size_t why_len)
{
    int rc = 0;
    struct stat sb;
    char reason[256] = "";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) != 0) {
        rc = -errno;
        snprintf(reason, sizeof reason, "%s", mms_strerror(rc));
    } else if (!S_ISREG(sb.st_mode)) {
        rc = MMS_EDICOM;
        snprintf(reason, sizeof reason, "not a regular file");
    } else if (sb.st_size == 0) {
        rc = MMS_EDICOM;
        snprintf(reason, sizeof reason, "empty file");
    } else {
        size_t len = (size_t)sb.st_size;
        void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            rc = -errno;
            snprintf(reason, sizeof reason, "%s", mms_strerror(rc));
        } else {
            rc = mms_dicom_prescan(map, len, MMS_DICOM_MAX_NESTING, info, reason, sizeof reason);
            munmap(map, len);
        }
    }
    if (fd >= 0)
        close(fd);
    if (rc < 0 && why != NULL && why_len > 0)
        snprintf(why, why_len, "%s: %s", path, reason);
    return rc;
}
