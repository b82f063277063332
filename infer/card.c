/* infer: the model card (mmunet.md 4.2 and rule 5 of 4.3), checked in the order and with the
 * messages of validate_card() in tools/mmunet/export.py, then copied into struct mms_card.
 * Threads: any. */
#include "infer/model-impl.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/err.h"
#include "common/log.h"
#include "common/uid.h"

#define SCHEMA "mmsegd.model/1"
#define TEXT_MAX 256
#define HI_NONE INT64_MIN /* _ints() without an upper bound */

static const char *const top_keys[] = {
    "schema",        "name",      "version", "description", "license", "architecture",
    "preprocessing", "inference", "labels",  "provenance",  NULL,
};
static const char *const arch_keys[] = {
    "family",
    "in_channels",
    "num_classes",
    "n_stages",
    "features_per_stage",
    "kernel_sizes",
    "strides",
    "n_blocks_encoder",
    "n_blocks_decoder",
    "stem_blocks",
    "norm",
    "nonlin",
    "decoder",
    "mixer",
    "ignorable_tensors",
    NULL,
};
/* nnU-Net's PlainConvUNet and ResidualEncoderUNet (README, "nnU-Net's standard networks") */
static const char *const plain_keys[] = {
    "family",
    "in_channels",
    "num_classes",
    "n_stages",
    "features_per_stage",
    "kernel_sizes",
    "strides",
    "n_conv_per_stage",
    "n_conv_per_stage_decoder",
    "conv_bias",
    "norm",
    "nonlin",
    "ignorable_tensors",
    NULL,
};
static const char *const resenc_keys[] = {
    "family",
    "in_channels",
    "num_classes",
    "n_stages",
    "features_per_stage",
    "kernel_sizes",
    "strides",
    "n_blocks_per_stage",
    "n_conv_per_stage_decoder",
    "conv_bias",
    "norm",
    "nonlin",
    "ignorable_tensors",
    NULL,
};
static const char *const top_all[] = {
    "schema",        "name",      "version", "description", "license",        "architecture",
    "preprocessing", "inference", "labels",  "provenance",  "postprocessing", NULL,
};
static const char *const arch_optional[] = {"ensemble", NULL};
static const char *const mixer_keys[] = {
    "type",   "biscan",  "merge_scale", "inner_residual", "mamba_stages", "mamba_blocks",
    "ln_eps", "d_state", "d_conv",      "expand",         "dt_rank",      NULL,
};
static const char *const pre_keys[] = {
    "orientation",     "transpose_forward", "transpose_backward", "target_spacing",
    "crop_to_nonzero", "normalization",     "resampling",         NULL,
};
static const char *const norm_keys[] = {"scheme", "clip_low", "clip_high", "mean", "std", NULL};
static const char *const resampling_keys[] = {
    "data_order",           "data_order_z",     "logits_order", "logits_order_z",
    "anisotropy_threshold", "force_separate_z", NULL,
};
static const char *const inference_keys[] = {
    "patch_size", "tile_step", "mirror_axes", "gaussian", "pad_value", NULL,
};
static const char *const gaussian_keys[] = {"sigma_scale", "peak", NULL};
static const char *const label_keys[] = {
    "id", "name", "segment_label", "category", "type", "modifier", "rgb", "by_patient_sex", NULL,
};
static const char *const sex_keys[] = {"segment_label", "category", "type", "rgb", NULL};
static const char *const sex_names[] = {"M", "F", "O", NULL};

struct ctx {
    char *why;
    size_t why_len;
    char text[2][TEXT_MAX]; /* values formatted for a message */
};

static int bad(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int
bad(struct ctx *c, const char *fmt, ...)
{
    va_list ap;

    if (c->why != NULL && c->why_len > 0) {
        va_start(ap, fmt);
        vsnprintf(c->why, c->why_len, fmt, ap);
        va_end(ap);
    }
    return MMS_EMODEL;
}

static int
no_memory(struct ctx *c)
{
    if (c->why != NULL && c->why_len > 0)
        snprintf(c->why, c->why_len, "%s", mms_strerror(MMS_ENOMEM));
    return MMS_ENOMEM;
}

/* json.dumps(v) and repr(v) into text slot i. */
static const char *
js(struct ctx *c, int i, const cJSON *v)
{
    mms__py_dumps(c->text[i], TEXT_MAX, v, false);
    return c->text[i];
}

static const char *
rp(struct ctx *c, int i, const cJSON *v)
{
    mms__py_dumps(c->text[i], TEXT_MAX, v, true);
    return c->text[i];
}

static const char *
rs(struct ctx *c, int i, const char *s)
{
    mms__py_repr(c->text[i], TEXT_MAX, s);
    return c->text[i];
}

static const cJSON *
get(const cJSON *obj, const char *key)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

static bool
in_list(const char *const *list, const char *s)
{
    for (; *list != NULL; list++)
        if (strcmp(*list, s) == 0)
            return true;
    return false;
}

/* export.py's _is_int(): a JSON integer (not a bool, not written with a fraction). */
static bool
is_int(const cJSON *v)
{
    return v != NULL && cJSON_IsNumber(v) && (v->type & MMS__JSON_INT) != 0;
}

/* _is_num(): a finite number, not a bool. */
static bool
is_num(const cJSON *v)
{
    return v != NULL && cJSON_IsNumber(v) && isfinite(v->valuedouble);
}

static bool
is_str(const cJSON *v, const char *s)
{
    return v != NULL && cJSON_IsString(v) && strcmp(v->valuestring, s) == 0;
}

static bool
nonempty(const cJSON *v)
{
    return v != NULL && cJSON_IsString(v) && v->valuestring[0] != '\0';
}

/* Python's v == x for a number x: True == 1 == 1.0, False == 0. */
static bool
py_eq(const cJSON *v, double x)
{
    if (v != NULL && cJSON_IsBool(v))
        return (cJSON_IsTrue(v) ? 1.0 : 0.0) == x;
    return v != NULL && cJSON_IsNumber(v) && v->valuedouble == x;
}

static int
copy_str(struct ctx *c, char **dst, const char *s)
{
    *dst = strdup(s);
    return *dst != NULL ? 0 : no_memory(c);
}

/* export.py's _ints(): a list of n integers, each >= lo and, unless hi is HI_NONE, <= hi.
 * The values must also fit an int here. */
static int
ints(struct ctx *c, const cJSON *v, int n, const char *what, int64_t lo, int64_t hi, int64_t *out)
{
    const cJSON *x;
    bool good = cJSON_IsArray(v) && cJSON_GetArraySize(v) == n, low = false, high = false,
         wide = false;
    int i = 0;

    if (good) {
        cJSON_ArrayForEach(x, v) good = good && is_int(x);
    }
    if (!good)
        return bad(c, "%s: expected %d integers, found %s", what, n, js(c, 0, v));
    cJSON_ArrayForEach(x, v)
    {
        low = low || x->valuedouble < (double)lo;
        high = high || (hi != HI_NONE && x->valuedouble > (double)hi);
        wide = wide || x->valuedouble > INT_MAX;
    }
    if (low || high) {
        char h[24] = "None";
        if (hi != HI_NONE)
            snprintf(h, sizeof h, "%lld", (long long)hi);
        return bad(c, "%s: values must lie in %lld..%s, found %s", what, (long long)lo, h,
                   js(c, 0, v));
    }
    if (wide)
        return bad(c, "%s: values must lie in %lld..%d, found %s", what, (long long)lo, INT_MAX,
                   js(c, 0, v));
    cJSON_ArrayForEach(x, v) out[i++] = (int64_t)x->valuedouble;
    return 0;
}

/* _ints() into an int array. */
static int
ints_int(struct ctx *c, const cJSON *v, int n, const char *what, int64_t lo, int64_t hi, int *out)
{
    int64_t tmp[MMS_MAX_STAGES];
    int rc = ints(c, v, n, what, lo, hi, tmp);

    for (int i = 0; rc == 0 && i < n; i++)
        out[i] = (int)tmp[i];
    return rc;
}

/* An integer scalar >= lo (message as export.py), which must also fit an int. */
static int
scalar_int(struct ctx *c, const cJSON *v, int lo, const char *msg, const char *what, int *out)
{
    if (!is_int(v) || v->valuedouble < lo)
        return bad(c, "%s", msg);
    if (v->valuedouble > INT_MAX)
        return bad(c, "%s: must be at most %d", what, INT_MAX);
    *out = (int)v->valuedouble;
    return 0;
}

/* _exact_keys(): inside `architecture` an unknown or a missing key is an error; the keys of
 * optional (NULL-terminated, may be NULL) may be absent. */
static int
exact_keys(struct ctx *c, const cJSON *obj, const char *const *keys, const char *const *optional,
           const char *where)
{
    const cJSON *m;

    if (!cJSON_IsObject(obj))
        return bad(c, "%s: not an object", where);
    cJSON_ArrayForEach(m, obj)
    {
        if (!in_list(keys, m->string) && (optional == NULL || !in_list(optional, m->string)))
            return bad(c, "%s: unknown key %s (it could change the math)", where,
                       rs(c, 0, m->string));
    }
    for (; *keys != NULL; keys++)
        if (get(obj, *keys) == NULL)
            return bad(c, "%s: missing key %s", where, rs(c, 0, *keys));
    return 0;
}

/* _dicom_text(): text the SEG carries in an element of VR LO or SH (design.md 7), in DICOM's
 * default character repertoire: 1 to n printable ASCII characters, not only spaces (DICOM
 * drops them), no backslash (DICOM's value delimiter). */
static int
dicom_text(struct ctx *c, const cJSON *v, const char *what, const char *vr, int n)
{
    if (mms_dicom_text_check(v->valuestring, (size_t)n))
        return 0;
    return bad(c,
               "%s: %s text is required (1 to %d printable ASCII characters, not only spaces, no "
               "backslash), found %s",
               what, vr, n, js(c, 0, v));
}

/* _code(): {scheme, code, meaning}, non-empty strings, SH, SH and LO text. */
static int
code(struct ctx *c, const cJSON *v, const char *what, struct mms_code *out)
{
    const cJSON *m;
    char w[160];
    bool good = cJSON_IsObject(v) && cJSON_GetArraySize(v) == 3 && get(v, "scheme") != NULL &&
                get(v, "code") != NULL && get(v, "meaning") != NULL;

    if (good) {
        cJSON_ArrayForEach(m, v) good = good && nonempty(m);
    }
    if (!good)
        return bad(c, "%s: expected {scheme, code, meaning} strings, found %s", what, js(c, 0, v));
    static const char *const keys[3] = {"scheme", "code", "meaning"};
    for (int i = 0; i < 3; i++) {
        snprintf(w, sizeof w, "%s.%s", what, keys[i]);
        int rc = dicom_text(c, get(v, keys[i]), w, i < 2 ? "SH" : "LO", i < 2 ? 16 : 64);
        if (rc < 0)
            return rc;
    }
    if (out == NULL)
        return 0;
    if (copy_str(c, &out->scheme, get(v, "scheme")->valuestring) < 0 ||
        copy_str(c, &out->code, get(v, "code")->valuestring) < 0 ||
        copy_str(c, &out->meaning, get(v, "meaning")->valuestring) < 0)
        return MMS_ENOMEM;
    return 0;
}

static void
code_fini(struct mms_code *k)
{
    free(k->scheme);
    free(k->code);
    free(k->meaning);
}

static void
rgb(const int64_t v[3], uint8_t out[3])
{
    for (int i = 0; i < 3; i++)
        out[i] = (uint8_t)v[i];
}

/* ----------------------------------------------------------------------------- sections */
/* A member's name: 1 to 64 letters, digits, '_', '.', '-'. */
static bool
member_name(const cJSON *v)
{
    if (!cJSON_IsString(v))
        return false;
    size_t n = strlen(v->valuestring);
    if (n < 1 || n > 64)
        return false;
    for (const char *p = v->valuestring; *p != '\0'; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '-'))
            return false;
    return true;
}

/* architecture.ensemble: 2..MMS_MAX_MEMBERS distinct member names. */
/* The strings of the checked array v into a new NULL-terminated array *out of *n. */
static int
copy_strs(struct ctx *c, const cJSON *v, char ***out, int *n)
{
    const cJSON *x;
    int i = 0;
    *n = cJSON_GetArraySize(v);
    if ((*out = calloc((size_t)*n + 1, sizeof(char *))) == NULL)
        return no_memory(c);
    cJSON_ArrayForEach(x, v)
    {
        if (copy_str(c, &(*out)[i++], x->valuestring) < 0)
            return MMS_ENOMEM;
    }
    return 0;
}

static int
check_ensemble(struct ctx *c, const cJSON *v, struct mms_arch *arch)
{
    const cJSON *x, *y;
    arch->n_members = 1;
    if (v == NULL)
        return 0;
    bool good =
        cJSON_IsArray(v) && cJSON_GetArraySize(v) >= 2 && cJSON_GetArraySize(v) <= MMS_MAX_MEMBERS;
    cJSON_ArrayForEach(x, v)
    {
        good = good && member_name(x);
        for (y = v->child; good && y != x; y = y->next)
            good = strcmp(x->valuestring, y->valuestring) != 0;
    }
    if (!good)
        return bad(c,
                   "architecture.ensemble: %d to %d distinct member names (1 to 64 letters, "
                   "digits, '_', '.', '-'), found %s",
                   2, MMS_MAX_MEMBERS, js(c, 0, v));
    return copy_strs(c, v, &arch->member_names, &arch->n_members);
}

/* architecture.ignorable_tensors and the optional ensemble, the keys every family ends with. */
static int
check_ignorable(struct ctx *c, const cJSON *a, struct mms_arch *arch)
{
    const cJSON *v, *x;
    int rc;

    v = get(a, "ignorable_tensors");
    {
        bool good = cJSON_IsArray(v);
        if (good) {
            cJSON_ArrayForEach(x, v) good = good && cJSON_IsString(x);
        }
        if (!good)
            return bad(c, "architecture.ignorable_tensors: a list of globs");
    }
    if ((rc = copy_strs(c, v, &arch->ignorable_tensors, &arch->n_ignorable)) < 0)
        return rc;
    return check_ensemble(c, get(a, "ensemble"), arch);
}

static int
check_architecture(struct ctx *c, const cJSON *a, struct mms_arch *arch, int64_t strides_prod[3],
                   double strides_prod_f[3])
{
    const cJSON *v, *mx, *x;
    char what[64];
    int S, rc;

    if (!cJSON_IsObject(a))
        return bad(c, "architecture: not an object");
    v = get(a, "family");
    if (is_str(v, "mmunet"))
        arch->family = MMS_FAMILY_MMUNET;
    else if (is_str(v, "PlainConvUNet"))
        arch->family = MMS_FAMILY_PLAIN;
    else if (is_str(v, "ResidualEncoderUNet"))
        arch->family = MMS_FAMILY_RESENC;
    else
        return bad(c,
                   "architecture.family: expected 'mmunet', 'PlainConvUNet' or "
                   "'ResidualEncoderUNet', found %s",
                   rp(c, 0, v));
    const char *const *keys = arch->family == MMS_FAMILY_PLAIN    ? plain_keys
                              : arch->family == MMS_FAMILY_RESENC ? resenc_keys
                                                                  : arch_keys;
    rc = exact_keys(c, a, keys, arch_optional, "architecture");
    if (rc < 0)
        return rc;
    arch->conv_bias = true;
    v = get(a, "n_stages");
    if (!is_int(v) || v->valuedouble < 2 || v->valuedouble > 8)
        return bad(c, "architecture.n_stages: must be 2..8, found %s", rp(c, 0, v));
    S = arch->n_stages = (int)v->valuedouble;
    rc = scalar_int(c, get(a, "in_channels"), 1, "architecture.in_channels: must be >= 1",
                    "architecture.in_channels", &arch->in_channels);
    if (rc == 0)
        rc = scalar_int(c, get(a, "num_classes"), 2, "architecture.num_classes: must be >= 2",
                        "architecture.num_classes", &arch->num_classes);
    if (rc == 0)
        rc = ints_int(c, get(a, "features_per_stage"), S, "architecture.features_per_stage", 1,
                      HI_NONE, arch->features);
    if (rc < 0)
        return rc;
    v = get(a, "kernel_sizes");
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != S)
        return bad(c, "architecture.kernel_sizes: expected %d entries", S);
    for (int s = 0; s < S; s++) {
        x = cJSON_GetArrayItem(v, s);
        snprintf(what, sizeof what, "architecture.kernel_sizes[%d]", s);
        rc = ints_int(c, x, 3, what, 1, 7, arch->kernel[s]);
        if (rc < 0)
            return rc;
        for (int d = 0; d < 3; d++)
            if (arch->kernel[s][d] % 2 == 0)
                return bad(c, "%s: kernels must be odd, found %s", what, rp(c, 0, x));
    }
    v = get(a, "strides");
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != S)
        return bad(c, "architecture.strides: expected %d entries", S);
    for (int s = 0; s < S; s++) {
        snprintf(what, sizeof what, "architecture.strides[%d]", s);
        rc = ints_int(c, cJSON_GetArrayItem(v, s), 3, what, 1, HI_NONE, arch->stride[s]);
        if (rc < 0)
            return rc;
    }
    if (arch->stride[0][0] != 1 || arch->stride[0][1] != 1 || arch->stride[0][2] != 1)
        return bad(c, "architecture.strides[0]: must be [1, 1, 1], found %s",
                   rp(c, 0, cJSON_GetArrayItem(v, 0)));
    for (int d = 0; d < 3; d++) {
        bool over = false;
        strides_prod[d] = 1;
        strides_prod_f[d] = 1;
        for (int s = 0; s < S; s++) {
            over = over || __builtin_mul_overflow(strides_prod[d], (int64_t)arch->stride[s][d],
                                                  &strides_prod[d]);
            strides_prod_f[d] *= arch->stride[s][d];
        }
        if (over)
            strides_prod[d] = 0; /* beyond int64_t: no patch is divisible */
    }
    if (arch->family == MMS_FAMILY_MMUNET) {
        rc = ints_int(c, get(a, "n_blocks_encoder"), S, "architecture.n_blocks_encoder", 1, HI_NONE,
                      arch->n_blocks_encoder);
        if (rc == 0)
            rc = ints_int(c, get(a, "n_blocks_decoder"), S - 1, "architecture.n_blocks_decoder", 1,
                          HI_NONE, arch->n_blocks_decoder);
        if (rc == 0)
            rc = scalar_int(c, get(a, "stem_blocks"), 1, "architecture.stem_blocks: must be >= 1",
                            "architecture.stem_blocks", &arch->stem_blocks);
    } else {
        const char *enc =
            arch->family == MMS_FAMILY_PLAIN ? "n_conv_per_stage" : "n_blocks_per_stage";
        snprintf(what, sizeof what, "architecture.%s", enc);
        rc = ints_int(c, get(a, enc), S, what, 1, HI_NONE, arch->n_blocks_encoder);
        if (rc == 0)
            rc = ints_int(c, get(a, "n_conv_per_stage_decoder"), S - 1,
                          "architecture.n_conv_per_stage_decoder", 1, HI_NONE,
                          arch->n_blocks_decoder);
        if (rc == 0 && !cJSON_IsBool(v = get(a, "conv_bias")))
            return bad(c, "architecture.conv_bias: must be true or false");
        arch->conv_bias = cJSON_IsTrue(get(a, "conv_bias"));
    }
    if (rc < 0)
        return rc;
    /* Python's dict equality: True == 1, so "affine": 1 passes as it does there. */
    v = get(a, "norm");
    if (!cJSON_IsObject(v) || cJSON_GetArraySize(v) != 3 || !is_str(get(v, "type"), "instance") ||
        !py_eq(get(v, "eps"), 1e-5) || !py_eq(get(v, "affine"), 1))
        return bad(c,
                   "architecture.norm: version 1 accepts only instance, eps 1e-5, affine true; "
                   "found %s",
                   js(c, 0, v));
    arch->norm_eps = 1e-5f;
    v = get(a, "nonlin");
    if (!cJSON_IsObject(v) || cJSON_GetArraySize(v) != 2 || !is_str(get(v, "type"), "leaky_relu") ||
        !py_eq(get(v, "negative_slope"), 0.01))
        return bad(c, "architecture.nonlin: version 1 accepts only leaky_relu 0.01; found %s",
                   js(c, 0, v));
    arch->negative_slope = 0.01f;
    if (arch->family != MMS_FAMILY_MMUNET)
        return check_ignorable(c, a, arch);
    if (!is_str(get(a, "decoder"), "residual_nearest"))
        return bad(c, "architecture.decoder: version 1 accepts only 'residual_nearest'");

    mx = get(a, "mixer");
    rc = exact_keys(c, mx, mixer_keys, NULL, "architecture.mixer");
    if (rc < 0)
        return rc;
    if (!is_str(get(mx, "type"), "bimamba"))
        return bad(c, "architecture.mixer.type: expected 'bimamba'");
    v = get(mx, "biscan");
    if (is_str(v, "separate"))
        arch->biscan = MMS_BISCAN_SEPARATE;
    else if (is_str(v, "shared"))
        arch->biscan = MMS_BISCAN_SHARED;
    else if (is_str(v, "vim_v2"))
        arch->biscan = MMS_BISCAN_VIM_V2;
    else
        return bad(c, "architecture.mixer.biscan: unknown %s", rp(c, 0, v));
    v = get(mx, "merge_scale");
    if (!is_num(v) || v->valuedouble <= 0)
        return bad(c, "architecture.mixer.merge_scale: must be a positive number");
    arch->merge_scale = (float)v->valuedouble;
    v = get(mx, "inner_residual");
    if (!cJSON_IsBool(v))
        return bad(c, "architecture.mixer.inner_residual: must be true or false");
    arch->inner_residual = cJSON_IsTrue(v);
    v = get(mx, "mamba_stages");
    arch->mamba_stages = 0;
    {
        bool good = cJSON_IsArray(v);
        if (good) {
            cJSON_ArrayForEach(x, v)
            {
                int s = is_int(x) && x->valuedouble >= 0 && x->valuedouble < S ? (int)x->valuedouble
                                                                               : -1;
                good = good && s >= 0 && (arch->mamba_stages & (1u << s)) == 0;
                if (good)
                    arch->mamba_stages |= 1u << s;
            }
        }
        if (!good)
            return bad(c,
                       "architecture.mixer.mamba_stages: distinct stage indices in 0..%d, found %s",
                       S - 1, js(c, 0, v));
    }
    v = get(mx, "mamba_blocks");
    if (!is_str(v, "all") && !is_str(v, "last"))
        return bad(c, "architecture.mixer.mamba_blocks: 'all' or 'last'");
    arch->mamba_last_only = is_str(v, "last");
    v = get(mx, "ln_eps");
    if (!is_num(v) || v->valuedouble <= 0)
        return bad(c, "architecture.mixer.ln_eps: must be positive");
    arch->ln_eps = (float)v->valuedouble;
    {
        static const char *const names[] = {"d_state", "d_conv", "expand"};
        int *dst[] = {&arch->d_state, &arch->d_conv, &arch->expand};
        for (int i = 0; i < 3; i++) {
            char msg[128];
            snprintf(what, sizeof what, "architecture.mixer.%s", names[i]);
            snprintf(msg, sizeof msg, "%s: must be an integer >= 1", what);
            rc = scalar_int(c, get(mx, names[i]), 1, msg, what, dst[i]);
            if (rc < 0)
                return rc;
        }
    }
    v = get(mx, "dt_rank");
    if (is_str(v, "auto"))
        arch->dt_rank = 0;
    else if (is_int(v) && v->valuedouble >= 1)
        rc = scalar_int(c, v, 1, "", "architecture.mixer.dt_rank", &arch->dt_rank);
    else
        return bad(c, "architecture.mixer.dt_rank: 'auto' or an integer >= 1");
    if (rc < 0)
        return rc;
    return check_ignorable(c, a, arch);
}

static int
resampling_order(struct ctx *c, const cJSON *r, const char *k, int *out)
{
    const cJSON *v = get(r, k);

    /* Python's `in (0, 1, 3)` compares with ==: 1.0 and true pass as 1. */
    if (!py_eq(v, 0) && !py_eq(v, 1) && !py_eq(v, 3))
        return bad(c, "preprocessing.resampling.%s: one of (0, 1, 3), found %s", k, rp(c, 0, v));
    *out = cJSON_IsBool(v) ? cJSON_IsTrue(v) : (int)v->valuedouble;
    return 0;
}

static int
check_preprocessing(struct ctx *c, const cJSON *p, struct mms_card *card)
{
    const cJSON *v, *n, *r, *x;
    int64_t tf[3], tb[3];
    int rc;

    if (!cJSON_IsObject(p))
        return bad(c, "preprocessing: not an object");
    for (int i = 0; pre_keys[i] != NULL; i++)
        if (get(p, pre_keys[i]) == NULL)
            return bad(c, "preprocessing: missing key %s", rs(c, 0, pre_keys[i]));
    v = get(p, "orientation");
    if (is_str(v, "RAS"))
        card->pre.orientation = MMS_ORIENT_RAS;
    else if (is_str(v, "LPS"))
        card->pre.orientation = MMS_ORIENT_LPS;
    else
        return bad(c, "preprocessing.orientation: 'RAS' or 'LPS', found %s", rp(c, 0, v));
    rc = ints(c, get(p, "transpose_forward"), 3, "preprocessing.transpose_forward", 0, 2, tf);
    if (rc == 0)
        rc = ints(c, get(p, "transpose_backward"), 3, "preprocessing.transpose_backward", 0, 2, tb);
    if (rc < 0)
        return rc;
    if (tf[0] == tf[1] || tf[0] == tf[2] || tf[1] == tf[2] || tf[tb[0]] != 0 || tf[tb[1]] != 1 ||
        tf[tb[2]] != 2)
        return bad(c,
                   "preprocessing.transpose_backward: %s is not the inverse of the permutation %s",
                   rp(c, 0, get(p, "transpose_backward")), rp(c, 1, get(p, "transpose_forward")));
    for (int d = 0; d < 3; d++) {
        card->pre.transpose_forward[d] = (int)tf[d];
        card->pre.transpose_backward[d] = (int)tb[d];
    }
    v = get(p, "target_spacing");
    {
        bool good = cJSON_IsArray(v) && cJSON_GetArraySize(v) == 3;
        int d = 0;
        if (good) {
            cJSON_ArrayForEach(x, v) good = good && is_num(x) && x->valuedouble > 0;
        }
        if (!good)
            return bad(c, "preprocessing.target_spacing: 3 positive numbers, found %s",
                       js(c, 0, v));
        cJSON_ArrayForEach(x, v) card->pre.target_spacing_mm[d++] = x->valuedouble;
    }
    v = get(p, "crop_to_nonzero");
    if (!cJSON_IsBool(v))
        return bad(c, "preprocessing.crop_to_nonzero: true or false");
    card->pre.crop_to_nonzero = cJSON_IsTrue(v);
    n = get(p, "normalization");
    if (!cJSON_IsObject(n) || !is_str(get(n, "scheme"), "ct"))
        return bad(c, "preprocessing.normalization.scheme: version 1 accepts only 'ct'");
    {
        static const char *const names[] = {"clip_low", "clip_high", "mean", "std"};
        double *dst[] = {&card->pre.clip_low, &card->pre.clip_high, &card->pre.mean,
                         &card->pre.std};
        for (int i = 0; i < 4; i++) {
            v = get(n, names[i]);
            if (!is_num(v))
                return bad(c, "preprocessing.normalization.%s: a number is required", names[i]);
            *dst[i] = v->valuedouble;
        }
    }
    if (!(card->pre.clip_low < card->pre.clip_high))
        return bad(c, "preprocessing.normalization: clip_low must be below clip_high");
    if (!(card->pre.std > 0))
        return bad(c, "preprocessing.normalization.std: must be positive");
    r = get(p, "resampling");
    if (!cJSON_IsObject(r))
        return bad(c, "preprocessing.resampling: not an object");
    rc = resampling_order(c, r, "data_order", &card->pre.data_order);
    if (rc == 0)
        rc = resampling_order(c, r, "data_order_z", &card->pre.data_order_z);
    if (rc == 0)
        rc = resampling_order(c, r, "logits_order", &card->pre.logits_order);
    if (rc == 0)
        rc = resampling_order(c, r, "logits_order_z", &card->pre.logits_order_z);
    if (rc < 0)
        return rc;
    v = get(r, "anisotropy_threshold");
    if (!is_num(v) || v->valuedouble <= 1)
        return bad(c, "preprocessing.resampling.anisotropy_threshold: a number above 1");
    card->pre.anisotropy_threshold = v->valuedouble;
    v = get(r, "force_separate_z");
    if (v == NULL || cJSON_IsNull(v))
        card->pre.force_separate_z = -1;
    else if (py_eq(v, 0) || py_eq(v, 1))
        card->pre.force_separate_z = py_eq(v, 1);
    else
        return bad(c, "preprocessing.resampling.force_separate_z: null, true or false");
    return 0;
}

static int
check_inference(struct ctx *c, const cJSON *inf, const int64_t prod[3], const double prod_f[3],
                struct mms_card *card)
{
    const cJSON *v, *g, *x;
    int rc;

    if (!cJSON_IsObject(inf))
        return bad(c, "inference: not an object");
    rc = ints(c, get(inf, "patch_size"), 3, "inference.patch_size", 1, HI_NONE, card->inf.patch);
    if (rc < 0)
        return rc;
    for (int d = 0; d < 3; d++) {
        if (prod[d] != 0 && card->inf.patch[d] % prod[d] == 0)
            continue;
        return bad(c,
                   "inference.patch_size: axis %d (%lld) is not divisible by the product of "
                   "the strides (%.0f)",
                   d, (long long)card->inf.patch[d], prod_f[d]);
    }
    v = get(inf, "tile_step");
    if (!is_num(v) || !(v->valuedouble > 0 && v->valuedouble <= 1))
        return bad(c, "inference.tile_step: must be in (0, 1]");
    card->inf.tile_step = v->valuedouble;
    v = get(inf, "mirror_axes");
    card->inf.mirror_axes = 0;
    {
        bool good = cJSON_IsArray(v);
        if (good) {
            cJSON_ArrayForEach(x, v)
            {
                int d = is_int(x) && x->valuedouble >= 0 && x->valuedouble <= 2
                            ? (int)x->valuedouble
                            : -1;
                good = good && d >= 0 && (card->inf.mirror_axes & (1u << d)) == 0;
                if (good)
                    card->inf.mirror_axes |= 1u << d;
            }
        }
        if (!good)
            return bad(c, "inference.mirror_axes: distinct axes from 0, 1, 2, found %s",
                       js(c, 0, v));
    }
    g = get(inf, "gaussian");
    if (!cJSON_IsObject(g) || !is_num(get(g, "sigma_scale")) ||
        get(g, "sigma_scale")->valuedouble <= 0 || !is_num(get(g, "peak")) ||
        get(g, "peak")->valuedouble <= 0)
        return bad(c, "inference.gaussian: positive sigma_scale and peak are required");
    card->inf.sigma_scale = get(g, "sigma_scale")->valuedouble;
    card->inf.peak = get(g, "peak")->valuedouble;
    v = get(inf, "pad_value");
    if (!is_num(v))
        return bad(c, "inference.pad_value: a number is required");
    card->inf.pad_value = v->valuedouble;
    return 0;
}

static int
check_by_sex(struct ctx *c, const cJSON *bps, const char *w, struct mms_label *lab)
{
    const cJSON *o, *k;
    char what[96];
    int rc;

    {
        bool good = cJSON_IsObject(bps);
        if (good) {
            cJSON_ArrayForEach(o, bps) good = good && in_list(sex_names, o->string);
        }
        if (!good)
            return bad(c, "%s.by_patient_sex: an object with keys among M, F, O", w);
    }
    cJSON_ArrayForEach(o, bps)
    {
        int s = o->string[0] == 'M' ? 0 : o->string[0] == 'F' ? 1 : 2;
        struct mms_label_sex *x = &lab->by_sex[s];

        if (!cJSON_IsObject(o))
            return bad(c, "%s.by_patient_sex.%s: not an object", w, o->string);
        cJSON_ArrayForEach(k, o)
        {
            if (!in_list(sex_keys, k->string))
                return bad(c, "%s.by_patient_sex.%s: unknown key %s", w, o->string,
                           rs(c, 0, k->string));
        }
        x->present = true;
        if (get(o, "category") != NULL) {
            snprintf(what, sizeof what, "%s.by_patient_sex.%s.category", w, o->string);
            rc = code(c, get(o, "category"), what, &x->category);
            if (rc < 0)
                return rc;
            x->has_category = true;
        }
        if (get(o, "type") != NULL) {
            snprintf(what, sizeof what, "%s.by_patient_sex.%s.type", w, o->string);
            rc = code(c, get(o, "type"), what, &x->type);
            if (rc < 0)
                return rc;
            x->has_type = true;
        }
        if (get(o, "rgb") != NULL) {
            int64_t v[3];
            snprintf(what, sizeof what, "%s.by_patient_sex.%s.rgb", w, o->string);
            rc = ints(c, get(o, "rgb"), 3, what, 0, 255, v);
            if (rc < 0)
                return rc;
            rgb(v, x->rgb);
            x->has_rgb = true;
        }
        if (get(o, "segment_label") != NULL) {
            if (!nonempty(get(o, "segment_label")))
                return bad(c, "%s.by_patient_sex.%s.segment_label: a non-empty string is required",
                           w, o->string);
            snprintf(what, sizeof what, "%s.by_patient_sex.%s.segment_label", w, o->string);
            rc = dicom_text(c, get(o, "segment_label"), what, "LO", 64);
            if (rc < 0)
                return rc;
            rc = copy_str(c, &x->segment_label, get(o, "segment_label")->valuestring);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

static int
double_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int
label_cmp(const void *a, const void *b)
{
    const struct mms_label *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

static int
check_labels(struct ctx *c, const cJSON *labels, int num_classes, struct mms_card *card)
{
    const cJSON *lab;
    double *ids = NULL;
    char w[40], what[64];
    int n, i = 0, rc = 0;
    bool ok;

    if (!cJSON_IsArray(labels))
        return bad(c, "labels: a list is required");
    n = cJSON_GetArraySize(labels);
    card->labels = calloc((size_t)n + 1, sizeof *card->labels);
    ids = calloc((size_t)n + 1, sizeof *ids);
    if (card->labels == NULL || ids == NULL) {
        rc = no_memory(c);
        goto out;
    }
    cJSON_ArrayForEach(lab, labels)
    {
        static const char *const required[] = {"id",       "name", "segment_label",
                                               "category", "type", "rgb"};
        struct mms_label *L = &card->labels[i];
        const cJSON *v;
        int64_t col[3];

        snprintf(w, sizeof w, "labels[%d]", i);
        card->n_labels = ++i;
        if (!cJSON_IsObject(lab)) {
            rc = bad(c, "%s: not an object", w);
            goto out;
        }
        for (int k = 0; k < 6; k++)
            if (get(lab, required[k]) == NULL) {
                rc = bad(c, "%s: missing key %s", w, rs(c, 0, required[k]));
                goto out;
            }
        v = get(lab, "id");
        if (!is_int(v)) {
            rc = bad(c, "%s.id: an integer is required", w);
            goto out;
        }
        ids[i - 1] = v->valuedouble;
        L->id = v->valuedouble >= 1 && v->valuedouble <= INT_MAX ? (int)v->valuedouble : 0;
        for (int k = 0; k < 2; k++) {
            const char *key = k == 0 ? "name" : "segment_label";
            if (!nonempty(get(lab, key))) {
                rc = bad(c, "%s.%s: a non-empty string is required", w, key);
                goto out;
            }
            rc = copy_str(c, k == 0 ? &L->name : &L->segment_label, get(lab, key)->valuestring);
            if (rc < 0)
                goto out;
        }
        snprintf(what, sizeof what, "%s.segment_label", w);
        rc = dicom_text(c, get(lab, "segment_label"), what, "LO", 64);
        if (rc < 0)
            goto out;
        snprintf(what, sizeof what, "%s.category", w);
        rc = code(c, get(lab, "category"), what, &L->category);
        if (rc == 0) {
            snprintf(what, sizeof what, "%s.type", w);
            rc = code(c, get(lab, "type"), what, &L->type);
        }
        if (rc == 0 && get(lab, "modifier") != NULL) {
            snprintf(what, sizeof what, "%s.modifier", w);
            rc = code(c, get(lab, "modifier"), what, &L->modifier);
            L->has_modifier = rc == 0;
        }
        if (rc == 0) {
            snprintf(what, sizeof what, "%s.rgb", w);
            rc = ints(c, get(lab, "rgb"), 3, what, 0, 255, col);
        }
        if (rc < 0)
            goto out;
        rgb(col, L->rgb);
        if (get(lab, "by_patient_sex") != NULL) {
            rc = check_by_sex(c, get(lab, "by_patient_sex"), w, L);
            if (rc < 0)
                goto out;
        }
    }
    qsort(ids, (size_t)n, sizeof *ids, double_cmp);
    ok = n == num_classes - 1;
    for (int k = 0; ok && k < n; k++)
        ok = ids[k] == k + 1;
    if (!ok) {
        struct {
            char *b;
            size_t n, len;
        } s = {c->text[0], TEXT_MAX, 0};
        s.len = (size_t)snprintf(s.b, s.n, "[");
        for (int k = 0; k < n && s.len < s.n; k++)
            s.len += (size_t)snprintf(s.b + s.len, s.n - s.len, "%s%.0f", k ? ", " : "",
                                      ids[k] == 0 ? 0.0 : ids[k]);
        if (s.len < s.n)
            snprintf(s.b + s.len, s.n - s.len, "]");
        rc = bad(c, "labels: ids must be 1..%d once each (num_classes - 1 labels), found %s",
                 num_classes - 1, s.b);
        goto out;
    }
    qsort(card->labels, (size_t)n, sizeof *card->labels, label_cmp);
out:
    free(ids);
    return rc;
}

/* Unknown keys outside `architecture`: a WARNING each, once the card is valid. */
static void
warn_unknown(const cJSON *obj, const char *const *keys, const char *where, const char *name)
{
    const cJSON *m;
    char key[TEXT_MAX];

    cJSON_ArrayForEach(m, obj)
    {
        if (in_list(keys, m->string))
            continue;
        mms__py_repr(key, sizeof key, m->string);
        mms_log(MMS_LOG_WARNING, "model card '%s': %s%sunknown key %s ignored", name, where,
                where[0] != '\0' ? ": " : "", key);
    }
}

static void
warn_all(const cJSON *root, const char *name)
{
    const cJSON *p = get(root, "preprocessing"), *inf = get(root, "inference"), *lab;
    char where[40];
    int i = 0;

    warn_unknown(root, top_all, "", name);
    warn_unknown(p, pre_keys, "preprocessing", name);
    warn_unknown(get(p, "normalization"), norm_keys, "preprocessing.normalization", name);
    warn_unknown(get(p, "resampling"), resampling_keys, "preprocessing.resampling", name);
    warn_unknown(inf, inference_keys, "inference", name);
    warn_unknown(get(inf, "gaussian"), gaussian_keys, "inference.gaussian", name);
    cJSON_ArrayForEach(lab, get(root, "labels"))
    {
        snprintf(where, sizeof where, "labels[%d]", i++);
        warn_unknown(lab, label_keys, where, name);
    }
}

/* postprocessing: steps {"keep_largest_component": [distinct label ids in 1..C-1]}. */
static int
check_postprocessing(struct ctx *c, const cJSON *pp, struct mms_card *k)
{
    const cJSON *step, *x;
    int i = 0, C = k->arch.num_classes;
    if (pp == NULL)
        return 0;
    if (!cJSON_IsArray(pp))
        return bad(c, "postprocessing: a list of steps is required, found %s", js(c, 0, pp));
    k->n_pp = cJSON_GetArraySize(pp);
    if (k->n_pp > 0 && (k->pp = calloc((size_t)k->n_pp, sizeof *k->pp)) == NULL)
        return no_memory(c);
    cJSON_ArrayForEach(step, pp)
    {
        const cJSON *ls = get(step, "keep_largest_component");
        bool good = cJSON_IsObject(step) && cJSON_GetArraySize(step) == 1 && cJSON_IsArray(ls) &&
                    cJSON_GetArraySize(ls) > 0;
        const cJSON *items = good ? ls : NULL;
        cJSON_ArrayForEach(x, items)
        {
            good = good && is_int(x) && x->valuedouble >= 1 && x->valuedouble < C;
            if (!good)
                break;
            int l = (int)x->valuedouble;
            good = (k->pp[i].labels[l / 64] >> (l % 64) & 1u) == 0; /* distinct */
            k->pp[i].labels[l / 64] |= (uint64_t)1 << (l % 64);
        }
        if (!good)
            return bad(c,
                       "postprocessing[%d]: expected {\"keep_largest_component\": [distinct label "
                       "ids in 1..%d]}, found %s",
                       i, C - 1, js(c, 0, step));
        i++;
    }
    return 0;
}

/* ----------------------------------------------------------------------------- entry points */
int
mms__card_parse(const char *json, struct mms_card *card, char *why, size_t why_len)
{
    struct ctx c = {.why = why, .why_len = why_len};
    struct mms__json_error jerr;
    struct mms_card k;
    const cJSON *v;
    cJSON *root = NULL;
    int64_t prod[3];
    double prod_f[3];
    int rc;

    if (json == NULL || card == NULL)
        return MMS_EINVAL;
    memset(&k, 0, sizeof k);
    rc = mms__json_parse(json, strlen(json), MMS__JSON_DOC, &root, NULL, &jerr);
    if (rc == MMS_EMODEL && jerr.duplicate) {
        rc = bad(&c, "model card is not valid JSON (duplicate key %s)", jerr.key);
        goto fail;
    }
    if (rc == MMS_EMODEL) {
        rc = bad(&c, "model card is not valid JSON (%s: line %lld column %lld (char %lld))",
                 jerr.msg, (long long)jerr.line, (long long)jerr.col, (long long)jerr.pos);
        goto fail;
    }
    if (rc < 0) {
        no_memory(&c);
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        rc = bad(&c, "card: not a JSON object");
        goto fail;
    }
    v = get(root, "schema");
    if (!is_str(v, SCHEMA)) {
        rc = bad(&c, "schema: expected '%s', found %s", SCHEMA, rp(&c, 0, v));
        goto fail;
    }
    for (int i = 0; top_keys[i] != NULL; i++)
        if (get(root, top_keys[i]) == NULL) {
            rc = bad(&c, "card: missing key %s", rs(&c, 0, top_keys[i]));
            goto fail;
        }
    {
        static const char *const names[] = {"name", "version", "description", "license"};
        char **dst[] = {&k.name, &k.version, &k.description, &k.license};
        for (int i = 0; i < 4; i++) {
            if (!nonempty(get(root, names[i]))) {
                rc = bad(&c, "%s: expected a non-empty string", names[i]);
                goto fail;
            }
            rc = copy_str(&c, dst[i], get(root, names[i])->valuestring);
            if (rc < 0)
                goto fail;
        }
        /* the SEG's Algorithm Name and Version, and its Series Description "MM-UNet <name>" */
        rc = dicom_text(&c, get(root, "name"), "name", "LO", 56);
        if (rc == 0)
            rc = dicom_text(&c, get(root, "version"), "version", "LO", 64);
        if (rc < 0)
            goto fail;
    }
    rc = check_architecture(&c, get(root, "architecture"), &k.arch, prod, prod_f);
    if (rc == 0)
        rc = check_preprocessing(&c, get(root, "preprocessing"), &k);
    if (rc == 0)
        rc = check_inference(&c, get(root, "inference"), prod, prod_f, &k);
    if (rc == 0)
        rc = check_labels(&c, get(root, "labels"), k.arch.num_classes, &k);
    if (rc == 0)
        rc = check_postprocessing(&c, get(root, "postprocessing"), &k);
    if (rc < 0)
        goto fail;
    v = get(root, "provenance");
    if (!cJSON_IsObject(v) || !cJSON_IsString(get(v, "trainer")) ||
        !cJSON_IsString(get(v, "date"))) {
        rc = bad(&c, "provenance: 'trainer' and 'date' strings are required");
        goto fail;
    }
    rc = copy_str(&c, &k.trainer, get(v, "trainer")->valuestring);
    if (rc == 0)
        rc = copy_str(&c, &k.date, get(v, "date")->valuestring);
    if (rc == 0)
        rc = copy_str(&c, &k.json, json);
    if (rc < 0)
        goto fail;
    warn_all(root, k.name);
    cJSON_Delete(root);
    *card = k;
    return 0;
fail:
    cJSON_Delete(root);
    mms__card_fini(&k);
    return rc;
}

void
mms__card_fini(struct mms_card *card)
{
    if (card == NULL)
        return;
    free(card->json);
    free(card->name);
    free(card->version);
    free(card->description);
    free(card->license);
    for (int i = 0; card->arch.ignorable_tensors != NULL && i < card->arch.n_ignorable; i++)
        free(card->arch.ignorable_tensors[i]);
    free(card->arch.ignorable_tensors);
    for (int i = 0; card->arch.member_names != NULL && i < card->arch.n_members; i++)
        free(card->arch.member_names[i]);
    free(card->arch.member_names);
    for (int i = 0; card->labels != NULL && i < card->n_labels; i++) {
        struct mms_label *L = &card->labels[i];
        free(L->name);
        free(L->segment_label);
        code_fini(&L->category);
        code_fini(&L->type);
        code_fini(&L->modifier);
        for (int s = 0; s < 3; s++) {
            free(L->by_sex[s].segment_label);
            code_fini(&L->by_sex[s].category);
            code_fini(&L->by_sex[s].type);
        }
    }
    free(card->labels);
    free(card->pp);
    free(card->trainer);
    free(card->date);
    memset(card, 0, sizeof *card);
}

int
mms_arch_dt_rank(const struct mms_arch *a, int channels)
{
    return a->dt_rank > 0 ? a->dt_rank : (channels + 15) / 16;
}
