/* Configuration: one declarative table of keys, read with inih. Threads: loop thread. */
#include "daemon/config.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cpus.h"
#include "common/err.h"
#include "common/log.h"
#include "common/net.h"
#include "common/uid.h"
#include "daemon/index.h"

enum cfg_type {
    T_STR,     /* any text, char * */
    T_PATH,    /* a path, char *; relative paths are resolved against the file's directory */
    T_PATHS,   /* paths separated by ',', each resolved as T_PATH; char * */
    T_AE,      /* a DICOM AE title: 1 to 16 printable ASCII characters, no backslash; char * */
    T_UINT,    /* unsigned */
    T_U64,     /* uint64_t */
    T_DBL,     /* double */
    T_BOOL,    /* bool: yes or no */
    T_ENUM,    /* int, from a list of choices */
    T_DEVICES, /* struct mms_devices: "all", or device indexes within min..max, comma-separated */
};

/* Flags of a key. */
#define RELOAD 0x1 /* a running daemon applies a new value on SIGHUP */
#define NOTYET 0x2 /* the feature is not built yet: only the default value is accepted */

struct choice {
    const char *name;
    int value;
};

struct cfg_key {
    const char *section; /* NULL in the destination table */
    const char *key;
    enum cfg_type type;
    size_t offset;
    const char *def;              /* parsed by the same code as the file; NULL = zero/NULL */
    double min, max;              /* for T_UINT, T_U64, T_DBL */
    const struct choice *choices; /* for T_ENUM, ends with {NULL, 0} */
    unsigned flags;
};

static const struct choice log_levels[] = {{"err", 3},  {"warning", 4}, {"notice", 5},
                                           {"info", 6}, {"debug", 7},   {NULL, 0}};
static const struct choice backends[] = {
    {"auto", MMS_BACKEND_AUTO}, {"cpu", MMS_BACKEND_CPU}, {"cuda", MMS_BACKEND_CUDA}, {NULL, 0}};
static const struct choice precisions[] = {{"fp32", MMS_PRECISION_FP32},
                                           {"fp16", MMS_PRECISION_FP16},
                                           {"bf16", MMS_PRECISION_BF16},
                                           {NULL, 0}};
static const struct choice exports[] = {
    {"exact", MMS_EXPORT_EXACT}, {"fast", MMS_EXPORT_FAST}, {NULL, 0}};
static const struct choice sop_classes[] = {
    {"ct", MMS_ACCEPT_CT}, {"all", MMS_ACCEPT_ALL}, {NULL, 0}};
static const struct choice seg_types[] = {
    {"binary", MMS_SEG_TYPE_BINARY}, {"labelmap", MMS_SEG_TYPE_LABELMAP}, {NULL, 0}};
static const struct choice empty_frames[] = {
    {"omit", MMS_EMPTY_FRAMES_OMIT}, {"keep", MMS_EMPTY_FRAMES_KEEP}, {NULL, 0}};
static const struct choice dest_types[] = {{"dicom", MMS_DEST_DICOM},
                                           {"folder", MMS_DEST_FOLDER},
                                           {"dicomweb", MMS_DEST_DICOMWEB},
                                           {NULL, 0}};
static const struct choice auths[] = {
    {"none", 0}, {"basic", 1}, {"bearer", 2}, {NULL, 0}}; /* enum mms_stow_auth */

#define OFF(field) offsetof(struct mms_config, field)
#define DOFF(field) offsetof(struct mms_dest_config, field)
#define UMAX 4294967295.0

/* The keys, in the order check-config prints them. Units are in the names. */
static const struct cfg_key main_keys[] = {
    {"daemon", "state_dir", T_PATH, OFF(daemon.state_dir), "/var/lib/mmsegd", 0, 0, NULL, 0},
    {"daemon", "log_level", T_ENUM, OFF(daemon.log_level), "info", 0, 0, log_levels, RELOAD},
    {"daemon", "workers", T_UINT, OFF(daemon.workers), "2", 1, 64, NULL, 0},
    {"daemon", "metrics_listen", T_STR, OFF(daemon.metrics_listen), "", 0, 0, NULL, 0},
    {"daemon", "status_page_phi", T_BOOL, OFF(daemon.status_page_phi), "no", 0, 0, NULL, RELOAD},
    {"daemon", "quarantine_max_mb", T_UINT, OFF(daemon.quarantine_max_mb), "1024", 0, 1048576, NULL,
     RELOAD},
    {"daemon", "quarantine_max_days", T_UINT, OFF(daemon.quarantine_max_days), "30", 0, 36500, NULL,
     RELOAD},
    {"daemon", "isolate", T_BOOL, OFF(daemon.isolate), "yes", 0, 0, NULL, 0},
    {"daemon", "decode_max_memory_mb", T_UINT, OFF(daemon.decode_max_memory_mb), "8192", 0, UMAX,
     NULL, 0},
    {"daemon", "decode_timeout_s", T_UINT, OFF(daemon.decode_timeout_s), "600", 1, 86400, NULL, 0},
    {"daemon", "database", T_STR, OFF(daemon.database), "sqlite", 0, 0, NULL, 0},
    {"daemon", "node", T_STR, OFF(daemon.node), "", 0, 0, NULL, 0},
    {"daemon", "roles", T_STR, OFF(daemon.roles), "intake,infer,send", 0, 0, NULL, 0},
    {"daemon", "lease_s", T_UINT, OFF(daemon.lease_s), "30", 3, 3600, NULL, 0},

    {"scp", "ae_title", T_AE, OFF(scp.ae_title), "MMSEGD", 0, 0, NULL, 0},
    {"scp", "bind", T_STR, OFF(scp.bind), "0.0.0.0", 0, 0, NULL, 0},
    {"scp", "port", T_UINT, OFF(scp.port), "11112", 1, 65535, NULL, 0},
    {"scp", "allowed_calling_aes", T_STR, OFF(scp.allowed_calling_aes), "", 0, 0, NULL, 0},
    {"scp", "allowed_hosts", T_STR, OFF(scp.allowed_hosts), "", 0, 0, NULL, 0},
    {"scp", "max_associations", T_UINT, OFF(scp.max_associations), "16", 1, 1024, NULL, 0},
    {"scp", "max_associations_per_host", T_UINT, OFF(scp.max_associations_per_host), "4", 0, 1024,
     NULL, 0},
    {"scp", "assoc_timeout_s", T_UINT, OFF(scp.assoc_timeout_s), "10", 1, 300, NULL, 0},
    {"scp", "max_pdu", T_UINT, OFF(scp.max_pdu), "65536", 4096, 131072, NULL, 0},
    {"scp", "timeout_s", T_UINT, OFF(scp.timeout_s), "30", 1, 3600, NULL, 0},
    {"scp", "min_free_mb", T_UINT, OFF(scp.min_free_mb), "1024", 0, UMAX, NULL, 0},
    {"scp", "accept_sop_classes", T_ENUM, OFF(scp.accept_sop_classes), "ct", 0, 0, sop_classes, 0},
    {"scp", "tls_cert", T_PATH, OFF(scp.tls_cert), "", 0, 0, NULL, RELOAD},
    {"scp", "tls_key", T_PATH, OFF(scp.tls_key), "", 0, 0, NULL, RELOAD},
    {"scp", "tls_ca", T_PATH, OFF(scp.tls_ca), "", 0, 0, NULL, RELOAD},

    {"drop", "dir", T_PATH, OFF(drop.dir), "", 0, 0, NULL, 0},
    {"drop", "stable_s", T_UINT, OFF(drop.stable_s), "5", 1, 86400, NULL, 0},
    {"drop", "scan_s", T_UINT, OFF(drop.scan_s), "30", 1, 86400, NULL, 0},

    {"series", "stable_age_s", T_UINT, OFF(series.stable_age_s), "20", 1, 86400, NULL, 0},
    {"series", "min_slices", T_UINT, OFF(series.min_slices), "10", 1, 100000, NULL, 0},
    {"series", "body_parts", T_STR, OFF(series.body_parts), "", 0, 0, NULL, 0},
    {"series", "description_include", T_STR, OFF(series.description_include), "", 0, 0, NULL, 0},
    {"series", "description_exclude", T_STR, OFF(series.description_exclude), "", 0, 0, NULL, 0},
    {"series", "max_slice_thickness_mm", T_DBL, OFF(series.max_slice_thickness_mm), "0", 0, 1000,
     NULL, 0},
    {"series", "max_gap_ratio", T_DBL, OFF(series.max_gap_ratio), "2.0", 1.01, 100, NULL, 0},
    {"series", "allow_gaps", T_BOOL, OFF(series.allow_gaps), "no", 0, 0, NULL, 0},
    {"series", "max_voxels", T_U64, OFF(series.max_voxels), "1000000000", 1, 1e12, NULL, 0},
    {"series", "decode_threads", T_UINT, OFF(series.decode_threads), "0", 0, 256, NULL, 0},

    {"infer", "model", T_PATHS, OFF(infer.model), "/usr/share/mmsegd/models/demo.safetensors", 0, 0,
     NULL, RELOAD},
    {"infer", "backend", T_ENUM, OFF(infer.backend), "auto", 0, 0, backends, 0},
    {"infer", "device", T_DEVICES, OFF(infer.devices), "0", 0, 63, NULL, 0},
    {"infer", "threads", T_UINT, OFF(infer.threads), "0", 0, 1024, NULL, 0},
    {"infer", "cpus", T_STR, OFF(infer.cpus), "", 0, 0, NULL, 0},
    {"infer", "tta", T_BOOL, OFF(infer.tta), "yes", 0, 0, NULL, 0},
    {"infer", "postprocessing", T_BOOL, OFF(infer.postprocessing), "yes", 0, 0, NULL, 0},
    {"infer", "tile_step", T_DBL, OFF(infer.tile_step), "0.5", 0.1, 1.0, NULL, 0},
    {"infer", "max_memory_mb", T_UINT, OFF(infer.max_memory_mb), "0", 0, UMAX, NULL, 0},
    {"infer", "max_device_memory_mb", T_UINT, OFF(infer.max_device_memory_mb), "0", 0, UMAX, NULL,
     0},
    {"infer", "precision", T_ENUM, OFF(infer.precision), "fp32", 0, 0, precisions, 0},
    {"infer", "export", T_ENUM, OFF(infer.export_mode), "exact", 0, 0, exports, NOTYET},

    {"seg", "type", T_ENUM, OFF(seg.type), "binary", 0, 0, seg_types, 0},
    {"seg", "empty_frames", T_ENUM, OFF(seg.empty_frames), "omit", 0, 0, empty_frames, 0},
    {"seg", "series_description", T_STR, OFF(seg.series_description), "", 0, 0, NULL, 0},
    {"seg", "preview_sc", T_BOOL, OFF(seg.preview_sc), "no", 0, 0, NULL, 0},
    {"seg", "rtstruct", T_BOOL, OFF(seg.rtstruct), "no", 0, 0, NULL, 0},
};

/* The keys of each [destination NAME] section. */
static const struct cfg_key dest_keys[] = {
    {NULL, "type", T_ENUM, DOFF(type), "dicom", 0, 0, dest_types, 0},
    {NULL, "ae_title", T_AE, DOFF(ae_title), NULL, 0, 0, NULL, 0},
    {NULL, "host", T_STR, DOFF(host), NULL, 0, 0, NULL, 0},
    {NULL, "port", T_UINT, DOFF(port), NULL, 1, 65535, NULL, 0},
    {NULL, "calling_ae", T_AE, DOFF(calling_ae), "MMSEGD", 0, 0, NULL, 0},
    {NULL, "tls", T_BOOL, DOFF(tls), "no", 0, 0, NULL, 0},
    {NULL, "path", T_PATH, DOFF(path), NULL, 0, 0, NULL, 0},
    {NULL, "url", T_STR, DOFF(url), NULL, 0, 0, NULL, 0},
    {NULL, "auth", T_ENUM, DOFF(auth), "none", 0, 0, auths, 0},
    {NULL, "credentials_file", T_PATH, DOFF(credentials_file), NULL, 0, 0, NULL, 0},
    {NULL, "ca_file", T_PATH, DOFF(ca_file), "", 0, 0, NULL, 0},
    {NULL, "verify_tls", T_BOOL, DOFF(verify_tls), "yes", 0, 0, NULL, 0},
    {NULL, "max_request_mb", T_UINT, DOFF(max_request_mb), "100", 1, 4096, NULL, 0},
    {NULL, "outputs", T_STR, DOFF(outputs), "", 0, 0, NULL, 0},
    {NULL, "retry_initial_s", T_UINT, DOFF(retry_initial_s), "10", 1, 86400, NULL, 0},
    {NULL, "retry_multiplier", T_DBL, DOFF(retry_multiplier), "2.0", 1.0, 10.0, NULL, 0},
    {NULL, "retry_max_s", T_UINT, DOFF(retry_max_s), "900", 1, 604800, NULL, 0},
    {NULL, "retry_max_age_s", T_UINT, DOFF(retry_max_age_s), "86400", 1, 2592000, NULL, 0},
};

#define N_MAIN (sizeof main_keys / sizeof main_keys[0])
#define N_DEST (sizeof dest_keys / sizeof dest_keys[0])
#define DEST_NAME_MAX 64
#define CONFIG_MAX_BYTES (1 << 20) /* a configuration is a few KiB of text */

static const char *const sections[] = {"daemon", "scp", "drop", "series", "infer", "seg"};

enum sec_kind { SEC_NONE, SEC_MAIN, SEC_DEST, SEC_BAD };

struct dest_lines {
    unsigned header;
    unsigned key[N_DEST];
};

struct loader {
    const char *path;
    char *dir; /* directory of path, for relative paths */
    FILE *f;
    char *buf; /* getline buffer */
    size_t cap;
    unsigned lineno;

    enum sec_kind sec;
    const char *sec_name; /* points into sections[] for SEC_MAIN */
    struct mms_dest_config *dest;
    struct dest_lines *dest_lines;

    struct mms_config *cfg;
    unsigned key_line[N_MAIN];
    struct dest_lines *lines; /* one per cfg->dests entry */

    char *err;
    size_t errlen, errused;
    int nerr;
    bool oom;
};

static void report(struct loader *ld, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
report(struct loader *ld, unsigned line, const char *fmt, ...)
{
    va_list ap;
    int n;

    ld->nerr++;
    if (ld->err == NULL || ld->errused + 1 >= ld->errlen)
        return;
    if (line > 0)
        n = snprintf(ld->err + ld->errused, ld->errlen - ld->errused, "%s:%u: ", ld->path, line);
    else
        n = snprintf(ld->err + ld->errused, ld->errlen - ld->errused, "%s: ", ld->path);
    if (n < 0 || (size_t)n >= ld->errlen - ld->errused)
        goto full;
    ld->errused += (size_t)n;
    va_start(ap, fmt);
    n = vsnprintf(ld->err + ld->errused, ld->errlen - ld->errused, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n + 1 >= ld->errlen - ld->errused)
        goto full;
    ld->errused += (size_t)n;
    ld->err[ld->errused++] = '\n';
    ld->err[ld->errused] = '\0';
    return;
full:
    ld->errused = ld->errlen; /* keep what fitted, add nothing more */
}

static char **
str_field(void *base, const struct cfg_key *k)
{
    return (char **)((char *)base + k->offset);
}

static const char *
section_label(const struct loader *ld, char *tmp, size_t len)
{
    if (ld->sec == SEC_DEST)
        snprintf(tmp, len, "destination %s", ld->dest->name);
    else
        snprintf(tmp, len, "%s", ld->sec_name);
    return tmp;
}

static bool
valid_ae(const char *s)
{
    size_t n = strlen(s);
    bool nonblank = false;

    if (n == 0 || n > 16)
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < 0x20 || *p > 0x7e || *p == '\\')
            return false;
        if (*p != ' ')
            nonblank = true;
    }
    return nonblank;
}

/* Parse text for key k into base. Returns 0, MMS_ENOMEM, or MMS_EINVAL with why[] filled. */
static int
parse_value(const struct loader *ld, const struct cfg_key *k, const char *text, void *base,
            char *why, size_t whylen)
{
    void *field = (char *)base + k->offset;
    char *end;

    switch (k->type) {
    case T_PATHS: {
        /* each item as T_PATH, blanks around it dropped, joined by ',' again: at most the
         * text plus "dir/" before each item */
        size_t items = 1, dir = ld != NULL && ld->dir != NULL ? strlen(ld->dir) + 1 : 0;
        for (const char *t = strchr(text, ','); t != NULL; t = strchr(t + 1, ','))
            items++;
        size_t len = strlen(text) + 1 + items * dir;
        char *copy = malloc(len), *item = strdup(text), *save = NULL;
        if (copy == NULL || item == NULL) {
            free(copy);
            free(item);
            return MMS_ENOMEM;
        }
        copy[0] = '\0';
        for (char *t = strtok_r(item, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ' || *t == '\t')
                t++;
            for (char *e = t + strlen(t); e > t && (e[-1] == ' ' || e[-1] == '\t');)
                *--e = '\0';
            if (copy[0] != '\0')
                strcat(copy, ",");
            if (t[0] != '\0' && t[0] != '/' && ld != NULL && ld->dir != NULL) {
                strcat(copy, ld->dir);
                strcat(copy, "/");
            }
            strcat(copy, t);
        }
        free(item);
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    case T_STR:
    case T_PATH:
    case T_AE: {
        char *copy;
        if (k->type == T_AE && !valid_ae(text)) {
            snprintf(why, whylen,
                     "'%s' is not an AE title (1 to 16 printable characters, no backslash)", text);
            return MMS_EINVAL;
        }
        if (k->type == T_PATH && text[0] != '\0' && text[0] != '/' && ld != NULL &&
            ld->dir != NULL) {
            size_t len = strlen(ld->dir) + 1 + strlen(text) + 1;
            copy = malloc(len);
            if (copy != NULL)
                snprintf(copy, len, "%s/%s", ld->dir, text);
        } else {
            copy = strdup(text);
        }
        if (copy == NULL)
            return MMS_ENOMEM;
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    case T_UINT:
    case T_U64: {
        unsigned long long v;
        if (text[0] < '0' || text[0] > '9') {
            snprintf(why, whylen, "'%s' is not an unsigned integer", text);
            return MMS_EINVAL;
        }
        errno = 0;
        v = strtoull(text, &end, 10);
        if (*end != '\0') {
            snprintf(why, whylen, "'%s' is not an unsigned integer", text);
            return MMS_EINVAL;
        }
        if (errno == ERANGE || (double)v < k->min || (double)v > k->max) {
            snprintf(why, whylen, "%s is out of range (%.0f to %.0f)", text, k->min, k->max);
            return MMS_EINVAL;
        }
        if (k->type == T_UINT)
            *(unsigned *)field = (unsigned)v;
        else
            *(uint64_t *)field = (uint64_t)v;
        return 0;
    }
    case T_DBL: {
        double v;
        errno = 0;
        v = strtod(text, &end);
        if (text[0] == '\0' || *end != '\0' || !isfinite(v)) {
            snprintf(why, whylen, "'%s' is not a number", text);
            return MMS_EINVAL;
        }
        if (v < k->min || v > k->max) {
            snprintf(why, whylen, "%s is out of range (%g to %g)", text, k->min, k->max);
            return MMS_EINVAL;
        }
        *(double *)field = v;
        return 0;
    }
    case T_BOOL:
        if (strcmp(text, "yes") == 0) {
            *(bool *)field = true;
        } else if (strcmp(text, "no") == 0) {
            *(bool *)field = false;
        } else {
            snprintf(why, whylen, "'%s' is not a boolean (yes or no)", text);
            return MMS_EINVAL;
        }
        return 0;
    case T_DEVICES: {
        struct mms_devices d = {.all = false, .n = 0};
        if (strcmp(text, "all") == 0) {
            d.all = true;
            d.n = 1;
        } else {
            for (const char *p = text;; p = end + 1) {
                unsigned long v;
                errno = 0;
                v = *p >= '0' && *p <= '9' ? strtoul(p, &end, 10) : (end = (char *)p, 0);
                if (end == p || (*end != ',' && *end != '\0') || errno == ERANGE ||
                    (double)v < k->min || (double)v > k->max) {
                    snprintf(why, whylen,
                             "'%s' is not \"all\" or a list of device indexes (%.0f to %.0f, "
                             "comma-separated)",
                             text, k->min, k->max);
                    return MMS_EINVAL;
                }
                if (d.n == MMS_MAX_ENGINES) {
                    snprintf(why, whylen, "'%s' names more than %d devices", text, MMS_MAX_ENGINES);
                    return MMS_EINVAL;
                }
                d.id[d.n++] = (unsigned)v;
                if (*end == '\0')
                    break;
            }
        }
        *(struct mms_devices *)field = d;
        return 0;
    }
    case T_ENUM: {
        size_t used;
        for (const struct choice *c = k->choices; c->name != NULL; c++) {
            if (strcmp(text, c->name) == 0) {
                *(int *)field = c->value;
                return 0;
            }
        }
        used = (size_t)snprintf(why, whylen, "'%s' is not one of", text);
        for (const struct choice *c = k->choices; c->name != NULL && used < whylen; c++)
            used += (size_t)snprintf(why + used, whylen - used, "%s %s", c == k->choices ? "" : ",",
                                     c->name);
        return MMS_EINVAL;
    }
    }
    return MMS_EINVAL;
}

/* Fill base with the defaults of a table. Returns 0 or MMS_ENOMEM. */
static int
apply_defaults(const struct cfg_key *keys, size_t n, void *base)
{
    char why[256];

    for (size_t i = 0; i < n; i++) {
        int rc;
        if (keys[i].def == NULL)
            continue;
        rc = parse_value(NULL, &keys[i], keys[i].def, base, why, sizeof why);
        if (rc == MMS_ENOMEM)
            return rc;
        if (rc < 0) /* the table itself is wrong: a programming error */
            mms_log(MMS_LOG_ERR, "config: default of %s: %s", keys[i].key, why);
    }
    return 0;
}

static void
free_fields(const struct cfg_key *keys, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++) {
        if (keys[i].type == T_STR || keys[i].type == T_PATH || keys[i].type == T_PATHS ||
            keys[i].type == T_AE) {
            free(*str_field(base, &keys[i]));
            *str_field(base, &keys[i]) = NULL;
        }
    }
}

static bool
field_equal(const struct cfg_key *k, const void *a, const void *b)
{
    const char *fa = (const char *)a + k->offset;
    const char *fb = (const char *)b + k->offset;

    switch (k->type) {
    case T_STR:
    case T_PATH:
    case T_PATHS:
    case T_AE: {
        const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
        return strcmp(sa != NULL ? sa : "", sb != NULL ? sb : "") == 0;
    }
    case T_UINT:
        return *(const unsigned *)fa == *(const unsigned *)fb;
    case T_U64:
        return *(const uint64_t *)fa == *(const uint64_t *)fb;
    case T_DBL:
        return *(const double *)fa == *(const double *)fb;
    case T_BOOL:
        return *(const bool *)fa == *(const bool *)fb;
    case T_ENUM:
        return *(const int *)fa == *(const int *)fb;
    case T_DEVICES: {
        const struct mms_devices *da = (const void *)fa, *db = (const void *)fb;
        return da->all == db->all && da->n == db->n &&
               memcmp(da->id, db->id, (size_t)da->n * sizeof da->id[0]) == 0;
    }
    }
    return false;
}

static void
format_value(const struct cfg_key *k, const void *base, char *out, size_t len)
{
    const char *f = (const char *)base + k->offset;

    switch (k->type) {
    case T_STR:
    case T_PATH:
    case T_PATHS:
    case T_AE: {
        const char *s = *(char *const *)f;
        snprintf(out, len, "%s", s != NULL ? s : "");
        return;
    }
    case T_UINT:
        snprintf(out, len, "%u", *(const unsigned *)f);
        return;
    case T_U64:
        snprintf(out, len, "%llu", (unsigned long long)*(const uint64_t *)f);
        return;
    case T_DBL:
        /* "2.0" rather than "2": the text reads back as the same number and looks like one. */
        snprintf(out, len, "%.15g", *(const double *)f);
        if (strpbrk(out, ".einn") == NULL && strlen(out) + 2 < len)
            strcat(out, ".0");
        return;
    case T_BOOL:
        snprintf(out, len, "%s", *(const bool *)f ? "yes" : "no");
        return;
    case T_ENUM:
        for (const struct choice *c = k->choices; c->name != NULL; c++) {
            if (c->value == *(const int *)f) {
                snprintf(out, len, "%s", c->name);
                return;
            }
        }
        snprintf(out, len, "?");
        return;
    case T_DEVICES: {
        const struct mms_devices *d = (const void *)f;
        size_t used = 0;
        out[0] = '\0';
        if (d->all)
            snprintf(out, len, "all");
        for (int i = 0; !d->all && i < d->n && used < len; i++)
            used += (size_t)snprintf(out + used, len - used, "%s%u", i > 0 ? "," : "", d->id[i]);
        return;
    }
    }
}

static char *
trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        *--e = '\0';
    return s;
}

static bool
valid_dest_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > DEST_NAME_MAX)
        return false;
    for (; *s != '\0'; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-' || *s == '.'))
            return false;
    }
    return true;
}

/* A section header line: "[name]" with an optional comment after it. */
static void
begin_section(struct loader *ld, char *line)
{
    char *close = strchr(line, ']');
    char *name, *rest;

    ld->sec = SEC_BAD;
    ld->dest = NULL;
    if (close == NULL) {
        report(ld, ld->lineno, "section header without ']'");
        return;
    }
    *close = '\0';
    rest = trim(close + 1);
    if (rest[0] != '\0' && rest[0] != ';' && rest[0] != '#') {
        report(ld, ld->lineno, "text after the section header: '%s'", rest);
        return;
    }
    name = trim(line + 1);
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        if (strcmp(name, sections[i]) == 0) {
            ld->sec = SEC_MAIN;
            ld->sec_name = sections[i];
            return;
        }
    }
    if (strncmp(name, "destination", 11) == 0 && (name[11] == ' ' || name[11] == '\0')) {
        char *dname = trim(name + 11);
        struct mms_config *cfg = ld->cfg;
        struct mms_dest_config *d;
        struct dest_lines *dl;

        if (!valid_dest_name(dname)) {
            report(ld, ld->lineno,
                   "[%s]: a destination needs a name of 1 to %d letters, digits, '_', '-' or "
                   "'.': [destination NAME]",
                   name, DEST_NAME_MAX);
            return;
        }
        for (size_t i = 0; i < cfg->n_dests; i++) {
            if (strcmp(cfg->dests[i].name, dname) == 0) {
                report(ld, ld->lineno, "[destination %s]: duplicate destination (first at line %u)",
                       dname, ld->lines[i].header);
                return;
            }
        }
        d = realloc(cfg->dests, (cfg->n_dests + 1) * sizeof *d);
        if (d == NULL)
            goto oom;
        cfg->dests = d;
        dl = realloc(ld->lines, (cfg->n_dests + 1) * sizeof *dl);
        if (dl == NULL)
            goto oom;
        ld->lines = dl;
        d = &cfg->dests[cfg->n_dests];
        dl = &ld->lines[cfg->n_dests];
        memset(d, 0, sizeof *d);
        memset(dl, 0, sizeof *dl);
        cfg->n_dests++; /* counted now so that mms_config_free() releases it */
        dl->header = ld->lineno;
        d->name = strdup(dname);
        if (d->name == NULL || apply_defaults(dest_keys, N_DEST, d) < 0)
            goto oom;
        ld->sec = SEC_DEST;
        ld->dest = d;
        ld->dest_lines = dl;
        return;
    }
    report(ld, ld->lineno, "[%s]: unknown section", name);
    return;
oom:
    ld->oom = true;
}

/* inih reader: reads whole lines itself so that long lines are refused rather than split,
 * handles section headers, and hands inih only lines that fit its buffer. */
static char *
read_line(char *str, int num, void *stream)
{
    struct loader *ld = stream;
    ssize_t n;
    char *line;
    size_t max = num > 3 ? (size_t)num - 3 : 0; /* inih's buffer holds '\r', '\n', '\0' too */

    n = getline(&ld->buf, &ld->cap, ld->f);
    if (n < 0)
        return NULL;
    ld->lineno++;
    line = ld->buf;
    if (ld->lineno == 1 && strncmp(line, "\xEF\xBB\xBF", 3) == 0)
        line += 3;
    while (n > 0 && (ld->buf[n - 1] == '\n' || ld->buf[n - 1] == '\r'))
        ld->buf[--n] = '\0';
    if (strlen(line) != (size_t)(ld->buf + n - line)) {
        report(ld, ld->lineno, "NUL byte in line");
        str[0] = '\0';
        return str;
    }
    /* Leading blanks are dropped: an indented line would otherwise continue the previous
     * value (inih's multi-line values), which this format does not have. */
    line = trim(line);
    str[0] = '\0';
    if (strlen(line) > max) {
        report(ld, ld->lineno, "line longer than %zu characters", max);
        return str;
    }
    if (line[0] == '\0' || line[0] == ';' || line[0] == '#')
        return str;
    if (line[0] == '[') {
        begin_section(ld, line);
        return str;
    }
    if (strpbrk(line, "=:") == NULL) {
        report(ld, ld->lineno, "expected 'key = value'");
        return str;
    }
    memcpy(str, line, strlen(line) + 1);
    return str;
}

static int
on_key(void *user, const char *section, const char *name, const char *value)
{
    struct loader *ld = user;
    const struct cfg_key *keys;
    size_t n;
    void *base;
    unsigned *lines;
    char label[DEST_NAME_MAX + 16];
    char why[512];
    int rc;

    (void)section; /* tracked by read_line(), which sees every header */
    switch (ld->sec) {
    case SEC_NONE:
        report(ld, ld->lineno, "%s: key outside any section", name);
        return 1;
    case SEC_BAD:
        return 1; /* the header was reported */
    case SEC_MAIN:
        keys = main_keys;
        n = N_MAIN;
        base = ld->cfg;
        lines = ld->key_line;
        break;
    case SEC_DEST:
        keys = dest_keys;
        n = N_DEST;
        base = ld->dest;
        lines = ld->dest_lines->key;
        break;
    default:
        return 1;
    }
    section_label(ld, label, sizeof label);
    for (size_t i = 0; i < n; i++) {
        if ((keys[i].section != NULL && strcmp(keys[i].section, ld->sec_name) != 0) ||
            strcmp(keys[i].key, name) != 0)
            continue;
        if (lines[i] != 0) {
            report(ld, ld->lineno, "[%s] %s: set twice (first at line %u)", label, name, lines[i]);
            return 1;
        }
        lines[i] = ld->lineno;
        rc = parse_value(ld, &keys[i], value, base, why, sizeof why);
        if (rc == MMS_ENOMEM)
            ld->oom = true;
        else if (rc < 0)
            report(ld, ld->lineno, "[%s] %s: %s", label, name, why);
        return 1;
    }
    report(ld, ld->lineno, "[%s] %s: unknown key", label, name);
    return 1;
}

/* Checks that need the whole file: keys of features not built yet, destination fields. */
/* The line of the main key at offset, 0 when it was not set in the file. */
static unsigned
line_of(const struct loader *ld, size_t offset)
{
    for (size_t k = 0; k < N_MAIN; k++)
        if (main_keys[k].offset == offset)
            return ld->key_line[k];
    return 0;
}

/* Whether the AE title list is "any" alone or a comma list of AE titles; msg says why not. */
static bool
valid_ae_list(const char *list, char *msg, size_t len)
{
    char item[64];
    if (list == NULL || list[0] == '\0')
        return true;
    int n = 0;
    bool any = false;
    for (const char *at = list;; n++) {
        const char *comma = strchr(at, ',');
        size_t k = comma != NULL ? (size_t)(comma - at) : strlen(at);
        while (k > 0 && *at == ' ') {
            at++;
            k--;
        }
        while (k > 0 && at[k - 1] == ' ')
            k--;
        if (k == 0 || k >= sizeof item) {
            snprintf(msg, len, "an empty or over-long item");
            return false;
        }
        memcpy(item, at, k);
        item[k] = '\0';
        any = any || strcmp(item, "any") == 0;
        if (strcmp(item, "any") != 0 && !valid_ae(item)) {
            snprintf(msg, len,
                     "'%s' is not an AE title (1 to 16 printable characters, no "
                     "backslash)",
                     item);
            return false;
        }
        if (comma == NULL)
            break;
        at = comma + 1;
    }
    if (any && n > 0) {
        snprintf(msg, len, "`any` stands alone");
        return false;
    }
    return true;
}

/* DICOM TLS (design.md section 9): one node identity, tls_cert and tls_key, for the Store SCP
 * and the sender, and the peers' CA; all three or none. The files' contents are checked where
 * they are loaded (dicom/tls.h: start, reload and check-config). */
static void
check_tls(struct loader *ld)
{
    const struct mms_config *c = ld->cfg;
    const char *v[3] = {c->scp.tls_cert, c->scp.tls_key, c->scp.tls_ca};
    const char *names[3] = {"tls_cert", "tls_key", "tls_ca"};
    const size_t offs[3] = {OFF(scp.tls_cert), OFF(scp.tls_key), OFF(scp.tls_ca)};
    int set = 0;
    unsigned at = 0; /* the line of a key that is set */
    for (int i = 0; i < 3; i++)
        if (v[i] != NULL && v[i][0] != '\0') {
            set++;
            at = line_of(ld, offs[i]);
        }
    for (int i = 0; set > 0 && set < 3 && i < 3; i++)
        if (v[i] == NULL || v[i][0] == '\0')
            report(ld, at, "[scp] %s is not set: TLS needs tls_cert, tls_key and tls_ca", names[i]);
    for (int i = 0; set == 3 && i < 3; i++)
        if (access(v[i], R_OK) != 0)
            report(ld, line_of(ld, offs[i]), "[scp] %s %s: %s", names[i], v[i],
                   mms_strerror(mms_err_errno()));
    for (size_t i = 0; i < c->n_dests; i++) {
        const struct mms_dest_config *d = &c->dests[i];
        if (d->type == MMS_DEST_DICOM && d->tls && set < 3)
            report(ld, ld->lines[i].header,
                   "[destination %s] tls: needs [scp] tls_cert, tls_key and tls_ca (our "
                   "certificate and the CA of the peers)",
                   d->name);
    }
}

/* What the listeners would refuse at start is refused here: the same parsers. */
static void
check_network(struct loader *ld)
{
    const struct mms_config *c = ld->cfg;
    char msg[256];
    if (c->scp.allowed_hosts != NULL &&
        mms_net_cidr_match(c->scp.allowed_hosts, "::", msg, sizeof msg) < 0)
        report(ld, line_of(ld, OFF(scp.allowed_hosts)), "[scp] allowed_hosts: %s", msg);
    if (!valid_ae_list(c->scp.allowed_calling_aes, msg, sizeof msg))
        report(ld, line_of(ld, OFF(scp.allowed_calling_aes)), "[scp] allowed_calling_aes: %s", msg);
    if (c->scp.bind != NULL && c->scp.bind[0] != '\0' && !mms_net_is_address(c->scp.bind))
        report(ld, line_of(ld, OFF(scp.bind)),
               "[scp] bind: '%s' is not a numeric IPv4 or IPv6 address", c->scp.bind);
    struct sockaddr_in sa;
    if (c->daemon.metrics_listen != NULL && c->daemon.metrics_listen[0] != '\0' &&
        mms_net_parse_listen(c->daemon.metrics_listen, &sa, msg, sizeof msg) < 0)
        report(ld, line_of(ld, OFF(daemon.metrics_listen)), "[daemon] metrics_listen: %s", msg);
    check_tls(ld);
}

/* Whether a libpq connection string carries a password: a password key (key=value form, or
 * a URI parameter), or user:password@ in a URI. */
static bool
connection_has_password(const char *db)
{
    for (const char *p = strstr(db, "password"); p != NULL; p = strstr(p + 1, "password")) {
        const char *after = p + strlen("password");
        while (*after == ' ')
            after++;
        bool key_start = p == db || p[-1] == ' ' || p[-1] == '?' || p[-1] == '&';
        if (key_start && *after == '=')
            return true;
    }
    const char *scheme = strstr(db, "://");
    if (scheme != NULL) {
        const char *auth = scheme + 3;
        size_t n = strcspn(auth, "/?");
        const char *at = memchr(auth, '@', n);
        if (at != NULL && memchr(auth, ':', (size_t)(at - auth)) != NULL)
            return true;
    }
    return false;
}

/* [daemon] database, node and roles. The node's name defaults to the host name. */
static void
check_cluster(struct loader *ld)
{
    struct mms_config *c = ld->cfg;
    const char *db = c->daemon.database;
    if (db == NULL || (strcmp(db, "sqlite") != 0 && !mms_index_is_postgres(db)))
        report(ld, line_of(ld, OFF(daemon.database)),
               "[daemon] database: 'sqlite', or a PostgreSQL connection string "
               "(postgresql://HOST/DB or 'host=... dbname=...')");
    else if (strcmp(db, "sqlite") != 0 && connection_has_password(db))
        report(ld, line_of(ld, OFF(daemon.database)),
               "[daemon] database: no password in the configuration; give it in a password file "
               "(passfile=PATH in the connection string, or PGPASSFILE)");
    if (c->daemon.node == NULL || c->daemon.node[0] == '\0') {
        char host[256] = "";
        gethostname(host, sizeof host - 1);
        host[strcspn(host, ".")] = '\0';
        free(c->daemon.node);
        c->daemon.node = strdup(host[0] != '\0' ? host : "localhost");
    }
    const char *n = c->daemon.node;
    size_t len = n != NULL ? strlen(n) : 0;
    static const char name_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                     "0123456789._-";
    if (n == NULL || len < 1 || len > 64 || strspn(n, name_chars) != len || n[0] == '.')
        report(ld, line_of(ld, OFF(daemon.node)),
               "[daemon] node: 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'");
    static const struct {
        const char *name;
        unsigned bit;
    } roles[] = {{"intake", MMS_ROLE_INTAKE}, {"infer", MMS_ROLE_INFER}, {"send", MMS_ROLE_SEND}};
    c->daemon.roles_mask = 0;
    const char *r = c->daemon.roles != NULL ? c->daemon.roles : "";
    while (*r != '\0') {
        size_t l = strcspn(r, ",");
        size_t b = 0, e = l;
        while (b < e && r[b] == ' ')
            b++;
        while (e > b && r[e - 1] == ' ')
            e--;
        unsigned bit = 0;
        for (size_t k = 0; k < sizeof roles / sizeof roles[0]; k++)
            if (e - b == strlen(roles[k].name) && strncmp(r + b, roles[k].name, e - b) == 0)
                bit = roles[k].bit;
        if (bit == 0)
            report(ld, line_of(ld, OFF(daemon.roles)),
                   "[daemon] roles: '%.*s' is not intake, infer or send", (int)(e - b), r + b);
        c->daemon.roles_mask |= bit;
        r += l + (r[l] == ',');
    }
    if (c->daemon.roles_mask == 0)
        report(ld, line_of(ld, OFF(daemon.roles)),
               "[daemon] roles: at least one of intake, infer and send");
    else if (c->daemon.roles_mask != (MMS_ROLE_INTAKE | MMS_ROLE_INFER | MMS_ROLE_SEND) &&
             db != NULL && strcmp(db, "sqlite") == 0)
        report(ld, line_of(ld, OFF(daemon.roles)),
               "[daemon] roles: a node with a part of the roles needs other nodes on a shared "
               "database (database = a PostgreSQL connection string)");
}

/* [infer] cpus: CPUs this process may use, and room for the thread counts on each side
 * (common/cpus.h: inference on those CPUs, the rest of the daemon on the others). */
static void
check_cpus(struct loader *ld)
{
    const struct mms_config *c = ld->cfg;
    struct mms_cpus allowed, infer, rest;
    char msg[512], list[256];
    if (c->infer.cpus == NULL || c->infer.cpus[0] == '\0' || mms_cpus_get(&allowed) < 0)
        return;
    if (mms_cpus_split(c->infer.cpus, &allowed, &infer, &rest, msg, sizeof msg) < 0) {
        report(ld, line_of(ld, OFF(infer.cpus)), "[infer] cpus: %s", msg);
        return;
    }
    mms_cpus_format(&infer, list, sizeof list);
    int ni = mms_cpus_count(&infer), nr = mms_cpus_count(&rest);
    if ((int)c->infer.threads > ni)
        report(ld, line_of(ld, OFF(infer.threads)),
               "[infer] threads: %u threads on the %d CPU%s of [infer] cpus (%s) would share them",
               c->infer.threads, ni, ni == 1 ? "" : "s", list);
    if (!mms_cpus_equal(&rest, &allowed) && (int)c->series.decode_threads > nr)
        report(ld, line_of(ld, OFF(series.decode_threads)),
               "[series] decode_threads: %u threads on the %d CPU%s [infer] cpus (%s) leaves to "
               "the rest would share them",
               c->series.decode_threads, nr, nr == 1 ? "" : "s", list);
}

static const struct choice output_names[] = {{"seg", MMS_OUTPUT_SEG},
                                             {"rtstruct", MMS_OUTPUT_RTSTRUCT},
                                             {"sc", MMS_OUTPUT_SC},
                                             {"preview", MMS_OUTPUT_PREVIEW},
                                             {NULL, 0}};

unsigned
mms_output_of(const char *name)
{
    const char *base = strrchr(name, '/') != NULL ? strrchr(name, '/') + 1 : name;
    size_t n = strlen(base);
    static const struct {
        const char *suffix;
        unsigned out;
    } by[] = {{".rtstruct.dcm", MMS_OUTPUT_RTSTRUCT},
              {".sc.dcm", MMS_OUTPUT_SC},
              {".dcm", MMS_OUTPUT_SEG},
              {".png", MMS_OUTPUT_PREVIEW}};
    for (size_t i = 0; i < sizeof by / sizeof by[0]; i++) {
        size_t k = strlen(by[i].suffix);
        if (n > k && strcmp(base + n - k, by[i].suffix) == 0)
            return by[i].out;
    }
    return 0;
}

/* [destination] outputs: names of output_names separated by ',', each made in [seg]. */
static void
check_outputs(struct loader *ld, struct mms_dest_config *d, unsigned h)
{
    d->outputs_mask = MMS_OUTPUT_ALL;
    if (d->outputs == NULL || d->outputs[0] == '\0')
        return;
    d->outputs_mask = 0;
    char *copy = strdup(d->outputs), *save = NULL;
    if (copy == NULL)
        return;
    for (char *t = strtok_r(copy, ", ", &save); t != NULL; t = strtok_r(NULL, ", ", &save)) {
        const struct choice *c = output_names;
        while (c->name != NULL && strcmp(c->name, t) != 0)
            c++;
        if (c->name == NULL)
            report(ld, h, "[destination %s]: outputs: '%s' is none of seg, rtstruct, sc, preview",
                   d->name, t);
        d->outputs_mask |= (unsigned)c->value;
    }
    free(copy);
    if (d->outputs_mask == 0)
        report(ld, h, "[destination %s]: outputs names nothing", d->name);
    if ((d->outputs_mask & MMS_OUTPUT_RTSTRUCT) != 0 && !ld->cfg->seg.rtstruct)
        report(ld, h, "[destination %s]: outputs lists rtstruct, but [seg] rtstruct = no", d->name);
    if ((d->outputs_mask & MMS_OUTPUT_SC) != 0 && !ld->cfg->seg.preview_sc)
        report(ld, h, "[destination %s]: outputs lists sc, but [seg] preview_sc = no", d->name);
    if ((d->outputs_mask & MMS_OUTPUT_PREVIEW) != 0 && d->type != MMS_DEST_FOLDER)
        report(ld, h, "[destination %s]: outputs lists preview, which only a folder receives",
               d->name);
}

static int
validate(struct loader *ld)
{
    struct mms_config def;

    memset(&def, 0, sizeof def);
    if (apply_defaults(main_keys, N_MAIN, &def) < 0) {
        free_fields(main_keys, N_MAIN, &def);
        return MMS_ENOMEM;
    }
    for (size_t i = 0; i < N_MAIN; i++) {
        char dv[512];
        if (!(main_keys[i].flags & NOTYET) || ld->key_line[i] == 0 ||
            field_equal(&main_keys[i], ld->cfg, &def))
            continue;
        format_value(&main_keys[i], &def, dv, sizeof dv);
        report(ld, ld->key_line[i],
               "[%s] %s: not supported yet (only the default '%s' is accepted)",
               main_keys[i].section, main_keys[i].key, dv);
    }
    free_fields(main_keys, N_MAIN, &def);

    /* the series filters must compile as the scheduler compiles them */
    const char *const res[2] = {ld->cfg->series.description_include,
                                ld->cfg->series.description_exclude};
    for (int i = 0; i < 2; i++) {
        regex_t re;
        int rc;
        if (res[i] == NULL || res[i][0] == '\0')
            continue;
        if ((rc = regcomp(&re, res[i], REG_EXTENDED | REG_NOSUB)) != 0) {
            char msg[256];
            regerror(rc, &re, msg, sizeof msg);
            for (size_t k = 0; k < N_MAIN; k++)
                if (main_keys[k].offset ==
                    (i == 0 ? OFF(series.description_include) : OFF(series.description_exclude)))
                    report(ld, ld->key_line[k],
                           "[series] %s: not a POSIX extended regular "
                           "expression: %s",
                           main_keys[k].key, msg);
            continue;
        }
        regfree(&re);
    }

    check_network(ld);
    check_cpus(ld);
    check_cluster(ld);

    /* the SEG's Series Description (LO), checked as the card's texts are */
    const char *sd = ld->cfg->seg.series_description;
    if (sd != NULL && sd[0] != '\0' && !mms_dicom_text_check(sd, 64))
        report(ld, line_of(ld, OFF(seg.series_description)),
               "[seg] series_description: 1 to 64 printable ASCII characters, not only spaces, "
               "no backslash");

    for (size_t i = 0; i < ld->cfg->n_dests; i++) {
        struct mms_dest_config *d = &ld->cfg->dests[i];
        unsigned h = ld->lines[i].header;
        check_outputs(ld, d, h);
        if (d->type == MMS_DEST_DICOM && (d->ae_title == NULL || d->host == NULL || d->port == 0))
            report(ld, h, "[destination %s]: type dicom needs ae_title, host and port", d->name);
        if (d->type == MMS_DEST_FOLDER && (d->path == NULL || d->path[0] == '\0'))
            report(ld, h, "[destination %s]: type folder needs path", d->name);
        if (d->type == MMS_DEST_DICOMWEB) {
            if (d->url == NULL ||
                (strncmp(d->url, "http://", 7) != 0 && strncmp(d->url, "https://", 8) != 0) ||
                strpbrk(d->url, " \t\r\n") != NULL)
                report(ld, h,
                       "[destination %s]: type dicomweb needs url, http://... or "
                       "https://... (the STOW-RS endpoint, e.g. .../dicom-web/studies)",
                       d->name);
            if (d->auth != 0 && (d->credentials_file == NULL || d->credentials_file[0] == '\0'))
                report(ld, h,
                       "[destination %s]: auth %s needs credentials_file (the "
                       "credentials are never in this file)",
                       d->name, d->auth == 1 ? "basic" : "bearer");
            else if (d->auth != 0 && access(d->credentials_file, R_OK) != 0)
                report(ld, h, "[destination %s]: credentials_file %s: %s", d->name,
                       d->credentials_file, strerror(errno));
            if (d->ca_file != NULL && d->ca_file[0] != '\0' && access(d->ca_file, R_OK) != 0)
                report(ld, h, "[destination %s]: ca_file %s: %s", d->name, d->ca_file,
                       strerror(errno));
        }
    }
    return 0;
}

int
mms_config_load(const char *path, struct mms_config **out, char *errbuf, size_t errlen)
{
    struct loader ld;
    const char *slash;
    int rc;

    if (path == NULL || out == NULL)
        return MMS_EINVAL;
    memset(&ld, 0, sizeof ld);
    ld.path = path;
    ld.err = errlen > 0 ? errbuf : NULL;
    ld.errlen = errlen;
    if (ld.err != NULL)
        ld.err[0] = '\0';

    ld.cfg = calloc(1, sizeof *ld.cfg);
    if (ld.cfg == NULL)
        goto oom;
    ld.cfg->path = strdup(path);
    slash = strrchr(path, '/');
    ld.dir =
        slash == NULL ? strdup(".") : strndup(path, slash == path ? 1 : (size_t)(slash - path));
    if (ld.cfg->path == NULL || ld.dir == NULL)
        goto oom;
    if (apply_defaults(main_keys, N_MAIN, ld.cfg) < 0)
        goto oom;

    /* a regular file of bounded size: /dev/zero or a FIFO would be read without end */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        rc = mms_err_errno();
        if (fd >= 0)
            close(fd);
        report(&ld, 0, "cannot open: %s", mms_strerror(rc));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size > CONFIG_MAX_BYTES) {
        close(fd);
        rc = MMS_ECONFIG;
        if (!S_ISREG(sb.st_mode))
            report(&ld, 0, "not a regular file");
        else
            report(&ld, 0, "%lld bytes, more than the maximum of %d for a configuration file",
                   (long long)sb.st_size, CONFIG_MAX_BYTES);
        goto fail;
    }
    ld.f = fdopen(fd, "r");
    if (ld.f == NULL) {
        rc = mms_err_errno();
        close(fd);
        report(&ld, 0, "cannot open: %s", mms_strerror(rc));
        goto fail;
    }
    rc = ini_parse_stream(read_line, &ld, on_key, &ld);
    if (ferror(ld.f)) {
        rc = MMS_EIO;
        report(&ld, 0, "read error after line %u", ld.lineno);
        goto fail;
    }
    if (rc < 0) /* inih could not allocate its line buffer */
        goto oom;
    if (ld.oom)
        goto oom;
    /* Whole-file checks only make sense once every line parsed. */
    if (ld.nerr == 0 && validate(&ld) < 0)
        goto oom;
    if (ld.nerr > 0) {
        rc = MMS_ECONFIG;
        goto fail;
    }
    fclose(ld.f);
    free(ld.buf);
    free(ld.dir);
    free(ld.lines);
    *out = ld.cfg;
    return 0;

oom:
    rc = MMS_ENOMEM;
    report(&ld, 0, "out of memory");
fail:
    if (ld.f != NULL)
        fclose(ld.f);
    free(ld.buf);
    free(ld.dir);
    free(ld.lines);
    mms_config_free(ld.cfg);
    return rc;
}

int
mms_config_set(struct mms_config *cfg, const char *section, const char *key, const char *value,
               char *why, size_t why_len)
{
    for (size_t i = 0; i < N_MAIN; i++) {
        const struct cfg_key *k = &main_keys[i];
        if (strcmp(k->section, section) != 0 || strcmp(k->key, key) != 0)
            continue;
        if (k->flags & NOTYET) {
            snprintf(why, why_len, "[%s] %s: not supported yet", section, key);
            return MMS_EINVAL;
        }
        char reason[256];
        int rc = parse_value(NULL, k, value, cfg, reason, sizeof reason);
        if (rc == MMS_EINVAL)
            snprintf(why, why_len, "[%s] %s: %s", section, key, reason);
        return rc;
    }
    snprintf(why, why_len, "[%s] %s: unknown key", section, key);
    return MMS_EINVAL;
}

int
mms_config_defaults(struct mms_config **out)
{
    struct mms_config *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL || (cfg->path = strdup("(built-in defaults)")) == NULL ||
        apply_defaults(main_keys, N_MAIN, cfg) < 0) {
        mms_config_free(cfg);
        return MMS_ENOMEM;
    }
    *out = cfg;
    return 0;
}

bool
mms_config_database(const struct mms_config *c, char *out, size_t len)
{
    if (c->daemon.database == NULL || strcmp(c->daemon.database, "sqlite") == 0) {
        snprintf(out, len, "%s/state.db", c->daemon.state_dir);
        return false;
    }
    snprintf(out, len, "%s", c->daemon.database);
    return true;
}

void
mms_config_node_dir(const struct mms_config *c, char *out, size_t len)
{
    if (c->daemon.database == NULL || strcmp(c->daemon.database, "sqlite") == 0)
        snprintf(out, len, "%s", c->daemon.state_dir);
    else
        snprintf(out, len, "%s/nodes/%s", c->daemon.state_dir, c->daemon.node);
}

void
mms_config_free(struct mms_config *cfg)
{
    if (cfg == NULL)
        return;
    free_fields(main_keys, N_MAIN, cfg);
    for (size_t i = 0; i < cfg->n_dests; i++) {
        free_fields(dest_keys, N_DEST, &cfg->dests[i]);
        free(cfg->dests[i].name);
    }
    free(cfg->dests);
    free(cfg->path);
    free(cfg);
}

void
mms_config_print(const struct mms_config *cfg, FILE *f)
{
    const char *sec = NULL;
    char v[4096];

    fprintf(f, "; effective configuration of %s\n", cfg->path);
    for (size_t i = 0; i < N_MAIN; i++) {
        if (sec == NULL || strcmp(sec, main_keys[i].section) != 0) {
            sec = main_keys[i].section;
            fprintf(f, "\n[%s]\n", sec);
        }
        format_value(&main_keys[i], cfg, v, sizeof v);
        fprintf(f, "%s = %s\n", main_keys[i].key, v);
    }
    for (size_t d = 0; d < cfg->n_dests; d++) {
        fprintf(f, "\n[destination %s]\n", cfg->dests[d].name);
        for (size_t i = 0; i < N_DEST; i++) {
            format_value(&dest_keys[i], &cfg->dests[d], v, sizeof v);
            fprintf(f, "%s = %s\n", dest_keys[i].key, v);
        }
    }
    char hosts[512], aes[512];
    mms_config_policy(cfg, hosts, sizeof hosts, aes, sizeof aes);
    fprintf(f,
            "\n; association policy of the Store SCP\n; allowed_hosts: %s\n"
            "; allowed_calling_aes: %s\n",
            hosts, aes);
}

/* One list in words: none, any, or the list itself. */
static void
policy_text(const char *list, const char *what, char *out, size_t len)
{
    bool blank = true;
    for (const char *p = list != NULL ? list : ""; *p != '\0'; p++)
        blank = blank && *p == ' ';
    if (blank)
        snprintf(out, len, "none (every association is refused; write `any` to accept any %s)",
                 what);
    else if (strcmp(list, "any") == 0)
        snprintf(out, len, "any %s (WARNING: nothing is refused for its %s)", what, what);
    else
        snprintf(out, len, "%s only", list);
}

void
mms_config_policy(const struct mms_config *cfg, char *hosts, size_t hosts_len, char *aes,
                  size_t aes_len)
{
    policy_text(cfg->scp.allowed_hosts, "host", hosts, hosts_len);
    policy_text(cfg->scp.allowed_calling_aes, "calling AE title", aes, aes_len);
}

int
mms_config_restart_keys(const struct mms_config *old_cfg, const struct mms_config *new_cfg,
                        void (*fn)(const char *section, const char *key, void *ud), void *ud)
{
    int count = 0;
    bool dests_same = old_cfg->n_dests == new_cfg->n_dests;

    for (size_t i = 0; i < N_MAIN; i++) {
        if ((main_keys[i].flags & RELOAD) || field_equal(&main_keys[i], old_cfg, new_cfg))
            continue;
        fn(main_keys[i].section, main_keys[i].key, ud);
        count++;
    }
    for (size_t d = 0; dests_same && d < old_cfg->n_dests; d++) {
        if (strcmp(old_cfg->dests[d].name, new_cfg->dests[d].name) != 0)
            dests_same = false;
        for (size_t i = 0; dests_same && i < N_DEST; i++)
            dests_same = field_equal(&dest_keys[i], &old_cfg->dests[d], &new_cfg->dests[d]);
    }
    if (!dests_same) {
        fn("destination", "", ud);
        count++;
    }
    return count;
}
