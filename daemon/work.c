/* daemon/work: one series from files to labels, SEG and NIfTI (work.h). The decoding runs
 * in a sandbox child (sandbox.h) that returns the volume through a shared mapping.
 * Threads: any. */
#include "daemon/work.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/cpus.h"
#include "common/crashpoint.h"
#include "common/err.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/uid.h"
#include "dicom/rtstruct.h"
#include "dicom/sc.h"

/* " + " between the n texts of the models' cards (what(card) each), into a new string. */
static char *
joined(const struct mms_engine *e, const char *(*what)(const struct mms_card *))
{
    size_t len = 1;
    for (int k = 0; k < e->n_models; k++)
        len += strlen(what(mms_model_card(e->models[k]))) + 3;
    char *out = malloc(len);
    if (out == NULL)
        return NULL;
    out[0] = '\0';
    for (int k = 0; k < e->n_models; k++) {
        if (k > 0)
            strcat(out, " + ");
        strcat(out, what(mms_model_card(e->models[k])));
    }
    return out;
}

static const char *
card_name(const struct mms_card *c)
{
    return c->name;
}

static const char *
card_version(const struct mms_card *c)
{
    return c->version;
}

/* The set's identity and card: its members' digests, their labels renumbered after each
 * other (design: "model sets" in the README). */
static int
set_init(struct mms_engine *e, char *why, size_t why_len)
{
    struct mms_sha256 c;
    uint8_t d[32];
    int n = 0;
    mms_sha256_init(&c);
    for (int k = 0; k < e->n_models; k++) {
        const struct mms_card *card = mms_model_card(e->models[k]);
        e->label_offset[k] = n;
        n += card->arch.num_classes - 1;
        if (k > 0)
            mms_sha256_update(&c, ",", 1);
        mms_sha256_update(&c, mms_model_sha256(e->models[k]), 64);
    }
    mms_sha256_final(&c, d);
    if (e->n_models == 1) {
        snprintf(e->sha256, sizeof e->sha256, "%s", mms_model_sha256(e->models[0]));
        return 0;
    }
    mms_sha256_hex(d, e->sha256);
    if (n > 255)
        return mms_why(why, why_len, MMS_EINVAL,
                       "model set %s: %d labels in all, more than the 255 a label map holds",
                       e->model_path, n);
    e->set_card = *mms_model_card(e->models[0]);
    e->set_card.n_labels = 0;
    e->set_card.labels = NULL;
    e->set_card.name = joined(e, card_name);
    e->set_card.version = joined(e, card_version);
    struct mms_label *l = calloc((size_t)n + 1, sizeof *l);
    if (l == NULL || e->set_card.name == NULL || e->set_card.version == NULL) {
        free(l);
        return mms_why(why, why_len, MMS_ENOMEM, "model set: out of memory");
    }
    for (int k = 0; k < e->n_models; k++) {
        const struct mms_card *card = mms_model_card(e->models[k]);
        for (int i = 0; i < card->n_labels; i++) {
            l[e->set_card.n_labels] = card->labels[i];
            l[e->set_card.n_labels++].id += e->label_offset[k];
        }
    }
    e->set_card.labels = l;
    return 0;
}

/* The CPUs of inference, recorded by mms_work_cpus_apply(); empty when not set. */
static struct mms_cpus infer_cpus;

int
mms_work_cpus_apply(const struct mms_config *cfg, char *why, size_t why_len)
{
    struct mms_cpus allowed, infer, rest;
    char a[256], b[256];
    int rc;
    if (cfg->infer.cpus == NULL || cfg->infer.cpus[0] == '\0')
        return 0;
    if ((rc = mms_cpus_get(&allowed)) < 0)
        return mms_why(why, why_len, rc, "[infer] cpus: %s", mms_strerror(rc));
    char msg[512];
    if ((rc = mms_cpus_split(cfg->infer.cpus, &allowed, &infer, &rest, msg, sizeof msg)) < 0)
        return mms_why(why, why_len, rc, "[infer] cpus: %s", msg);
    if ((rc = mms_cpus_pin(&rest)) < 0)
        return mms_why(why, why_len, rc, "[infer] cpus: %s", mms_strerror(rc));
    infer_cpus = infer;
    mms_cpus_format(&infer, a, sizeof a);
    mms_cpus_format(&rest, b, sizeof b);
    mms_log(MMS_LOG_NOTICE, "CPUs: inference on %s, the rest (intake, decoding, outputs) on %s", a,
            b);
    return 0;
}

int
mms_work_infer_cpu_count(void)
{
    int n = mms_cpus_count(&infer_cpus);
    return n > 0 ? n : mms_cpus_usable();
}

int
mms_work_model_files(const char *model, char *buf, size_t buf_len, char *files[MMS_MAX_MODELS],
                     char *why, size_t why_len)
{
    if (strlen(model) >= buf_len)
        return mms_why(why, why_len, MMS_EINVAL, "model path too long: %.64s...", model);
    snprintf(buf, buf_len, "%s", model);
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ' || *t == '\t')
            t++;
        for (char *end = t + strlen(t); end > t && (end[-1] == ' ' || end[-1] == '\t');)
            *--end = '\0';
        if (*t == '\0' || n == MMS_MAX_MODELS)
            return mms_why(why, why_len, MMS_EINVAL,
                           "model %s: a list of 1 to %d files separated by ','", model,
                           MMS_MAX_MODELS);
        files[n++] = t;
    }
    if (n == 0)
        return mms_why(why, why_len, MMS_EINVAL, "no model file given");
    return n;
}

int
mms_engine_open(const char *model, const char *backend, int device, int precision, int threads,
                struct mms_engine *e, char *why, size_t why_len)
{
    memset(e, 0, sizeof *e);
    e->device = device;
    e->threads = threads;
    /* the list reader refuses a setting longer than model_path holds */
    char list[sizeof e->model_path], *files[MMS_MAX_MODELS];
    int n = mms_work_model_files(model, list, sizeof list, files, why, why_len);
    if (n < 0)
        return n;
    snprintf(e->model_path, sizeof e->model_path, "%s", model);
    char mwhy[512];
    int rc;
    for (e->n_models = 0; e->n_models < n; e->n_models++)
        if ((rc = mms_model_load(files[e->n_models], &e->models[e->n_models], mwhy, sizeof mwhy)) <
            0)
            return mms_why(why, why_len, rc, "model %s: %s", files[e->n_models], mwhy);
    if ((rc = set_init(e, why, why_len)) < 0)
        return rc;
    struct mms_backend_params bp = {
        .threads = threads, .device = device, .precision = precision, .cpus = &infer_cpus};
    const char *pwhy = strcmp(backend, "cpu") == 0 ? mms_cpu_precision_why(precision) : NULL;
    if (pwhy != NULL)
        return mms_why(why, why_len, MMS_ENOTSUP, "backend cpu, precision %s: %s",
                       mms_precision_name(precision), pwhy);
    if ((rc = mms_backend_open(backend, &bp, &e->be)) < 0)
        return mms_why(why, why_len, rc, "backend %s: %s", backend, mms_strerror(rc));
    size_t total;
    if (mms_backend_memory(e->be, &e->device_free, &total) < 0)
        e->device_free = 0; /* host memory: no device limit */
    for (int k = 0; k < n; k++) {
        const struct mms_card *card = mms_model_card(e->models[k]);
        if ((rc = mms_net_new(e->models[k], e->be, card->inf.patch, 0, &e->nets[k])) < 0)
            return mms_why(why, why_len, rc, "model %s on backend %s: %s", files[k],
                           mms_backend_name(e->be), mms_strerror(rc));
    }
    return 0;
}

const struct mms_card *
mms_engine_card(const struct mms_engine *e)
{
    return e->n_models > 1 ? &e->set_card : mms_model_card(e->models[0]);
}

void
mms_engine_describe(const struct mms_engine *e, char *out, size_t len)
{
    const char *b = e->be != NULL ? mms_backend_name(e->be) : "none";
    if (strcmp(b, "cpu") == 0)
        snprintf(out, len, "cpu");
    else
        snprintf(out, len, "%s:%d", b, e->device);
}

void
mms_engine_close(struct mms_engine *e)
{
    for (int k = 0; k < MMS_MAX_MODELS; k++)
        mms_net_free(e->nets[k]);
    mms_backend_free(e->be);
    for (int k = 0; k < MMS_MAX_MODELS; k++)
        mms_model_free(e->models[k]);
    if (e->n_models > 1) { /* the set card's own parts; the rest is the models' */
        free(e->set_card.labels);
        free(e->set_card.name);
        free(e->set_card.version);
    }
    memset(e, 0, sizeof *e);
}

void
mms_work_opts_from_config(const struct mms_config *cfg, struct mms_work_opts *wo,
                          const char **backend)
{
    static const char *const backends[] = {"auto", "cpu", "cuda"};
    memset(wo, 0, sizeof *wo);
    *backend = backends[cfg->infer.backend];
    mms_pipe_opts_default(&wo->pipe);
    wo->pipe.tta = cfg->infer.tta;
    wo->pipe.postprocess = cfg->infer.postprocessing;
    wo->pipe.tile_step = cfg->infer.tile_step;
    wo->pipe.threads = (int)cfg->infer.threads;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    wo->pipe.max_memory = cfg->infer.max_memory_mb > 0 ? (size_t)cfg->infer.max_memory_mb << 20
                          : pages > 0 && page > 0      ? (size_t)pages / 10 * 8 * (size_t)page
                                                       : 0;
    wo->pipe.max_device_memory = (size_t)cfg->infer.max_device_memory_mb << 20;
    wo->vol.stack.max_gap_ratio = cfg->series.max_gap_ratio;
    wo->vol.stack.allow_gaps = cfg->series.allow_gaps;
    wo->vol.stack.min_slices = (int)cfg->series.min_slices;
    wo->vol.max_voxels = cfg->series.max_voxels;
    wo->vol.threads = (int)cfg->series.decode_threads;
    long cpus = wo->vol.threads > 0 ? wo->vol.threads : mms_cpus_usable();
    wo->decode_lim.max_memory = (size_t)cfg->daemon.decode_max_memory_mb << 20;
    wo->decode_lim.timeout_ms = cfg->daemon.decode_timeout_s * 1000U;
    /* CPU time adds up over the decoding threads */
    wo->decode_lim.cpu_s = cfg->daemon.decode_timeout_s * (unsigned)(cpus > 0 ? cpus : 1);
    wo->decode_lim.threads = true;
    mms_sandbox_set_enabled(cfg->daemon.isolate);
    wo->run = 1;
    wo->seg_form.keep_empty = cfg->seg.empty_frames == MMS_EMPTY_FRAMES_KEEP;
    wo->seg_form.labelmap = cfg->seg.type == MMS_SEG_TYPE_LABELMAP;
    wo->seg_description = cfg->seg.series_description;
    wo->preview_sc = cfg->seg.preview_sc;
    wo->rtstruct = cfg->seg.rtstruct;
}

const char *
mms_stage_name(int stage)
{
    static const char *const names[] = {"decode", "infer", "output"};
    return stage >= 0 && stage < 3 ? names[stage] : "?";
}

/* The engine's view of a volume. */
static void
ct_of(const struct mms_volume *v, struct mms_ct *ct)
{
    memset(ct, 0, sizeof *ct);
    ct->cols = v->dims[0];
    ct->rows = v->dims[1];
    ct->slices = v->dims[2];
    ct->hu = v->hu;
    ct->col_mm = v->spacing[0];
    ct->row_mm = v->spacing[1];
    ct->slice_mm = v->spacing[2];
    for (int i = 0; i < 3; i++) {
        ct->u_c[i] = v->dir[i][0];
        ct->u_r[i] = v->dir[i][1];
        ct->normal[i] = v->normal[i];
    }
    ct->ipp = (const double(*)[3])v->ipp;
    ct->pos_mm = v->pos_mm;
}

/* The device memory limit of a job on engine e (0: none). */
static size_t
device_limit(const struct mms_engine *e, const struct mms_pipe_opts *o)
{
    if (e->device_free == 0)
        return 0;
    return o->max_device_memory > 0 ? o->max_device_memory : e->device_free / 10 * 9;
}

int
mms_work_plan(const struct mms_engine *e, int k, const struct mms_ct *ct,
              const struct mms_pipe_opts *o, struct mms_pipe_opts *used, struct mms_pipe_stats *st,
              unsigned *degraded, char *why, size_t why_len)
{
    static const char *const step[4] = {"as configured", "with one tile per network call",
                                        "with one tile per network call and no mirroring",
                                        "on the CPU"};
    char tried[4][112];
    int n = 0, rc = 0;
    bool device_short = false; /* the device limit was exceeded */
    *used = *o;
    used->max_device_memory = device_limit(e, o);
    *degraded = 0;
    for (int s = 0; s < 4; s++) {
        const struct mms_net *net = e->nets[k];
        if (s == 1) {
            if (mms_net_max_batch(net) <= 1 && o->max_batch != 1)
                continue; /* one per call already */
            used->max_batch = 1;
            *degraded |= MMS_DEGRADE_BATCH;
        } else if (s == 2) {
            if (!o->tta || (mms_model_card(e->models[k])->inf.mirror_axes & 7u) == 0)
                continue; /* no mirroring to give up */
            used->tta = false;
            *degraded |= MMS_DEGRADE_NO_TTA;
        } else if (s == 3) {
            if (!device_short)
                continue; /* the CPU has no more host memory than the GPU engine */
            *used = *o;
            used->window = MMS_PIPE_WINDOW_HOST;
            used->max_device_memory = 0;
            *degraded = MMS_DEGRADE_CPU;
            net = NULL;
        }
        if ((rc = mms_pipe_plan(ct, e->models[k], net, used, st, why, why_len)) == 0 && s == 3)
            mms_why(why, why_len, 0, "an estimated %s%s%s%s%s: more than the limit of %zu MiB",
                    tried[0], n > 1 ? ", " : "", n > 1 ? tried[1] : "", n > 2 ? ", " : "",
                    n > 2 ? tried[2] : "", device_limit(e, o) >> 20);
        if (rc != MMS_ENOMEM)
            return rc; /* fits, or fails for another reason than memory */
        bool host_short = used->max_memory > 0 && st->memory_estimate > used->max_memory;
        device_short = !host_short;
        if (host_short)
            snprintf(tried[n], sizeof tried[0], "%zu MiB %s%s",
                     (st->memory_estimate + (1u << 20) - 1) >> 20, n == 0 ? "of memory " : "",
                     step[s]);
        else
            snprintf(tried[n], sizeof tried[0], "%zu MiB of device memory %s",
                     (st->device_memory_estimate + (1u << 20) - 1) >> 20, step[s]);
        n++;
    }
    char limits[96] = "";
    size_t dev = device_limit(e, o);
    if (dev > 0)
        snprintf(limits, sizeof limits, " of memory, or %zu MiB of device memory", dev >> 20);
    return mms_why(why, why_len, MMS_ENOMEM,
                   "the job needs an estimated %s%s%s%s%s%s%s: more than the limit of %zu MiB%s",
                   tried[0], n > 1 ? ", " : "", n > 1 ? tried[1] : "", n > 2 ? ", " : "",
                   n > 2 ? tried[2] : "", n > 3 ? ", " : "", n > 3 ? tried[3] : "",
                   o->max_memory >> 20, limits);
}

/* mms_volume_opts.plan: the plan of the job from the geometry, before decoding. */
struct plan_arg {
    const struct mms_engine *e;
    const struct mms_pipe_opts *o;
};

static int
plan_volume(void *arg, const struct mms_volume *v, char *why, size_t why_len)
{
    const struct plan_arg *a = arg;
    struct mms_ct ct;
    struct mms_pipe_opts used;
    struct mms_pipe_stats st;
    unsigned degraded;
    ct_of(v, &ct);
    char reason[768];
    int rc = 0;
    for (int k = 0; k < a->e->n_models && rc == 0; k++)
        rc = mms_work_plan(a->e, k, &ct, a->o, &used, &st, &degraded, reason, sizeof reason);
    if (rc < 0)
        mms_why(why, why_len, rc, "%s (planned from the headers, before decoding)", reason);
    return rc;
}

/* The segment of label l as the card defines it, and its PatientSex variants. */
static void
segment_of(const struct mms_label *l, struct mms_seg_segment *s, struct mms_seg_segment sex[3])
{
    memset(s, 0, sizeof *s);
    s->label = l->id;
    s->segment_label = l->segment_label;
    s->category = (struct mms_seg_code){l->category.scheme, l->category.code, l->category.meaning};
    s->type = (struct mms_seg_code){l->type.scheme, l->type.code, l->type.meaning};
    s->has_modifier = l->has_modifier;
    s->modifier = (struct mms_seg_code){l->modifier.scheme, l->modifier.code, l->modifier.meaning};
    memcpy(s->rgb, l->rgb, 3);
    for (int x = 0; x < 3; x++) {
        const struct mms_label_sex *b = &l->by_sex[x];
        if (!b->present)
            continue;
        sex[x] = *s;
        if (b->segment_label != NULL)
            sex[x].segment_label = b->segment_label;
        if (b->has_category)
            sex[x].category =
                (struct mms_seg_code){b->category.scheme, b->category.code, b->category.meaning};
        if (b->has_type)
            sex[x].type = (struct mms_seg_code){b->type.scheme, b->type.code, b->type.meaning};
        if (b->has_rgb)
            memcpy(sex[x].rgb, b->rgb, 3);
        s->by_sex[x] = &sex[x];
    }
}

void
mms_work_output_uids(const char *kind, const char *sha256, const char *source_series, int run,
                     char series_uid[65], char sop_uid[65])
{
    char name[512];
    snprintf(name, sizeof name, "mmsegd %s series|%s|%s|%d", kind, source_series, sha256, run);
    mms_uid_uuid5(name, series_uid);
    snprintf(name, sizeof name, "mmsegd %s instance|%s|%s|%d", kind, source_series, sha256, run);
    mms_uid_uuid5(name, sop_uid);
}

/* An output's identity: the source's header with its UIDs (derived where the files have
 * none), and the output's own Series and SOP Instance UIDs (mms_work_output_uids). */
struct output_ids {
    struct mms_header h;
    char series_uid[65], sop_uid[65];
};

static void
output_ids_of(const char *kind, const char *sha256, const struct mms_header *h0, int run,
              struct output_ids *id)
{
    id->h = *h0;
    mms_header_derive_uids(&id->h);
    mms_work_output_uids(kind, sha256, id->h.series_uid, run, id->series_uid, id->sop_uid);
}

int
mms_work_write_seg(const struct mms_card *card, const char *sha256, const char *const *paths,
                   const struct mms_header *h0, const struct mms_volume *v, const uint8_t *labels,
                   int run, struct mms_seg_form form, const char *description, const char *path,
                   struct mms_seg_result *res, char *why, size_t why_len)
{
    struct mms_seg_segment *seg = calloc((size_t)card->n_labels + 1, sizeof *seg);
    struct mms_seg_segment *sex = calloc(3 * ((size_t)card->n_labels + 1), sizeof *sex);
    if (seg == NULL || sex == NULL) {
        free(seg);
        free(sex);
        return MMS_ENOMEM;
    }
    for (int i = 0; i < card->n_labels; i++)
        segment_of(&card->labels[i], &seg[i], &sex[3 * i]);

    struct output_ids id;
    output_ids_of("seg", sha256, h0, run, &id);
    const struct mms_header h = id.h;

    struct mms_seg_input in = {
        .vol = v,
        .paths = paths,
        .labels = labels,
        .segments = seg,
        .n_segments = card->n_labels,
        .algorithm_name = card->name,
        .algorithm_version = card->version,
        .model_sha256 = sha256,
        .series_description = description,
        .software_version = PACKAGE_VERSION,
        .series_number = 9900 + run,
        .study_uid = h.study_uid,
        .source_series_uid = h.series_uid,
        .frame_of_ref_uid = h.slice.frame_of_ref,
        .series_uid = id.series_uid,
        .sop_instance_uid = id.sop_uid,
        .form = form,
    };
    int rc = mms_seg_write(&in, path, res, why, why_len);
    free(seg);
    free(sex);
    return rc;
}

int
mms_work_write_rtstruct(const struct mms_card *card, const char *sha256, const char *const *paths,
                        const struct mms_header *h0, const struct mms_volume *v,
                        const uint8_t *labels, int run, const char *path,
                        struct mms_rtstruct_result *res, char *why, size_t why_len)
{
    struct mms_rtstruct_roi *roi = calloc((size_t)card->n_labels + 1, sizeof *roi);
    if (roi == NULL)
        return MMS_ENOMEM;
    for (int i = 0; i < card->n_labels; i++) {
        const struct mms_label *l = &card->labels[i];
        roi[i].label = l->id;
        roi[i].name = l->segment_label != NULL ? l->segment_label : l->name;
        memcpy(roi[i].rgb, l->rgb, 3);
    }
    struct output_ids id;
    output_ids_of("rtstruct", sha256, h0, run, &id);
    const struct mms_header h = id.h;
    struct mms_rtstruct_input in = {
        .vol = v,
        .paths = paths,
        .labels = labels,
        .rois = roi,
        .n_rois = card->n_labels,
        .algorithm_name = card->name,
        .algorithm_version = card->version,
        .software_version = PACKAGE_VERSION,
        .series_number = 9850 + run,
        .study_uid = h.study_uid,
        .source_series_uid = h.series_uid,
        .frame_of_ref_uid = h.slice.frame_of_ref,
        .series_uid = id.series_uid,
        .sop_instance_uid = id.sop_uid,
    };
    int rc = mms_rtstruct_write(&in, path, res, why, why_len);
    free(roi);
    return rc;
}

/* The preview img as the Secondary Capture of the result (dicom/sc.h) at path, in its own
 * series of the source's study; UIDs as the SEG's (mms_work_output_uids "sc"). */
static int
write_sc(const struct mms_card *card, const char *sha256, const char *const *paths,
         const struct mms_header *h0, int run, const struct mms_preview_image *img,
         const char *path, char *why, size_t why_len)
{
    struct output_ids id;
    output_ids_of("sc", sha256, h0, run, &id);
    const struct mms_header h = id.h;
    struct mms_sc_input in = {
        .source_path = paths[0],
        .study_uid = h.study_uid,
        .source_series_uid = h.series_uid,
        .series_uid = id.series_uid,
        .sop_instance_uid = id.sop_uid,
        .series_number = 9800 + run,
        .series_description = NULL,
        .algorithm_name = card->name,
        .software_version = PACKAGE_VERSION,
        .rgb = img->rgb,
        .width = img->width,
        .height = img->height,
    };
    return mms_sc_write(&in, path, why, why_len);
}

/* ------------------------------------------------------------------ isolated decoding */
/* The decoding child's shared mapping: this head, the state of each file (FILE_*), then the
 * volume's arrays at the offsets of struct vol_layout. */
struct vol_head {
    int rc;
    int crashed_file; /* the file the crashing thread was decoding, or -1 */
    bool planned_out; /* the plan refused the job before decoding (its own reason in why) */
    char why[1024];
    struct mms_volume v; /* its scalars; the pointers are the child's */
};

enum { FILE_WAITING, FILE_DECODING, FILE_DONE };

struct vol_layout {
    size_t voxels, slices;                          /* room for */
    size_t state_at, hu_at, ipp_at, pos_at, src_at; /* byte offsets */
    size_t len;
};

struct vol_arg {
    const char *const *paths;
    const struct mms_header *h;
    int n;
    struct mms_volume_opts o;
    struct vol_layout L;
    unsigned char *shm;
    int (*plan)(void *arg, const struct mms_volume *v, char *why, size_t why_len); /* o's */
    void *plan_arg;
};

static bool
add_aligned(size_t *at, size_t count, size_t size, size_t *next)
{
    size_t bytes, a = (*next + 63) & ~(size_t)63;
    if (a < *next || __builtin_mul_overflow(count, size, &bytes) ||
        __builtin_add_overflow(a, bytes, next))
        return false;
    *at = a;
    return true;
}

/* Room for the largest volume the headers allow: rows x columns x frames of every file, at
 * most max_voxels, and one slice per frame. */
static int
plan_layout(const struct mms_header *h, int n, uint64_t max_voxels, struct vol_layout *L)
{
    uint64_t vox = 0, slices = 0;
    for (int i = 0; i < n; i++) {
        int64_t rows = h[i].pix.rows > 0 ? h[i].pix.rows : h[i].slice.rows;
        int64_t cols = h[i].pix.cols > 0 ? h[i].pix.cols : h[i].slice.cols;
        int64_t frames = h[i].frames > 0 ? h[i].frames : 1;
        uint64_t f;
        if (rows < 0 || cols < 0 || __builtin_mul_overflow((uint64_t)rows, (uint64_t)cols, &f) ||
            __builtin_mul_overflow(f, (uint64_t)frames, &f) ||
            __builtin_add_overflow(vox, f, &vox) ||
            __builtin_add_overflow(slices, (uint64_t)frames, &slices))
            return MMS_EDICOM;
    }
    if (max_voxels > 0 && vox > max_voxels)
        vox = max_voxels; /* mms_volume_build() refuses more */
    if (vox == 0)
        vox = 1;
    if (vox > SIZE_MAX / 8 || slices > (uint64_t)INT32_MAX)
        return MMS_EDICOM;
    memset(L, 0, sizeof *L);
    L->voxels = (size_t)vox;
    L->slices = (size_t)slices;
    size_t next = sizeof(struct vol_head);
    if (!add_aligned(&L->state_at, (size_t)n, 1, &next) ||
        !add_aligned(&L->hu_at, L->voxels, sizeof(float), &next) ||
        !add_aligned(&L->ipp_at, L->slices, sizeof(double[3]), &next) ||
        !add_aligned(&L->pos_at, L->slices, sizeof(double), &next) ||
        !add_aligned(&L->src_at, L->slices, sizeof(struct mms_volume_src), &next))
        return MMS_EDICOM;
    L->len = next;
    return 0;
}

/* In the child: the file each decoding thread is on, and where a crash handler records it. */
static __thread int cur_file = -1;
static int *crashed_file;

/* In the child, on the crashing thread: note its file, then end as the signal would have. */
static void
on_crash(int sig)
{
    if (crashed_file != NULL)
        *crashed_file = cur_file;
    raise(sig); /* SA_RESETHAND: the default action now */
}

/* In the child, on a decoding thread: the file's state, for the reason of a crash. */
static void
on_file(void *arg, int file, bool done)
{
    struct vol_arg *a = arg;
    cur_file = done ? -1 : file;
    __atomic_store_n(a->shm + a->L.state_at + file, done ? FILE_DONE : FILE_DECODING,
                     __ATOMIC_RELEASE);
    if (!done && mms_sandbox_test_crash("decode", a->h[file].sop_instance))
        mms_sandbox_crash_now();
}

/* In the child: the caller's plan, noting a refusal (its MMS_ENOMEM is not the child's). */
static int
child_plan(void *arg, const struct mms_volume *v, char *why, size_t why_len)
{
    struct vol_arg *a = arg;
    int rc = a->plan(a->plan_arg, v, why, why_len);
    ((struct vol_head *)(void *)a->shm)->planned_out = rc < 0;
    return rc;
}

/* In the child: build the volume and copy it into the shared mapping. */
static int
vol_child(void *arg, void *shm, size_t len)
{
    struct vol_arg *a = arg;
    struct vol_head *hd = shm;
    struct mms_volume *v = NULL;
    (void)len;
    a->shm = shm;
    hd->crashed_file = -1;
    crashed_file = &hd->crashed_file;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_crash;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        (void)sigaction(sigs[i], &sa, NULL); /* without it, the reason names fewer files */
    a->o.on_file = on_file;
    a->o.on_file_arg = a;
    if (a->o.plan != NULL) {
        a->plan = a->o.plan;
        a->plan_arg = a->o.plan_arg;
        a->o.plan = child_plan;
        a->o.plan_arg = a;
    }
    int rc = mms_volume_build(a->paths, a->h, a->n, &a->o, &v, hd->why, sizeof hd->why);
    if (rc == 0) {
        size_t nz = (size_t)v->dims[2], nv = (size_t)v->dims[0] * (size_t)v->dims[1] * nz;
        if (nv > a->L.voxels || nz > a->L.slices) { /* cannot be: the headers bound it */
            rc =
                mms_why(hd->why, sizeof hd->why, MMS_EDICOM,
                        "series %s: the volume is larger than its headers say", a->h[0].series_uid);
        } else {
            unsigned char *b = shm;
            memcpy(b + a->L.hu_at, v->hu, nv * sizeof *v->hu);
            memcpy(b + a->L.ipp_at, v->ipp, nz * sizeof *v->ipp);
            memcpy(b + a->L.pos_at, v->pos_mm, nz * sizeof *v->pos_mm);
            memcpy(b + a->L.src_at, v->src, nz * sizeof *v->src);
            hd->v = *v;
        }
    }
    mms_volume_free(v);
    hd->rc = rc;
    return rc;
}

/* The parent's own copy of the child's volume. */
static int
vol_copy(const unsigned char *shm, const struct vol_layout *L, struct mms_volume **out)
{
    const struct vol_head *hd = (const void *)shm;
    size_t nz = (size_t)hd->v.dims[2], nv = (size_t)hd->v.dims[0] * (size_t)hd->v.dims[1] * nz;
    struct mms_volume *v = malloc(sizeof *v);
    if (v == NULL)
        return MMS_ENOMEM;
    *v = hd->v;
    v->hu = NULL;
    const size_t huge = (size_t)2 << 20, bytes = nv * sizeof(float);
    void *p = NULL;
    if (bytes >= 4 * huge && posix_memalign(&p, huge, bytes) == 0)
        (void)madvise(p, bytes, MADV_HUGEPAGE); /* as volume.c: advice only */
    else if (bytes < 4 * huge)
        p = malloc(bytes > 0 ? bytes : 1);
    v->hu = p;
    v->ipp = malloc(nz * sizeof *v->ipp);
    v->pos_mm = malloc(nz * sizeof *v->pos_mm);
    v->src = malloc(nz * sizeof *v->src);
    if (v->hu == NULL || v->ipp == NULL || v->pos_mm == NULL || v->src == NULL) {
        mms_volume_free(v);
        return MMS_ENOMEM;
    }
    memcpy(v->hu, shm + L->hu_at, bytes);
    memcpy(v->ipp, shm + L->ipp_at, nz * sizeof *v->ipp);
    memcpy(v->pos_mm, shm + L->pos_at, nz * sizeof *v->pos_mm);
    memcpy(v->src, shm + L->src_at, nz * sizeof *v->src);
    *out = v;
    return 0;
}

int
mms_work_volume(const char *const *paths, const struct mms_header *h, int n,
                const struct mms_volume_opts *o, const struct mms_sandbox_limits *lim,
                struct mms_volume **out, char *why, size_t why_len)
{
    if (!mms_sandbox_enabled() || n < 1 || paths == NULL || h == NULL)
        return mms_volume_build(paths, h, n, o, out, why, why_len);
    const char *series = h[0].series_uid[0] != '\0' ? h[0].series_uid : "(no Series Instance UID)";
    struct vol_arg a = {.paths = paths, .h = h, .n = n, .o = *o};
    if (plan_layout(h, n, o->max_voxels, &a.L) < 0)
        return mms_why(why, why_len, MMS_EDICOM, "series %s: the image sizes overflow", series);
    unsigned char *shm = mms_sandbox_shm_new(a.L.len);
    if (shm == NULL)
        return mms_why(why, why_len, MMS_ENOMEM, "series %s: no room for the volume (%zu MB)",
                       series, a.L.len >> 20);
    struct mms_sandbox_result res;
    struct vol_head *hd = (void *)shm;
    int rc = mms_sandbox_run(vol_child, &a, shm, a.L.len, lim, &res);
    if (rc < 0) {
        mms_why(why, why_len, rc, "series %s: %s", series, mms_strerror(rc));
    } else if (res.outcome == MMS_SANDBOX_NOTSTART) {
        rc = mms_why(why, why_len, res.fn_rc, "series %s: decoder %s", series, res.what);
    } else if (res.outcome == MMS_SANDBOX_OK || hd->planned_out) {
        if ((rc = res.fn_rc) < 0)
            mms_why(why, why_len, rc, "%s", hd->why);
        else if ((rc = vol_copy(shm, &a.L, out)) < 0)
            mms_why(why, why_len, rc, "series %s: out of memory for the volume", series);
    } else {
        const unsigned char *state = shm + a.L.state_at;
        int at = -1, busy = 0;
        if (res.outcome == MMS_SANDBOX_CRASHED && hd->crashed_file >= 0 && hd->crashed_file < n) {
            at = hd->crashed_file; /* the crashing thread's own file */
        } else {
            for (int i = 0; i < n; i++)
                if (__atomic_load_n(&state[i], __ATOMIC_ACQUIRE) == FILE_DECODING) {
                    busy++;
                    if (at < 0)
                        at = i;
                }
        }
        if (at >= 0)
            rc = mms_why(why, why_len, MMS_EDICOM, "series %s: decoder %s on %s%s", series,
                         res.what, paths[at], busy > 1 ? " (or a file decoded beside it)" : "");
        else
            rc = mms_why(why, why_len, MMS_EDICOM, "series %s: decoder %s%s%s", series, res.what,
                         res.outcome == MMS_SANDBOX_NOMEM && hd->why[0] != '\0' ? ": " : "",
                         res.outcome == MMS_SANDBOX_NOMEM ? hd->why : "");
    }
    mms_sandbox_shm_free(shm, a.L.len);
    return rc;
}

/* The header reading child's shared mapping: this head, then a state (FILE_*) and a header
 * for each file. */
struct hdr_head {
    int rc;
    char why[512]; /* why the first file that failed did, naming it */
};

struct hdr_arg {
    const char *const *paths;
    int n;
    size_t state_at, h_at;
};

static int
hdr_child(void *arg, void *shm, size_t len)
{
    struct hdr_arg *a = arg;
    struct hdr_head *hd = shm;
    unsigned char *state = (unsigned char *)shm + a->state_at;
    struct mms_header *h = (void *)((unsigned char *)shm + a->h_at);
    (void)len;
    for (int i = 0; i < a->n; i++) {
        state[i] = FILE_DECODING;
        int rc = mms_header_read(a->paths[i], &h[i], hd->why, sizeof hd->why);
        if (rc < 0) {
            hd->rc = rc;
            return rc;
        }
        state[i] = FILE_DONE;
    }
    return 0;
}

int
mms_work_headers(const char *const *paths, int n, const struct mms_sandbox_limits *lim,
                 struct mms_header *h, char *why, size_t why_len)
{
    char hwhy[512];
    if (!mms_sandbox_enabled() || n < 1) {
        for (int i = 0; i < n; i++) {
            int rc = mms_header_read(paths[i], &h[i], hwhy, sizeof hwhy);
            if (rc < 0) /* hwhy names the file */
                return mms_why(why, why_len, rc, "%s", hwhy);
        }
        return 0;
    }
    struct hdr_arg a = {.paths = paths, .n = n};
    size_t next = sizeof(struct hdr_head);
    if (!add_aligned(&a.state_at, (size_t)n, 1, &next) ||
        !add_aligned(&a.h_at, (size_t)n, sizeof *h, &next))
        return mms_why(why, why_len, MMS_ENOMEM, "%d headers: out of memory", n);
    unsigned char *shm = mms_sandbox_shm_new(next);
    if (shm == NULL)
        return mms_why(why, why_len, MMS_ENOMEM, "%d headers: out of memory", n);
    struct hdr_head *hd = (void *)shm;
    struct mms_sandbox_result res;
    int rc = mms_sandbox_run(hdr_child, &a, shm, next, lim, &res);
    if (rc < 0) {
        mms_why(why, why_len, rc, "headers: %s", mms_strerror(rc));
    } else if (res.outcome == MMS_SANDBOX_NOTSTART) {
        rc = mms_why(why, why_len, res.fn_rc, "header parser %s", res.what);
    } else if (res.outcome == MMS_SANDBOX_OK && (rc = res.fn_rc) < 0) {
        mms_why(why, why_len, rc, "%s", hd->why); /* it names the file */
    } else if (res.outcome == MMS_SANDBOX_OK) {
        memcpy(h, shm + a.h_at, (size_t)n * sizeof *h);
    } else {
        int at = -1;
        for (int i = 0; i < n && at < 0; i++)
            if (shm[a.state_at + (size_t)i] == FILE_DECODING)
                at = i;
        rc = mms_why(why, why_len, MMS_EDICOM, "header parser %s%s%s", res.what,
                     at >= 0 ? " on " : "", at >= 0 ? paths[at] : "");
    }
    mms_sandbox_shm_free(shm, next);
    return rc;
}

/* The figures of one model's pipeline added to those of the set: the first model's shapes,
 * the sums of the counts and times, the larger memory estimates. */
static void
add_stats(struct mms_pipe_stats *all, const struct mms_pipe_stats *st, bool first)
{
    if (first) {
        *all = *st;
        return;
    }
    all->tiles += st->tiles;
    all->passes += st->passes;
    all->memory_estimate =
        st->memory_estimate > all->memory_estimate ? st->memory_estimate : all->memory_estimate;
    all->device_memory_estimate = st->device_memory_estimate > all->device_memory_estimate
                                      ? st->device_memory_estimate
                                      : all->device_memory_estimate;
    all->window_on_backend = all->window_on_backend && st->window_on_backend;
    all->preprocess_s += st->preprocess_s;
    all->network_s += st->network_s;
    all->export_s += st->export_s;
    all->mixed_voxels += st->mixed_voxels;
    all->postprocessed_voxels += st->postprocessed_voxels;
}

/* Model k of engine e on ct into labels (its own ids): the plan in the degrade order, the
 * preparation before an engine is taken, the sliding window on the engine o->take_engine
 * gives (or e), on a CPU engine (*cpu, opened once for the job) when only the CPU fits or the
 * GPU fails, then the way back. r gets the degradations, the engine and the fallback reason. */
static int
infer_model(const struct mms_engine *e, int k, const struct mms_ct *ct, const char *series_uid,
            const struct mms_work_opts *o, uint8_t *labels, struct mms_pipe_stats *st,
            struct mms_engine *cpu, struct mms_work_result *r, char *why, size_t why_len)
{
    struct mms_pipe_opts po;
    struct mms_pipe_job *pj = NULL;
    unsigned degraded = 0;
    int rc = mms_work_plan(e, k, ct, &o->pipe, &po, st, &degraded, why, why_len);
    if (rc == 0 && (degraded & (MMS_DEGRADE_BATCH | MMS_DEGRADE_NO_TTA)) != 0) {
        char dev[96] = "";
        if (po.max_device_memory > 0)
            snprintf(dev, sizeof dev, " and %zu MiB of device memory (limit %zu MiB)",
                     (st->device_memory_estimate + (1u << 20) - 1) >> 20,
                     po.max_device_memory >> 20);
        mms_log(MMS_LOG_WARNING,
                "series %s: the job needs an estimated %zu MiB (limit %zu MiB)%s with %s, within "
                "the limits only so",
                series_uid, (st->memory_estimate + (1u << 20) - 1) >> 20, o->pipe.max_memory >> 20,
                dev,
                (degraded & MMS_DEGRADE_NO_TTA) != 0
                    ? "one tile per network call and no mirroring (no TTA)"
                    : "one tile per network call");
    }
    if (rc == 0 && (degraded & MMS_DEGRADE_CPU) != 0)
        snprintf(r->fallback, sizeof r->fallback, "%s", why); /* the GPU steps' figures */
    /* 5.1-5.5 before an engine is taken */
    if (rc == 0)
        rc = mms_pipe_prepare(ct, e->models[k], (degraded & MMS_DEGRADE_CPU) ? NULL : e->nets[k],
                              &po, &pj, st, why, why_len);
    const struct mms_engine *ie = NULL;
    if (rc == 0 && (degraded & MMS_DEGRADE_CPU) == 0) {
        double tw = mms_mono_s();
        ie = o->take_engine != NULL ? o->take_engine(o->engine_arg) : e;
        r->wait_s += mms_mono_s() - tw;
        mms_engine_describe(ie, r->engine, sizeof r->engine);
        rc = mms_pipe_infer(pj, ie->nets[k], st, why, why_len);
        if (o->take_engine != NULL)
            o->give_engine(o->engine_arg, ie);
        if ((rc == MMS_ECUDA || rc == MMS_ENOMEM) && ie->device_free > 0) {
            snprintf(r->fallback, sizeof r->fallback, "%s failed: %s", r->engine, why);
            mms_log(MMS_LOG_WARNING, "series %s: %s; running the job on the CPU", series_uid,
                    r->fallback);
            degraded |= MMS_DEGRADE_CPU;
        }
    }
    if ((degraded & MMS_DEGRADE_CPU) != 0 && (rc == 0 || ie != NULL)) {
        char cwhy[512];
        rc = 0;
        if (cpu->n_models == 0) {
            rc = mms_engine_open(e->model_path, "cpu", 0, MMS_PRECISION_FP32, e->threads, cpu, cwhy,
                                 sizeof cwhy);
            if (rc == 0 && strcmp(cpu->sha256, e->sha256) != 0)
                rc = mms_why(cwhy, sizeof cwhy, MMS_EMODEL, "%s no longer holds the model in use",
                             e->model_path);
            if (rc < 0)
                mms_engine_close(cpu);
        }
        if (rc == 0) {
            mms_engine_describe(cpu, r->engine, sizeof r->engine);
            rc = mms_pipe_infer(pj, cpu->nets[k], st, why, why_len);
        } else {
            mms_why(why, why_len, rc, "%s; no CPU engine to run it: %s", r->fallback, cwhy);
        }
    }
    r->degraded |= degraded;
    if (rc == 0)
        rc = mms_pipe_finish(pj, labels, st, why, why_len);
    mms_pipe_job_free(pj);
    return rc;
}

int
mms_work_series(const struct mms_engine *e, const char *const *paths, const struct mms_header *h,
                int n, const struct mms_work_opts *o, struct mms_work_result *r, char *why,
                size_t why_len)
{
    memset(r, 0, sizeof *r);
    double t0 = mms_mono_s();
    struct mms_volume *v = NULL;
    uint8_t *labels = NULL, *model_labels = NULL;
    int rc;

    r->stage = MMS_STAGE_DECODE;
    if (o->on_stage != NULL)
        o->on_stage(o->stage_arg, r->stage);
    /* the plan from the geometry, before a pixel is decoded (in the decoding child) */
    struct plan_arg pa = {e, &o->pipe};
    struct mms_volume_opts vo = o->vol;
    vo.plan = plan_volume;
    vo.plan_arg = &pa;
    if ((rc = mms_work_volume(paths, h, n, &vo, &o->decode_lim, &v, why, why_len)) < 0) {
        r->why_names_series = true; /* "series UID: problem" */
        goto out;
    }
    for (int i = 0; i < 3; i++)
        r->dims[i] = v->dims[i];
    r->irregular = v->irregular;
    r->tilt_deg = v->tilt_deg;
    double t1 = mms_mono_s();
    r->decode_s = t1 - t0;
    /* a crash from here to the end of the daemon's job leaves the job running in the index:
     * mms_jobs_recover() queues its series again */
    MMS_CRASH_POINT("job.after-decode");

    r->stage = MMS_STAGE_INFER;
    if (o->on_stage != NULL)
        o->on_stage(o->stage_arg, r->stage);
    struct mms_ct ct;
    ct_of(v, &ct);
    size_t nv = (size_t)(v->dims[0] * v->dims[1] * v->dims[2]);
    struct mms_engine cpu = {0};
    if ((labels = malloc(nv)) == NULL || (e->n_models > 1 && (model_labels = malloc(nv)) == NULL)) {
        rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory for the labels");
        goto out;
    }
    /* each model of a set in turn; its labels after the earlier ones' (the later wins) */
    for (int k = 0; k < e->n_models; k++) {
        struct mms_pipe_stats st;
        uint8_t *out = k == 0 ? labels : model_labels;
        rc = infer_model(e, k, &ct, h[0].series_uid, o, out, &st, &cpu, r, why, why_len);
        if (rc < 0)
            break;
        add_stats(&r->st, &st, k == 0);
        if (k > 0)
            for (size_t i = 0; i < nv; i++)
                if (out[i] != 0)
                    labels[i] = (uint8_t)(out[i] + e->label_offset[k]);
    }
    mms_engine_close(&cpu);
    if (rc < 0)
        goto out;
    double t3 = mms_mono_s();
    for (size_t i = 0; i < nv; i++)
        r->count[labels[i]]++;
    MMS_CRASH_POINT("job.after-infer");

    r->stage = MMS_STAGE_OUTPUT;
    if (o->on_stage != NULL)
        o->on_stage(o->stage_arg, r->stage);
    if (o->nifti_path != NULL &&
        (rc = mms_nifti_write_labels(v, labels, o->nifti_path, why, why_len)) < 0)
        goto out;
    if (o->seg_path != NULL) {
        char desc[128];
        const char *d = o->seg_description;
        if ((r->degraded & MMS_DEGRADE_NO_TTA) != 0) { /* the SEG says what it was made with */
            if (d != NULL && d[0] != '\0')
                snprintf(desc, sizeof desc, "%s (no TTA)", d);
            else
                snprintf(desc, sizeof desc, "MM-UNet %s (no TTA)", mms_engine_card(e)->name);
            d = desc;
        }
        rc = mms_work_write_seg(mms_engine_card(e), e->sha256, paths, &h[0], v, labels, o->run,
                                o->seg_form, d, o->seg_path, &r->seg, why, why_len);
        if (rc == MMS_EINVAL) { /* no organ found: nothing to send, not a failure */
            rc = 0;
        } else if (rc < 0) {
            goto out;
        } else {
            r->seg_written = true;
        }
    }
    if (o->rtstruct_path != NULL && r->seg_written) {
        rc = mms_work_write_rtstruct(mms_engine_card(e), e->sha256, paths, &h[0], v, labels, o->run,
                                     o->rtstruct_path, &r->rtstruct, why, why_len);
        if (rc < 0)
            goto out;
        r->rtstruct_written = true;
    }
    const char *sc_path = r->seg_written ? o->sc_path : NULL;
    if (o->preview_path != NULL || sc_path != NULL) {
        char pwhy[512];
        struct mms_preview_image img = {NULL, 0, 0};
        const char *what = o->preview_path != NULL ? o->preview_path : sc_path;
        if (mms_preview_render(v, labels, mms_engine_card(e), &img, &r->preview, pwhy,
                               sizeof pwhy) < 0)
            mms_log(MMS_LOG_WARNING, "preview %s not written: %s", what, pwhy);
        else if (o->preview_path != NULL &&
                 mms_preview_save_png(&img, o->preview_path, pwhy, sizeof pwhy) < 0)
            mms_log(MMS_LOG_WARNING, "preview %s not written: %s", o->preview_path, pwhy);
        else
            r->preview_written = o->preview_path != NULL;
        if (img.rgb != NULL && sc_path != NULL) {
            if (write_sc(mms_engine_card(e), e->sha256, paths, &h[0], o->run, &img, sc_path, pwhy,
                         sizeof pwhy) == 0)
                r->sc_written = true;
            else
                mms_log(MMS_LOG_WARNING, "Secondary Capture %s not written: %s", sc_path, pwhy);
        }
        mms_preview_image_free(&img);
    }
    r->write_s = mms_mono_s() - t3;
    rc = 0;
out:
    r->total_s = mms_mono_s() - t0;
    free(model_labels);
    free(labels);
    mms_volume_free(v);
    return rc;
}
