/* daemon/work: one series from files to labels, SEG and NIfTI (work.h). */
#include "daemon/work.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/uid.h"

int
mms_engine_open(const char *model, const char *backend, int device, int threads,
                struct mms_engine *e, char *why, size_t why_len)
{
    memset(e, 0, sizeof *e);
    char mwhy[512];
    int rc = mms_model_load(model, &e->model, mwhy, sizeof mwhy);
    if (rc < 0)
        return mms_why(why, why_len, rc, "model %s: %s", model, mwhy);
    struct mms_backend_params bp = {.threads = threads, .device = device};
    if ((rc = mms_backend_open(backend, &bp, &e->be)) < 0)
        return mms_why(why, why_len, rc, "backend %s: %s", backend, mms_strerror(rc));
    const struct mms_card *card = mms_model_card(e->model);
    if ((rc = mms_net_new(e->model, e->be, card->inf.patch, 0, &e->net)) < 0)
        return mms_why(why, why_len, rc, "model %s on backend %s: %s", model,
                       mms_backend_name(e->be), mms_strerror(rc));
    return 0;
}

void
mms_engine_close(struct mms_engine *e)
{
    mms_net_free(e->net);
    mms_backend_free(e->be);
    mms_model_free(e->model);
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
    wo->pipe.tile_step = cfg->infer.tile_step;
    wo->pipe.threads = (int)cfg->infer.threads;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    wo->pipe.max_memory = cfg->infer.max_memory_mb > 0 ? (size_t)cfg->infer.max_memory_mb << 20
                          : pages > 0 && page > 0      ? (size_t)pages / 10 * 8 * (size_t)page
                                                       : 0;
    wo->vol.stack.max_gap_ratio = cfg->series.max_gap_ratio;
    wo->vol.stack.allow_gaps = cfg->series.allow_gaps;
    wo->vol.stack.min_slices = (int)cfg->series.min_slices;
    wo->vol.max_voxels = cfg->series.max_voxels;
    wo->vol.threads = (int)cfg->series.decode_threads;
    wo->run = 1;
    wo->keep_empty_frames = cfg->seg.empty_frames == MMS_EMPTY_FRAMES_KEEP;
    wo->seg_description = cfg->seg.series_description;
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
mms_work_seg_uids(const struct mms_model *m, const char *source_series, int run,
                  char series_uid[65], char sop_uid[65])
{
    char name[512];
    snprintf(name, sizeof name, "mmsegd seg series|%s|%s|%d", source_series, mms_model_sha256(m),
             run);
    mms_uid_uuid5(name, series_uid);
    snprintf(name, sizeof name, "mmsegd seg instance|%s|%s|%d", source_series, mms_model_sha256(m),
             run);
    mms_uid_uuid5(name, sop_uid);
}

int
mms_work_write_seg(const struct mms_model *m, const char *const *paths, const struct mms_header *h0,
                   const struct mms_volume *v, const uint8_t *labels, int run, bool keep_empty,
                   const char *description, const char *path, struct mms_seg_result *res, char *why,
                   size_t why_len)
{
    const struct mms_card *card = mms_model_card(m);
    struct mms_seg_segment *seg = calloc((size_t)card->n_labels + 1, sizeof *seg);
    struct mms_seg_segment *sex = calloc(3 * ((size_t)card->n_labels + 1), sizeof *sex);
    if (seg == NULL || sex == NULL) {
        free(seg);
        free(sex);
        return MMS_ENOMEM;
    }
    for (int i = 0; i < card->n_labels; i++)
        segment_of(&card->labels[i], &seg[i], &sex[3 * i]);

    /* the source's UIDs (derived where the files have none), and the SEG's own */
    struct mms_header h = *h0;
    mms_header_derive_uids(&h);
    char series_uid[65], sop_uid[65];
    mms_work_seg_uids(m, h.series_uid, run, series_uid, sop_uid);

    struct mms_seg_input in = {
        .vol = v,
        .paths = paths,
        .labels = labels,
        .segments = seg,
        .n_segments = card->n_labels,
        .algorithm_name = card->name,
        .algorithm_version = card->version,
        .model_sha256 = mms_model_sha256(m),
        .series_description = description,
        .software_version = PACKAGE_VERSION,
        .series_number = 9900 + run,
        .study_uid = h.study_uid,
        .source_series_uid = h.series_uid,
        .series_uid = series_uid,
        .sop_instance_uid = sop_uid,
        .keep_empty_frames = keep_empty,
    };
    int rc = mms_seg_write(&in, path, res, why, why_len);
    free(seg);
    free(sex);
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
    uint8_t *labels = NULL;
    int rc;

    r->stage = MMS_STAGE_DECODE;
    if (o->on_stage != NULL)
        o->on_stage(o->stage_arg, r->stage);
    if ((rc = mms_volume_build(paths, h, n, &o->vol, &v, why, why_len)) < 0) {
        r->why_names_series = true; /* "series UID: problem" */
        goto out;
    }
    for (int i = 0; i < 3; i++)
        r->dims[i] = v->dims[i];
    r->irregular = v->irregular;
    r->tilt_deg = v->tilt_deg;
    double t1 = mms_mono_s();
    r->decode_s = t1 - t0;

    r->stage = MMS_STAGE_INFER;
    if (o->on_stage != NULL)
        o->on_stage(o->stage_arg, r->stage);
    struct mms_ct ct;
    ct_of(v, &ct);
    size_t nv = (size_t)(v->dims[0] * v->dims[1] * v->dims[2]);
    if (o->infer_mu != NULL)
        pthread_mutex_lock(o->infer_mu);
    double t2 = mms_mono_s();
    r->wait_s = t2 - t1;
    rc = mms_pipe_plan(&ct, e->model, e->net, &o->pipe, &r->st, why, why_len);
    if (rc == 0 && (labels = malloc(nv)) == NULL)
        rc = mms_why(why, why_len, MMS_ENOMEM, "out of memory for the labels");
    if (rc == 0)
        rc = mms_pipe_run(&ct, e->model, e->net, &o->pipe, labels, &r->st, why, why_len);
    if (o->infer_mu != NULL)
        pthread_mutex_unlock(o->infer_mu);
    if (rc < 0)
        goto out;
    double t3 = mms_mono_s();
    for (size_t i = 0; i < nv; i++)
        r->count[labels[i]]++;

    r->stage = MMS_STAGE_OUTPUT;
    if (o->on_stage != NULL)
        o->on_stage(o->stage_arg, r->stage);
    if (o->nifti_path != NULL &&
        (rc = mms_nifti_write_labels(v, labels, o->nifti_path, why, why_len)) < 0)
        goto out;
    if (o->seg_path != NULL) {
        rc = mms_work_write_seg(e->model, paths, &h[0], v, labels, o->run, o->keep_empty_frames,
                                o->seg_description, o->seg_path, &r->seg, why, why_len);
        if (rc == MMS_EINVAL) { /* no organ found: nothing to send, not a failure */
            rc = 0;
        } else if (rc < 0) {
            goto out;
        } else {
            r->seg_written = true;
        }
    }
    if (o->preview_path != NULL) {
        char pwhy[512];
        if (mms_preview_write(v, labels, mms_model_card(e->model), o->preview_path, &r->preview,
                              pwhy, sizeof pwhy) == 0)
            r->preview_written = true;
        else
            mms_log(MMS_LOG_WARNING, "preview %s not written: %s", o->preview_path, pwhy);
    }
    r->write_s = mms_mono_s() - t3;
    rc = 0;
out:
    r->total_s = mms_mono_s() - t0;
    free(labels);
    mms_volume_free(v);
    return rc;
}
