/* infer: safetensors files (mmunet.md 4.1, rules 1 to 3 of 4.3). The rules and messages are
 * those of tools/mmunet/export.py (parse_safetensors, read_model); the JSON is read by
 * infer/json.c.
 * Threads: any; an open file is read-only and may be shared. */
#include "infer/model-impl.h"

#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/err.h"
#include "common/sha256.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "F32 tensors are used in place: a little-endian host is required"
#endif

#define HEADER_MAX (100u * 1024 * 1024)
#define COUNT_LIMIT ((int64_t)1 << 62) /* export.py: "element count overflows" */
#define REPR_MAX 256

enum dtype {
    DT_F32,
    DT_F16,
    DT_BF16,
};

static const char *const dtype_names[] = {"F32", "F16", "BF16"};
static const int dtype_sizes[] = {4, 2, 2};

struct entry {
    struct mms_tensor t;
    enum dtype dt;
    int index; /* in the header */
    int64_t begin, end;
};

struct mms_st {
    const uint8_t *map;
    size_t size;
    cJSON *header;
    const cJSON *meta; /* the __metadata__ object, or NULL */
    int n;
    struct entry *entries;  /* in header order */
    struct entry **by_name; /* sorted by name */
    float *owned;           /* converted and copied data */
    char sha256[65];
};

/* ----------------------------------------------------------------------------- the file */
int
mms__failf(char *why, size_t why_len, int rc, const char *path, const char *fmt, ...)
{
    va_list ap;
    int k;

    if (why == NULL || why_len == 0)
        return rc;
    k = snprintf(why, why_len, "%s: ", path);
    if (k >= 0 && (size_t)k < why_len) {
        va_start(ap, fmt);
        vsnprintf(why + k, why_len - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* The first invalid UTF-8 sequence of s (overlong forms, surrogates and code points above
 * U+10FFFF are invalid), described as Python's decoder does; false when s is valid. */
static bool
utf8_invalid(const uint8_t *s, size_t n, char *text, size_t text_len)
{
    size_t i = 0;

    while (i < n) {
        uint8_t c = s[i], lo = 0x80, hi = 0xbf;
        size_t k;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            lo = c == 0xe0 ? 0xa0 : 0x80; /* overlong */
            hi = c == 0xed ? 0x9f : 0xbf; /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            lo = c == 0xf0 ? 0x90 : 0x80; /* overlong */
            hi = c == 0xf4 ? 0x8f : 0xbf; /* above U+10FFFF */
        } else {
            snprintf(text, text_len, "byte 0x%02x in position %zu: invalid start byte", c, i);
            return true;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n) {
                if (n - 1 == i)
                    snprintf(text, text_len, "byte 0x%02x in position %zu: unexpected end of data",
                             c, i);
                else
                    snprintf(text, text_len, "bytes in position %zu-%zu: unexpected end of data", i,
                             n - 1);
                return true;
            }
            if (s[i + j] < (j == 1 ? lo : 0x80) || s[i + j] > (j == 1 ? hi : 0xbf)) {
                snprintf(text, text_len, "byte 0x%02x in position %zu: invalid continuation byte",
                         c, i);
                return true;
            }
        }
        i += k + 1;
    }
    return false;
}

static bool
is_int(const cJSON *v)
{
    return v != NULL && cJSON_IsNumber(v) && (v->type & MMS__JSON_INT) != 0;
}

/* An integer for a message: Python has no negative zero. */
static double
int_value(const cJSON *v)
{
    return v->valuedouble == 0 ? 0.0 : v->valuedouble;
}

static float
f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    float f;

    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | man << 13;
    } else if (exp != 0) {
        bits = sign | (exp + 112) << 23 | man << 13;
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: normalise the mantissa */
        uint32_t e = 113;
        while ((man & 0x400) == 0) {
            man <<= 1;
            e--;
        }
        bits = sign | e << 23 | (man & 0x3ff) << 13;
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float
bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;

    memcpy(&f, &bits, sizeof f);
    return f;
}

static bool
all_finite(const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], sizeof bits);
        if ((bits & 0x7f800000u) == 0x7f800000u)
            return false;
    }
    return true;
}

/* Rule 2 for one header entry: dtype, shape, count, offsets and size. */
static int
check_entry(const cJSON *item, struct entry *e, size_t dsize, const char *path, char *why,
            size_t why_len)
{
    char name[REPR_MAX], text[REPR_MAX];
    const cJSON *dt, *shape, *off, *v;
    int64_t count = 1, nbytes;
    double b, en;
    bool good;
    int k;

    mms__py_repr(name, sizeof name, item->string);
    dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsObject(item) || cJSON_GetArraySize(item) != 3 || dt == NULL || shape == NULL ||
        off == NULL)
        return mms__failf(why, why_len, MMS_EMODEL, path,
                          "tensor %s: entry needs exactly dtype, shape, data_offsets", name);
    for (k = 0; k < 3; k++)
        if (cJSON_IsString(dt) && strcmp(dt->valuestring, dtype_names[k]) == 0)
            break;
    if (k == 3) {
        if (cJSON_IsString(dt))
            snprintf(text, sizeof text, "%s", dt->valuestring);
        else
            mms__py_dumps(text, sizeof text, dt, true);
        return mms__failf(why, why_len, MMS_EMODEL, path,
                          "tensor %s: dtype %s is not F32, F16 or BF16", name, text);
    }
    e->dt = (enum dtype)k;
    good = cJSON_IsArray(shape) && cJSON_GetArraySize(shape) <= 5;
    if (good) {
        cJSON_ArrayForEach(v, shape) good = good && is_int(v) && v->valuedouble >= 0;
    }
    if (!good) {
        mms__py_dumps(text, sizeof text, shape, false);
        return mms__failf(why, why_len, MMS_EMODEL, path,
                          "tensor %s: bad shape %s (rank <= 5, dims >= 0)", name, text);
    }
    e->t.rank = cJSON_GetArraySize(shape);
    k = 0;
    cJSON_ArrayForEach(v, shape)
    {
        /* As export.py: the running product may not reach 2^62 (a zero stops it growing). */
        if (v->valuedouble >= 9223372036854775807.0 ||
            (count != 0 && v->valuedouble >= (double)COUNT_LIMIT))
            return mms__failf(why, why_len, MMS_EMODEL, path, "tensor %s: element count overflows",
                              name);
        e->t.shape[k] = (int64_t)v->valuedouble;
        if (__builtin_mul_overflow(count, e->t.shape[k], &count) || count >= COUNT_LIMIT)
            return mms__failf(why, why_len, MMS_EMODEL, path, "tensor %s: element count overflows",
                              name);
        k++;
    }
    e->t.count = count;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !is_int(off->child) ||
        !is_int(off->child->next))
        return mms__failf(why, why_len, MMS_EMODEL, path,
                          "tensor %s: data_offsets must be two integers", name);
    b = int_value(off->child);
    en = int_value(off->child->next);
    if (!(0 <= b && b <= en && en <= (double)dsize))
        return mms__failf(why, why_len, MMS_EMODEL, path,
                          "tensor %s: offsets [%.0f, %.0f] outside the data (%zu bytes)", name, b,
                          en, dsize);
    e->begin = (int64_t)b;
    e->end = (int64_t)en;
    nbytes = e->end - e->begin;
    if (count > INT64_MAX / dtype_sizes[e->dt] || nbytes != count * dtype_sizes[e->dt])
        return mms__failf(why, why_len, MMS_EMODEL, path,
                          "tensor %s: %" PRId64 " bytes for %" PRId64 " %s elements", name, nbytes,
                          count, dtype_names[e->dt]);
    return 0;
}

static int
by_offset(const void *a, const void *b)
{
    const struct entry *x = *(const struct entry *const *)a, *y = *(const struct entry *const *)b;

    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

static int
by_name(const void *a, const void *b)
{
    const struct entry *x = *(const struct entry *const *)a, *y = *(const struct entry *const *)b;
    return strcmp(x->t.name, y->t.name);
}

/* Sorted by begin, the ranges start at 0, touch, and end at the data's size. */
static int
check_layout(struct mms_st *st, size_t dsize, const char *path, char *why, size_t why_len)
{
    int64_t pos = 0;
    char name[REPR_MAX];

    for (int i = 0; i < st->n; i++)
        st->by_name[i] = &st->entries[i];
    qsort(st->by_name, (size_t)st->n, sizeof *st->by_name, by_offset);
    for (int i = 0; i < st->n; i++) {
        const struct entry *e = st->by_name[i];
        if (e->begin != pos) {
            mms__py_repr(name, sizeof name, e->t.name);
            return mms__failf(why, why_len, MMS_EMODEL, path,
                              "tensor %s: data at %" PRId64 ", expected %" PRId64 " (%s)", name,
                              e->begin, pos, e->begin < pos ? "overlap" : "hole");
        }
        pos = e->end;
    }
    if ((uint64_t)pos != dsize)
        return mms__failf(why, why_len, MMS_EMODEL, path,
                          "tensors end at %" PRId64 ", the data is %zu bytes", pos, dsize);
    return 0;
}

/* Point each tensor at F32 data (in place, or converted/copied into st->owned) and check
 * rule 3 in header order. */
static int
load_data(struct mms_st *st, const uint8_t *base, const char *path, char *why, size_t why_len)
{
    size_t owned = 0, at = 0;
    bool copies = false;
    char name[REPR_MAX];

    for (int i = 0; i < st->n; i++) {
        const struct entry *e = &st->entries[i];
        if (e->dt != DT_F32 || (uintptr_t)(base + e->begin) % sizeof(float) != 0) {
            owned += (size_t)e->t.count; /* bounded by the file size */
            copies = true;
        }
    }
    if (copies) {
        /* One spare element: empty tensors get a valid, aligned pointer too. */
        st->owned = malloc((owned + 1) * sizeof(float));
        if (st->owned == NULL)
            return mms__failf(why, why_len, MMS_ENOMEM, path, "%s", mms_strerror(MMS_ENOMEM));
    }
    for (int i = 0; i < st->n; i++) {
        struct entry *e = &st->entries[i];
        const uint8_t *src = base + e->begin;
        int64_t n = e->t.count;

        if (e->dt == DT_F32 && (uintptr_t)src % sizeof(float) == 0) {
            e->t.data = (const float *)(const void *)src;
        } else {
            float *dst = st->owned + at;
            at += (size_t)n;
            if (e->dt == DT_F32 && n > 0)
                memcpy(dst, src, (size_t)n * sizeof(float));
            else if (e->dt == DT_F16)
                for (int64_t j = 0; j < n; j++)
                    dst[j] = f16_to_f32((uint16_t)(src[2 * j] | src[2 * j + 1] << 8));
            else
                for (int64_t j = 0; j < n; j++)
                    dst[j] = bf16_to_f32((uint16_t)(src[2 * j] | src[2 * j + 1] << 8));
            e->t.data = dst;
        }
        if (!all_finite(e->t.data, n)) {
            mms__py_repr(name, sizeof name, e->t.name);
            return mms__failf(why, why_len, MMS_EMODEL, path, "tensor %s: NaN or infinite value",
                              name);
        }
    }
    return 0;
}

int
mms__st_open(const char *path, struct mms_st **out, char *why, size_t why_len)
{
    struct mms__json_error jerr;
    struct mms_st *st;
    struct stat sb;
    const uint8_t *hdr;
    const cJSON *item;
    uint64_t nh = 0;
    size_t size, dsize, body, end;
    char text[96];
    int fd, rc, i;

    if (path == NULL || out == NULL)
        return MMS_EINVAL;
    st = calloc(1, sizeof *st);
    if (st == NULL)
        return mms__failf(why, why_len, MMS_ENOMEM, path, "%s", mms_strerror(MMS_ENOMEM));
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        rc = mms_err_errno();
        mms__failf(why, why_len, rc, path, "open: %s", mms_strerror(rc));
        goto fail;
    }
    if (fstat(fd, &sb) != 0) {
        rc = mms_err_errno();
        mms__failf(why, why_len, rc, path, "fstat: %s", mms_strerror(rc));
        goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
        rc = mms__failf(why, why_len, MMS_EISDIR, path, "open: %s", mms_strerror(MMS_EISDIR));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        rc = mms__failf(why, why_len, MMS_EMODEL, path, "not a regular file");
        goto fail;
    }
    if ((uintmax_t)sb.st_size > SIZE_MAX) {
        rc = mms__failf(why, why_len, MMS_EMODEL, path, "file too large to map");
        goto fail;
    }
    size = (size_t)sb.st_size;
    /* Rule 1: the header length, the header. */
    if (size < 8) {
        rc = mms__failf(why, why_len, MMS_EMODEL, path,
                        "file of %zu bytes is shorter than the 8-byte header length", size);
        goto fail;
    }
    st->map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (st->map == MAP_FAILED) {
        st->map = NULL;
        rc = mms_err_errno();
        mms__failf(why, why_len, rc, path, "mmap: %s", mms_strerror(rc));
        goto fail;
    }
    st->size = size;
    close(fd);
    fd = -1;
    for (i = 7; i >= 0; i--)
        nh = nh << 8 | st->map[i];
    if (nh > (uint64_t)(size - 8) || nh > HEADER_MAX) {
        rc = mms__failf(why, why_len, MMS_EMODEL, path,
                        "header length %" PRIu64 " exceeds the file (%zu bytes) or 100 MB", nh,
                        size);
        goto fail;
    }
    hdr = st->map + 8;
    if (utf8_invalid(hdr, (size_t)nh, text, sizeof text)) {
        rc = mms__failf(why, why_len, MMS_EMODEL, path,
                        "header is not valid UTF-8 ('utf-8' codec can't decode %s)", text);
        goto fail;
    }
    body = (size_t)nh;
    while (body > 0 && hdr[body - 1] == ' ')
        body--;
    if (body == 0 || hdr[0] != '{') {
        rc = mms__failf(why, why_len, MMS_EMODEL, path, "header does not start with '{'");
        goto fail;
    }
    rc = mms__json_parse((const char *)hdr, body, MMS__JSON_RAW, &st->header, &end, &jerr);
    if (rc == MMS_EMODEL && jerr.duplicate) {
        mms__failf(why, why_len, rc, path, "header: duplicate key %s", jerr.key);
        goto fail;
    }
    if (rc == MMS_EMODEL) {
        mms__failf(why, why_len, rc, path, "header is not JSON (%s at %" PRId64 ")", jerr.msg,
                   jerr.pos);
        goto fail;
    }
    if (rc < 0) {
        mms__failf(why, why_len, rc, path, "%s", mms_strerror(rc));
        goto fail;
    }
    if (end != body) {
        rc = mms__failf(why, why_len, MMS_EMODEL, path,
                        "header has text after its JSON object other than spaces");
        goto fail;
    }
    if (!cJSON_IsObject(st->header)) {
        rc = mms__failf(why, why_len, MMS_EMODEL, path, "header is not a JSON object");
        goto fail;
    }
    st->meta = cJSON_GetObjectItemCaseSensitive(st->header, "__metadata__");
    if (st->meta != NULL) {
        bool strings = cJSON_IsObject(st->meta);
        cJSON_ArrayForEach(item, st->meta) strings = strings && cJSON_IsString(item);
        if (!strings) {
            rc = mms__failf(why, why_len, MMS_EMODEL, path,
                            "__metadata__ must map strings to strings");
            goto fail;
        }
    }
    /* Rule 2: each entry, then the layout of the data. */
    dsize = size - 8 - (size_t)nh;
    st->n = cJSON_GetArraySize(st->header) - (st->meta != NULL);
    st->entries = calloc((size_t)st->n + 1, sizeof *st->entries);
    st->by_name = calloc((size_t)st->n + 1, sizeof *st->by_name);
    if (st->entries == NULL || st->by_name == NULL) {
        rc = mms__failf(why, why_len, MMS_ENOMEM, path, "%s", mms_strerror(MMS_ENOMEM));
        goto fail;
    }
    i = 0;
    cJSON_ArrayForEach(item, st->header)
    {
        struct entry *e = &st->entries[i];
        if (item == st->meta)
            continue;
        e->t.name = item->string;
        e->index = i++;
        rc = check_entry(item, e, dsize, path, why, why_len);
        if (rc < 0)
            goto fail;
    }
    rc = check_layout(st, dsize, path, why, why_len);
    if (rc < 0)
        goto fail;
    /* Rule 3, with the data in F32. */
    rc = load_data(st, hdr + nh, path, why, why_len);
    if (rc < 0)
        goto fail;
    qsort(st->by_name, (size_t)st->n, sizeof *st->by_name, by_name);
    {
        struct mms_sha256 h;
        uint8_t d[32];
        mms_sha256_init(&h);
        mms_sha256_update(&h, st->map, st->size);
        mms_sha256_final(&h, d);
        mms_sha256_hex(d, st->sha256);
    }
    *out = st;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    mms__st_close(st);
    return rc;
}

void
mms__st_close(struct mms_st *st)
{
    if (st == NULL)
        return;
    free(st->owned);
    free(st->by_name);
    free(st->entries);
    cJSON_Delete(st->header);
    if (st->map != NULL)
        munmap((void *)st->map, st->size);
    free(st);
}

int
mms__st_count(const struct mms_st *st)
{
    return st->n;
}

const struct mms_tensor *
mms__st_tensor(const struct mms_st *st, int i)
{
    return i >= 0 && i < st->n ? &st->entries[i].t : NULL;
}

static int
find_cmp(const void *key, const void *elem)
{
    const struct entry *e = *(const struct entry *const *)elem;
    return strcmp(key, e->t.name);
}

const struct mms_tensor *
mms__st_find(const struct mms_st *st, const char *name)
{
    struct entry **e = bsearch(name, st->by_name, (size_t)st->n, sizeof *st->by_name, find_cmp);
    return e != NULL ? &(*e)->t : NULL;
}

const char *
mms__st_meta(const struct mms_st *st, const char *key)
{
    const cJSON *v = st->meta != NULL ? cJSON_GetObjectItemCaseSensitive(st->meta, key) : NULL;
    return v != NULL ? v->valuestring : NULL;
}

const char *
mms__st_sha256(const struct mms_st *st)
{
    return st->sha256;
}
