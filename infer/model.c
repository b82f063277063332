/* infer: model files (mmunet.md 4): the safetensors container, the card in its metadata, and
 * rule 4 of 4.3, the tensors the architecture needs (names and shapes of mmunet.md 2.7, as
 * expected_tensors() in tools/mmunet/export.py generates them).
 * Threads: any; a loaded model is read-only and may be shared. */
#include "infer/infer.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "infer/model-impl.h"

#define CARD_KEY "mmsegd.model"
#define EXPECT_MAX 100000 /* tensors an architecture may need; far above any real network */
#define NAME_MAX_LEN 160
#define MEMBER_PREFIX "ensemble."
#define TEXT_MAX 256

struct expect {
    char name[NAME_MAX_LEN];
    int rank;
    int64_t shape[5];
};

struct gen {
    const struct mms_arch *a;
    struct expect *v;
    int n, cap;
    bool too_many, nomem;
};

struct mms_model {
    struct mms_st *st;
    struct mms_card card;
    int n;
    const struct mms_tensor **tensors; /* the network's tensors, sorted by name */
    int64_t params;
};

/* ----------------------------------------------------------------------------- expected */
static void add(struct gen *g, int rank, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void
add(struct gen *g, int rank, const int64_t *shape, const char *fmt, ...)
{
    struct expect *e;
    va_list ap;

    if (g->too_many || g->nomem)
        return;
    if (g->n == EXPECT_MAX) {
        g->too_many = true;
        return;
    }
    if (g->n == g->cap) {
        int cap = g->cap ? 2 * g->cap : 256;
        struct expect *v = realloc(g->v, (size_t)cap * sizeof *v);
        if (v == NULL) {
            g->nomem = true;
            return;
        }
        g->v = v;
        g->cap = cap;
    }
    e = &g->v[g->n++];
    va_start(ap, fmt);
    vsnprintf(e->name, sizeof e->name, fmt, ap);
    va_end(ap);
    e->rank = rank;
    memcpy(e->shape, shape, (size_t)rank * sizeof *shape);
}

#define SHAPE(...)                                                                                 \
    (sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[])                              \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }

static __int128
count_of(const struct expect *e)
{
    __int128 n = 1;
    for (int i = 0; i < e->rank; i++)
        n *= e->shape[i];
    return n;
}

/* The tensors of one Mamba module of a hybrid block (mmunet.md 2.7), with the parameter
 * formula of 2.7 as a self-test of the shapes above. */
static void
mamba(struct gen *g, const char *p, int64_t C, bool vim)
{
    const struct mms_arch *a = g->a;
    int64_t E = (int64_t)a->expand * C, N = a->d_state, K = a->d_conv;
    int64_t R = mms_arch_dt_rank(a, (int)C);
    int first = g->n;

    add(g, SHAPE(2 * E, C), "%sin_proj.weight", p);
    add(g, SHAPE(C, E), "%sout_proj.weight", p);
    for (int b = 0; b < (vim ? 2 : 1); b++) {
        const char *sfx = b ? "_b" : "";
        add(g, SHAPE(E, 1, K), "%sconv1d%s.weight", p, sfx);
        add(g, SHAPE(E), "%sconv1d%s.bias", p, sfx);
        add(g, SHAPE(R + 2 * N, E), "%sx_proj%s.weight", p, sfx);
        add(g, SHAPE(E, R), "%sdt_proj%s.weight", p, sfx);
        add(g, SHAPE(E), "%sdt_proj%s.bias", p, sfx);
        add(g, SHAPE(E, N), "%s%s", p, b ? "A_b_log" : "A_log");
        add(g, SHAPE(E), "%sD%s", p, sfx);
    }
    if (!g->too_many && !g->nomem) {
        __int128 sum = 0, c = C, e = E, n = N, k = K, r = R;
        __int128 want = 2 * e * c + e * (k + 1) + e * (r + 2 * n) + e * r + e + e * n + e + c * e;
        for (int i = first; i < g->n; i++)
            sum += count_of(&g->v[i]);
        if (vim) /* the backward branch's own conv1d, x_proj, dt_proj, A and D */
            want += e * (k + 1) + e * (r + 2 * n) + e * r + e + e * n + e;
        assert(sum == want);
        (void)sum;
        (void)want;
    }
}

static void
block(struct gen *g, const char *prefix, int64_t cin, int64_t cout, const int k[3],
      const int stride[3], bool hybrid)
{
    static const char *const vec[] = {"conv1.bias", "conv2.bias",   "norm1.weight",
                                      "norm1.bias", "norm2.weight", "norm2.bias"};
    const struct mms_arch *a = g->a;
    char p[NAME_MAX_LEN];

    add(g, SHAPE(cout, cin, k[0], k[1], k[2]), "%sconv1.weight", prefix);
    add(g, SHAPE(cout, cout, k[0], k[1], k[2]), "%sconv2.weight", prefix);
    for (int i = 0; i < 6; i++)
        add(g, SHAPE(cout), "%s%s", prefix, vec[i]);
    if (cin != cout || stride[0] != 1 || stride[1] != 1 || stride[2] != 1) {
        add(g, SHAPE(cout, cin, 1, 1, 1), "%sproj.weight", prefix);
        add(g, SHAPE(cout), "%sproj.bias", prefix);
    }
    if (!hybrid)
        return;
    add(g, SHAPE(cout), "%smixer.norm.weight", prefix);
    add(g, SHAPE(cout), "%smixer.norm.bias", prefix);
    if (a->biscan == MMS_BISCAN_SEPARATE) {
        snprintf(p, sizeof p, "%smixer.mamba_f.", prefix);
        mamba(g, p, cout, false);
        snprintf(p, sizeof p, "%smixer.mamba_b.", prefix);
        mamba(g, p, cout, false);
    } else {
        snprintf(p, sizeof p, "%smixer.mamba.", prefix);
        mamba(g, p, cout, a->biscan == MMS_BISCAN_VIM_V2);
    }
}

/* A convolution, normalisation and LReLU of the nnU-Net families: prefix + "conv.weight" and
 * "conv.bias" when bias, "norm.weight" and "norm.bias". */
static void
cnr(struct gen *g, const char *prefix, int64_t cin, int64_t cout, const int k[3], bool bias)
{
    add(g, SHAPE(cout, cin, k[0], k[1], k[2]), "%sconv.weight", prefix);
    if (bias)
        add(g, SHAPE(cout), "%sconv.bias", prefix);
    add(g, SHAPE(cout), "%snorm.weight", prefix);
    add(g, SHAPE(cout), "%snorm.bias", prefix);
}

/* PlainConvUNet and ResidualEncoderUNet (README, "nnU-Net's standard networks"). */
static void
expected_nnunet(struct gen *g)
{
    static const int ones[3] = {1, 1, 1};
    const struct mms_arch *a = g->a;
    const int *F = a->features;
    int S = a->n_stages;
    bool bias = a->conv_bias;
    char p[NAME_MAX_LEN];

    if (a->family == MMS_FAMILY_RESENC)
        cnr(g, "encoder.stem.convs.0.", a->in_channels, F[0], a->kernel[0], bias);
    for (int s = 0; s < S && !g->too_many; s++) {
        for (int i = 0; i < a->n_blocks_encoder[s]; i++) {
            int64_t cin = i > 0                           ? F[s]
                          : s > 0                         ? F[s - 1]
                          : a->family == MMS_FAMILY_PLAIN ? a->in_channels
                                                          : F[0];
            if (a->family == MMS_FAMILY_PLAIN) {
                snprintf(p, sizeof p, "encoder.stages.%d.0.convs.%d.", s, i);
                cnr(g, p, cin, F[s], a->kernel[s], bias);
                continue;
            }
            snprintf(p, sizeof p, "encoder.stages.%d.blocks.%d.conv1.", s, i);
            cnr(g, p, cin, F[s], a->kernel[s], bias);
            snprintf(p, sizeof p, "encoder.stages.%d.blocks.%d.conv2.", s, i);
            cnr(g, p, F[s], F[s], a->kernel[s], bias);
            const int *t = a->stride[s];
            bool pool = i == 0 && (t[0] != 1 || t[1] != 1 || t[2] != 1);
            if (cin != F[s]) {
                snprintf(p, sizeof p, "encoder.stages.%d.blocks.%d.skip.%d.", s, i, pool ? 1 : 0);
                cnr(g, p, cin, F[s], ones, false);
            }
        }
    }
    for (int j = 0; j < S - 1 && !g->too_many; j++) {
        int up = S - 1 - j, skip = S - 2 - j;
        const int *t = a->stride[up];
        add(g, SHAPE(F[up], F[skip], t[0], t[1], t[2]), "decoder.transpconvs.%d.weight", j);
        if (bias)
            add(g, SHAPE(F[skip]), "decoder.transpconvs.%d.bias", j);
        for (int i = 0; i < a->n_blocks_decoder[j]; i++) {
            snprintf(p, sizeof p, "decoder.stages.%d.convs.%d.", j, i);
            cnr(g, p, i == 0 ? 2 * (int64_t)F[skip] : F[skip], F[skip], a->kernel[skip], bias);
        }
    }
    add(g, SHAPE(a->num_classes, F[0], 1, 1, 1), "decoder.seg_layers.%d.weight", S - 2);
    add(g, SHAPE(a->num_classes), "decoder.seg_layers.%d.bias", S - 2);
}

/* Every tensor the architecture needs (mmunet.md 2.5, 2.7), in no order. */
static void
expected(struct gen *g)
{
    static const int ones[3] = {1, 1, 1};
    if (g->a->family != MMS_FAMILY_MMUNET) {
        expected_nnunet(g);
        return;
    }
    const struct mms_arch *a = g->a;
    const int *F = a->features;
    int S = a->n_stages;
    char p[NAME_MAX_LEN];

    for (int b = 0; b < a->stem_blocks && !g->too_many; b++) {
        snprintf(p, sizeof p, "stem.blocks.%d.", b);
        block(g, p, b == 0 ? a->in_channels : F[0], F[0], a->kernel[0], ones, false);
    }
    for (int s = 0; s < S; s++) {
        int nb = a->n_blocks_encoder[s];
        for (int b = 0; b < nb && !g->too_many; b++) {
            bool hybrid =
                (a->mamba_stages & (1u << s)) != 0 && (!a->mamba_last_only || b == nb - 1);
            snprintf(p, sizeof p, "encoder.stages.%d.blocks.%d.", s, b);
            block(g, p, b == 0 ? (s > 0 ? F[s - 1] : F[0]) : F[s], F[s], a->kernel[s],
                  b == 0 ? a->stride[s] : ones, hybrid);
        }
    }
    for (int j = 0; j < S - 1; j++) {
        int up = S - 1 - j, skip = S - 2 - j;
        add(g, SHAPE(F[skip], F[up], 1, 1, 1), "decoder.levels.%d.up.weight", j);
        add(g, SHAPE(F[skip]), "decoder.levels.%d.up.bias", j);
        for (int i = 0; i < a->n_blocks_decoder[j] && !g->too_many; i++) {
            snprintf(p, sizeof p, "decoder.levels.%d.blocks.%d.", j, i);
            block(g, p, i == 0 ? 2 * (int64_t)F[skip] : F[skip], F[skip], a->kernel[skip], ones,
                  false);
        }
    }
    add(g, SHAPE(a->num_classes, F[0], 1, 1, 1), "head.weight");
    add(g, SHAPE(a->num_classes), "head.bias");
}

/* ----------------------------------------------------------------------------- rule 4 */
static int
expect_cmp(const void *a, const void *b)
{
    return strcmp(((const struct expect *)a)->name, ((const struct expect *)b)->name);
}

static int
expect_find(const void *key, const void *elem)
{
    return strcmp(key, ((const struct expect *)elem)->name);
}

static int
tensor_cmp(const void *a, const void *b)
{
    return strcmp((*(const struct mms_tensor *const *)a)->name,
                  (*(const struct mms_tensor *const *)b)->name);
}

static int
tensor_find(const void *key, const void *elem)
{
    return strcmp(key, (*(const struct mms_tensor *const *)elem)->name);
}

/* export.py's glob_match(): `*` matches any run of characters but a newline (as `.*` in
 * Python's re), everything else itself. work holds strlen(name) + 1 flags. */
static bool
glob_match(const char *pattern, const char *name, bool *work)
{
    size_t n = strlen(name);

    /* work[j]: the pattern read so far matches the first j characters of name. */
    work[0] = true;
    for (size_t j = 1; j <= n; j++)
        work[j] = false;
    for (const char *p = pattern; *p != '\0'; p++) {
        if (*p == '*') {
            for (size_t j = 1; j <= n; j++)
                work[j] = work[j] || (work[j - 1] && name[j - 1] != '\n');
        } else {
            for (size_t j = n; j >= 1; j--)
                work[j] = work[j - 1] && name[j - 1] == *p;
            work[0] = false;
        }
    }
    return work[n];
}

static void
shape_text(char *buf, size_t n, int rank, const int64_t *shape)
{
    size_t len = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < rank && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (len < n)
        snprintf(buf + len, n - len, "]");
}

/* An ensemble needs every tensor of the network once per member, under MEMBER_PREFIX "<i>.":
 * g's names become those, member by member. */
static int
add_members(struct gen *g, const struct mms_arch *a, const char *path, char *why, size_t why_len)
{
    if (a->n_members <= 1)
        return 0;
    if (g->n > EXPECT_MAX / a->n_members)
        return mms__failf(why, why_len, MMS_EMODEL, path,
                          "architecture: more than %d tensors expected", EXPECT_MAX);
    struct expect *v = malloc((size_t)g->n * (size_t)a->n_members * sizeof *v);
    if (v == NULL)
        return mms__failf(why, why_len, MMS_ENOMEM, path, "%s", mms_strerror(MMS_ENOMEM));
    for (int k = 0; k < a->n_members; k++)
        for (int i = 0; i < g->n; i++) {
            struct expect *e = &v[k * g->n + i];
            *e = g->v[i];
            if (snprintf(e->name, sizeof e->name, MEMBER_PREFIX "%d.%s", k, g->v[i].name) >=
                (int)sizeof e->name) {
                free(v);
                return mms__failf(why, why_len, MMS_EMODEL, path,
                                  "architecture: a member's tensor name is over %d bytes",
                                  NAME_MAX_LEN - 1);
            }
        }
    free(g->v);
    g->v = v;
    g->n *= a->n_members;
    g->cap = g->n;
    return 0;
}

/* The network's name of a tensor of the file: name itself for a single network; for an
 * ensemble, what follows MEMBER_PREFIX "<i>." with i a member (no leading zero), else NULL. */
static const char *
member_rest(const struct mms_arch *a, const char *name)
{
    if (a->n_members <= 1)
        return name;
    size_t np = strlen(MEMBER_PREFIX);
    if (strncmp(name, MEMBER_PREFIX, np) != 0)
        return NULL;
    const char *p = name + np;
    int i = 0, digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 3; p++, digits++)
        i = i * 10 + (*p - '0');
    if (digits == 0 || (digits > 1 && name[np] == '0') || *p != '.' || i >= a->n_members)
        return NULL;
    return p + 1;
}

static int
check_names(struct mms_model *m, const char *path, char *why, size_t why_len)
{
    struct gen g = {.a = &m->card.arch};
    const struct mms_tensor **all = NULL;
    int n_all = mms__st_count(m->st), rc = 0;
    char name[TEXT_MAX], t1[TEXT_MAX], t2[TEXT_MAX];
    size_t longest = 0;
    bool *work = NULL;

    expected(&g);
    if (g.nomem) {
        rc = mms__failf(why, why_len, MMS_ENOMEM, path, "%s", mms_strerror(MMS_ENOMEM));
        goto out;
    }
    if (g.too_many) {
        rc = mms__failf(why, why_len, MMS_EMODEL, path,
                        "architecture: more than %d tensors expected, the file has %d", EXPECT_MAX,
                        n_all);
        goto out;
    }
    if ((rc = add_members(&g, &m->card.arch, path, why, why_len)) < 0)
        goto out;
    qsort(g.v, (size_t)g.n, sizeof *g.v, expect_cmp);
    m->tensors = calloc((size_t)g.n + 1, sizeof *m->tensors);
    all = calloc((size_t)n_all + 1, sizeof *all);
    if (m->tensors == NULL || all == NULL) {
        rc = mms__failf(why, why_len, MMS_ENOMEM, path, "%s", mms_strerror(MMS_ENOMEM));
        goto out;
    }
    for (int i = 0; i < g.n; i++) {
        const struct expect *e = &g.v[i];
        const struct mms_tensor *t = mms__st_find(m->st, e->name);
        bool same;

        mms__py_repr(name, sizeof name, e->name);
        if (t == NULL) {
            rc = mms__failf(why, why_len, MMS_EMODEL, path, "missing tensor %s", name);
            goto out;
        }
        same = t->rank == e->rank;
        for (int d = 0; same && d < e->rank; d++)
            same = t->shape[d] == e->shape[d];
        if (!same) {
            shape_text(t1, sizeof t1, t->rank, t->shape);
            shape_text(t2, sizeof t2, e->rank, e->shape);
            rc = mms__failf(why, why_len, MMS_EMODEL, path, "tensor %s: shape %s, expected %s",
                            name, t1, t2);
            goto out;
        }
        m->tensors[i] = t;
        m->params += t->count;
    }
    m->n = g.n;
    for (int i = 0; i < n_all; i++) {
        all[i] = mms__st_tensor(m->st, i);
        if (strlen(all[i]->name) > longest)
            longest = strlen(all[i]->name);
    }
    qsort(all, (size_t)n_all, sizeof *all, tensor_cmp);
    work = malloc(longest + 1);
    if (work == NULL) {
        rc = mms__failf(why, why_len, MMS_ENOMEM, path, "%s", mms_strerror(MMS_ENOMEM));
        goto out;
    }
    for (int i = 0; i < n_all; i++) {
        bool ignorable = false;
        if (bsearch(all[i]->name, g.v, (size_t)g.n, sizeof *g.v, expect_find) != NULL)
            continue;
        const char *rest = member_rest(&m->card.arch, all[i]->name);
        for (int k = 0; rest != NULL && !ignorable && k < m->card.arch.n_ignorable; k++)
            ignorable = glob_match(m->card.arch.ignorable_tensors[k], rest, work);
        if (!ignorable) {
            mms__py_repr(name, sizeof name, all[i]->name);
            rc = mms__failf(why, why_len, MMS_EMODEL, path, "unexpected tensor %s", name);
            goto out;
        }
    }
out:
    free(work);
    free(all);
    free(g.v);
    return rc;
}

/* ----------------------------------------------------------------------------- public */
int
mms_model_load(const char *path, struct mms_model **out, char *why, size_t why_len)
{
    struct mms_model *m;
    const char *json;
    char sub[1024];
    int rc;

    if (path == NULL || out == NULL)
        return MMS_EINVAL;
    m = calloc(1, sizeof *m);
    if (m == NULL)
        return mms__failf(why, why_len, MMS_ENOMEM, path, "%s", mms_strerror(MMS_ENOMEM));
    rc = mms__st_open(path, &m->st, why, why_len);
    if (rc < 0)
        goto fail;
    json = mms__st_meta(m->st, CARD_KEY);
    if (json == NULL) {
        rc = mms__failf(why, why_len, MMS_EMODEL, path, "no model card (__metadata__ key '%s')",
                        CARD_KEY);
        goto fail;
    }
    rc = mms__card_parse(json, &m->card, sub, sizeof sub);
    if (rc < 0) {
        mms__failf(why, why_len, rc, path, "%s", sub);
        goto fail;
    }
    rc = check_names(m, path, why, why_len);
    if (rc < 0)
        goto fail;
    *out = m;
    return 0;
fail:
    mms_model_free(m);
    return rc;
}

void
mms_model_free(struct mms_model *m)
{
    if (m == NULL)
        return;
    free(m->tensors);
    mms__card_fini(&m->card);
    mms__st_close(m->st);
    free(m);
}

const struct mms_card *
mms_model_card(const struct mms_model *m)
{
    return &m->card;
}

const char *
mms_model_sha256(const struct mms_model *m)
{
    return mms__st_sha256(m->st);
}

int
mms_model_members(const struct mms_model *m)
{
    return m->card.arch.n_members;
}

const struct mms_tensor *
mms_model_member_tensor(const struct mms_model *m, int member, const char *name)
{
    if (m->card.arch.n_members <= 1)
        return member == 0 ? mms_model_tensor(m, name) : NULL;
    if (member < 0 || member >= m->card.arch.n_members)
        return NULL;
    char full[NAME_MAX_LEN + 16];
    if (snprintf(full, sizeof full, MEMBER_PREFIX "%d.%s", member, name) >= (int)sizeof full)
        return NULL;
    return mms_model_tensor(m, full);
}

const struct mms_tensor *
mms_model_tensor(const struct mms_model *m, const char *name)
{
    const struct mms_tensor **t =
        bsearch(name, m->tensors, (size_t)m->n, sizeof *m->tensors, tensor_find);
    return t != NULL ? *t : NULL;
}

int
mms_model_tensor_count(const struct mms_model *m)
{
    return m->n;
}

int64_t
mms_model_param_count(const struct mms_model *m)
{
    return m->params;
}
