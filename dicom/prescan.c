/* dicom: a structural pre-scan of a DICOM file before any toolkit parses it.
 *
 * GDCM reads nested sequences recursively: a file with 100 000 nested sequences (there is one
 * in the test data) exhausts the stack and kills the process. This walker reads the element
 * structure up to the pixel data without recursion and refuses a file nested deeper than a
 * bound. It is a guard, not a parser: where the structure stops making sense it stops and
 * leaves the verdict to the toolkit. Deflated data sets are not scanned.
 * Threads: reentrant. */
#include "dicom/dicom.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"

/* The attributes of enum mms_tag, in its order (group << 16 | element). */
const uint32_t mms__dicom_tags[MMS_TAG_COUNT] = {
    0x00080008, 0x00080016, 0x00080018, 0x00080060, 0x00180050, 0x0020000d, 0x0020000e, 0x00200012,
    0x00200013, 0x00200032, 0x00200037, 0x00200052, 0x00200100, 0x00280002, 0x00280004, 0x00280008,
    0x00280010, 0x00280011, 0x00280030, 0x00280100, 0x00280101, 0x00280103, 0x00280120, 0x00281052,
    0x00281053, 0x52009229, 0x52009230, 0x0008103e, 0x00180015, 0x00201002,
};

#define UNDEFINED 0xffffffffu
#define MAX_LEVELS 4096 /* containers tracked; deeper files are refused long before */

struct walker {
    const uint8_t *p;
    size_t n, pos;
    bool big; /* explicit VR big endian data set */
};

static uint16_t
u16(const struct walker *w, size_t at, bool big)
{
    const uint8_t *b = w->p + at;
    return big ? (uint16_t)(b[0] << 8 | b[1]) : (uint16_t)(b[1] << 8 | b[0]);
}

static uint32_t
u32(const struct walker *w, size_t at, bool big)
{
    const uint8_t *b = w->p + at;
    return big ? (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]
               : (uint32_t)b[3] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[1] << 8 | b[0];
}

static bool
long_vr(const uint8_t *vr)
{
    static const char *const l[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ",
                                    "SV", "UC", "UN", "UR", "UT", "UV"};
    for (size_t i = 0; i < sizeof l / sizeof l[0]; i++)
        if (vr[0] == (uint8_t)l[i][0] && vr[1] == (uint8_t)l[i][1])
            return true;
    return false;
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

static bool
vr_letters(const uint8_t *vr)
{
    return vr[0] >= 'A' && vr[0] <= 'Z' && vr[1] >= 'A' && vr[1] <= 'Z';
}

/* A UID of the file meta information; the first one wins when the group repeats. */
static void
meta_uid(const uint8_t *v, uint32_t l, char *out, size_t n)
{
    if (l >= n || out[0] != '\0')
        return;
    memcpy(out, v, l);
    out[l] = '\0';
    for (int i = (int)l - 1; i >= 0 && (out[i] == ' ' || out[i] == '\0'); i--)
        out[i] = '\0';
}

int
mms_dicom_prescan(const uint8_t *data, size_t len, int max_depth, struct mms_prescan *info,
                  char *why, size_t why_len)
{
    struct walker w = {.p = data, .n = len};
    size_t end[MAX_LEVELS];
    bool implicit_at[MAX_LEVELS];
    int depth = 0;
    bool implicit = false;

    memset(info, 0, sizeof *info);
    char *ts = info->transfer_syntax;
    if (len >= 132 && memcmp(data + 128, "DICM", 4) == 0) {
        w.pos = 132; /* file meta information: explicit VR little endian, group 0002 */
        while (w.pos + 8 <= len && u16(&w, w.pos, false) == 0x0002) {
            uint16_t el = u16(&w, w.pos + 2, false);
            const uint8_t *vr = data + w.pos + 4;
            size_t hdr = long_vr(vr) ? 12 : 8;
            if (w.pos + hdr > len)
                return 0;
            uint32_t l = long_vr(vr) ? u32(&w, w.pos + 8, false) : u16(&w, w.pos + 6, false);
            if (l == UNDEFINED || l > len - w.pos - hdr)
                return 0;
            if (el == 0x0002)
                meta_uid(data + w.pos + hdr, l, info->media_class, sizeof info->media_class);
            else if (el == 0x0003)
                meta_uid(data + w.pos + hdr, l, info->media_instance, sizeof info->media_instance);
            else if (el == 0x0010)
                meta_uid(data + w.pos + hdr, l, ts, sizeof info->transfer_syntax);
            w.pos += hdr + l;
        }
        info->dataset_at = w.pos;
        if (strcmp(ts, "1.2.840.10008.1.2.1.99") == 0)
            return 0; /* deflated: nothing to walk without inflating */
        implicit = strcmp(ts, "1.2.840.10008.1.2") == 0;
        w.big = strcmp(ts, "1.2.840.10008.1.2.2") == 0;
    } else {
        implicit = true; /* a bare data set: implicit VR little endian */
    }
    info->big_endian = w.big;
    /* an element whose VR is not two capital letters: the transfer syntax is not the one
     * declared, or the data is damaged; the toolkit has the last word on such a file */
    bool sane = true;

    while (w.pos + 8 <= len) {
        while (depth > 0 && end[depth - 1] != SIZE_MAX && w.pos >= end[depth - 1]) {
            depth--;
            implicit = implicit_at[depth];
        }
        bool big = w.big && !implicit;
        uint16_t g = u16(&w, w.pos, big), e = u16(&w, w.pos + 2, big);
        if (g == 0xfffe) { /* item and delimiters: tag and a 4-byte length */
            uint32_t l = u32(&w, w.pos + 4, big);
            w.pos += 8;
            if (e == 0xe000) {
                if (depth >= MAX_LEVELS || depth >= max_depth)
                    goto too_deep;
                implicit_at[depth] = implicit;
                end[depth++] = l == UNDEFINED || l > len - w.pos ? SIZE_MAX : w.pos + l;
            } else if (e == 0xe00d || e == 0xe0dd) {
                if (depth == 0)
                    return 0; /* unbalanced: let the toolkit judge */
                depth--;
                implicit = implicit_at[depth];
            } else {
                return 0;
            }
            continue;
        }
        if (g == 0xffff || g < 0x0002)
            return 0; /* not a data element: no structure to judge */
        if (g == 0x7fe0 && e == 0x0010 && depth == 0) { /* pixel data: the header is sound */
            size_t hdr = implicit ? 8 : long_vr(data + w.pos + 4) ? 12 : 8;
            if (w.pos + hdr <= len) {
                info->pixel_at = w.pos + hdr;
                info->pixel_len = u32(&w, w.pos + hdr - 4, big);
                info->complete = sane && (implicit || vr_letters(data + w.pos + 4));
            }
            return 0;
        }
        uint32_t l;
        bool sq = false;
        const uint8_t *vr = NULL;
        if (implicit) {
            l = u32(&w, w.pos + 4, false);
            w.pos += 8;
            sq = l == UNDEFINED;
        } else {
            vr = data + w.pos + 4;
            sane = sane && vr_letters(vr);
            if (long_vr(vr)) {
                if (w.pos + 12 > len)
                    return 0;
                l = u32(&w, w.pos + 8, big);
                w.pos += 12;
                sq = (vr[0] == 'S' && vr[1] == 'Q') || l == UNDEFINED;
            } else {
                l = u16(&w, w.pos + 6, big);
                w.pos += 8;
            }
            if (sq && l == UNDEFINED && vr[0] == 'U' && vr[1] == 'N') {
                /* UN of undefined length holds implicit VR little endian items */
                if (depth >= MAX_LEVELS || depth >= max_depth)
                    goto too_deep;
                implicit_at[depth] = implicit;
                end[depth++] = SIZE_MAX;
                implicit = true;
                continue;
            }
        }
        if (depth == 0)
            record(info, (uint32_t)g << 16 | e, vr, w.pos, l);
        if (sq) {
            if (depth >= MAX_LEVELS || depth >= max_depth)
                goto too_deep;
            implicit_at[depth] = implicit;
            end[depth++] = l == UNDEFINED || l > len - w.pos ? SIZE_MAX : w.pos + l;
            continue;
        }
        if (l > len - w.pos)
            return 0; /* truncated: the toolkit will say so */
        w.pos += l;
    }
    info->complete = sane && depth == 0 && w.pos == len; /* a header without pixel data */
    return 0;

too_deep:
    if (why != NULL && why_len > 0)
        snprintf(why, why_len, "sequences nested deeper than %d levels at byte %zu", max_depth,
                 w.pos);
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
