/* daemon/work: the work on one series, shared by `mmsegd segment` and the daemon's jobs:
 * volume (dicom/), pipeline (infer/), labels on the DICOM grid, then the SEG and the NIfTI.
 * Threads: any; engines are shared between threads through take_engine / give_engine (a
 * network holds one arena: one inference at a time on each). */
#ifndef MMS_DAEMON_WORK_H
#define MMS_DAEMON_WORK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/config.h"
#include "daemon/preview.h"
#include "daemon/sandbox.h"
#include "dicom/dicom.h"
#include "dicom/rtstruct.h"
#include "dicom/seg.h"
#include "infer/infer.h"
#include "infer/pipeline.h"

#define MMS_MAX_MODELS 8

/* A model on a backend, with the network built for its tiles; or a model set: several model
 * files run one after the other on the same volume and backend, their labels merged into one
 * label space (model k's label l becomes label_offset[k] + l; where two models label one
 * voxel, the later file wins). */
struct mms_engine {
    int n_models;
    struct mms_model *models[MMS_MAX_MODELS];
    struct mms_net *nets[MMS_MAX_MODELS];
    int label_offset[MMS_MAX_MODELS];
    struct mms_backend *be;
    int device;            /* the device asked for (CUDA) */
    int threads;           /* CPU threads asked for */
    size_t device_free;    /* device memory free when the backend started; 0: none (CPU) */
    char model_path[4096]; /* the model file, or the set's files joined by ',' (as opened) */
    char sha256[65];       /* the model's SHA-256; a set's: of its members' hex digests, ',' */
    /* a set's card for the outputs: the merged labels, names and versions joined by " + "
       (the rest is the first model's); unused for one model */
    struct mms_card set_card;
};

/* [infer] cpus for this process (common/cpus.h), once at start, before any other thread is
 * made: records the CPUs of inference, on which CPU engines then compute, and pins the calling
 * thread, and so every thread and child made after it, to the other CPUs. Without the key
 * nothing changes. Logs the split. Returns 0, or MMS_EINVAL with why (the key does not fit
 * the CPUs this process may use). */
int mms_work_cpus_apply(const struct mms_config *cfg, char *why, size_t why_len);

/* The number of CPUs of inference: those of [infer] cpus, else those this thread may use. */
int mms_work_infer_cpu_count(void);

/* The files of a model setting (one file, or a set "a.safetensors, b.safetensors"), each trimmed
 * of blanks, as pointers into buf (a copy of model, buf_len bytes). Returns their count (1 to
 * MMS_MAX_MODELS), or MMS_EINVAL with why (too long, an empty item, too many, none). */
int mms_work_model_files(const char *model, char *buf, size_t buf_len, char *files[MMS_MAX_MODELS],
                         char *why, size_t why_len);

/* Load the model file, or each file of the comma-separated list model (a model set, at most
 * MMS_MAX_MODELS, together at most 255 labels), and build their networks on backend ("auto",
 * "cpu", "cuda") with the convolution precision (enum mms_precision; the CPU backend refuses
 * one it cannot run, and a CPU fallback of auto runs fp32), on the CPUs of inference
 * (mms_work_cpus_apply).
 * Ownership: e's members are new; close with mms_engine_close() (also after a failure).
 * Returns 0, or the loader's or backend's code with why naming the model and backend. */
int mms_engine_open(const char *model, const char *backend, int device, int precision, int threads,
                    struct mms_engine *e, char *why, size_t why_len);
void mms_engine_close(struct mms_engine *e);

/* The card the outputs are made with: the model's, or the set's (merged labels). */
const struct mms_card *mms_engine_card(const struct mms_engine *e);

/* "cpu", or the backend and device ("cuda:0"), into out (len bytes). */
void mms_engine_describe(const struct mms_engine *e, char *out, size_t len);

/* The stages of the work, for the reason of a failure and for timings. */
enum mms_stage {
    MMS_STAGE_DECODE, /* the files to a volume */
    MMS_STAGE_INFER,  /* plan, pipeline */
    MMS_STAGE_OUTPUT, /* SEG, NIfTI */
};

/* "decode", "infer", "output". */
const char *mms_stage_name(int stage);

struct mms_work_opts {
    struct mms_volume_opts vol;
    struct mms_sandbox_limits decode_lim; /* the decoding child's (when isolation is on) */
    struct mms_pipe_opts pipe;
    /* the engine to infer with, taken once the volume is decoded and given back after the
       pipeline (it may wait for one to be free); NULL: the engine given to mms_work_series */
    const struct mms_engine *(*take_engine)(void *arg);
    void (*give_engine)(void *arg, const struct mms_engine *e);
    void *engine_arg;
    int run;                      /* the run number in the SEG's UIDs (design.md section 3) */
    struct mms_seg_form seg_form; /* [seg] type and empty_frames */
    const char *seg_description;
    const char *seg_path;      /* write the SEG here (through a temporary file), or NULL */
    const char *nifti_path;    /* write the labels here as NIfTI, or NULL */
    const char *preview_path;  /* write the preview PNG here, or NULL */
    bool preview_sc;           /* [seg] preview_sc: the callers then set sc_path */
    bool rtstruct;             /* [seg] rtstruct: the callers then set rtstruct_path */
    const char *rtstruct_path; /* with a SEG, the RT Structure Set here, or NULL */
    const char *sc_path;       /* with a SEG, the preview as a Secondary Capture here, or NULL */
    /* called as each stage starts (enum mms_stage); may be NULL */
    void (*on_stage)(void *arg, int stage);
    void *stage_arg;
};

/* What a job gave up to fit its memory limits, in the degrade order (mms_work_plan), and
 * whether it ran on the CPU instead of its GPU engine. */
enum {
    MMS_DEGRADE_BATCH = 1,  /* one tile x mirroring per network call: slower, the same labels */
    MMS_DEGRADE_NO_TTA = 2, /* no mirroring: other labels ("no TTA" in the SEG's description) */
    MMS_DEGRADE_CPU = 4     /* the GPU's memory limit: the job runs on the CPU, as configured */
};

struct mms_work_result {
    int stage;             /* the stage reached (the failed one on failure) */
    unsigned degraded;     /* MMS_DEGRADE_* */
    bool why_names_series; /* the reason begins with the Series Instance UID */
    int64_t dims[3];       /* the volume: columns, rows, slices */
    bool irregular;
    double tilt_deg;
    struct mms_pipe_stats st;                  /* the pipeline's figures */
    double decode_s, wait_s, write_s, total_s; /* wait_s: for an engine (take_engine) */
    char engine[32];                           /* the engine used: "cpu", "cuda:0" */
    char fallback[512]; /* why the GPU engine's work went to the CPU ("" when it did not) */
    int64_t count[256]; /* voxels per label */
    bool seg_written;   /* false when no organ was found (not a failure) */
    struct mms_seg_result seg;
    bool preview_written;  /* a preview that fails is logged, not a failure */
    bool sc_written;       /* likewise */
    bool rtstruct_written; /* with the SEG; failing to write it fails the work */
    struct mms_rtstruct_result rtstruct;
    struct mms_preview_result preview;
};

/* The plan of model k of e (0 for a single model) on volume ct (ct->hu NULL: from the headers,
 * before decoding) in the
 * degrade order: the options o as they are; then one tile x mirroring per network call; then
 * also no mirroring; then, when e runs on a GPU whose memory limit was the obstacle, the
 * options o on the CPU (planned without a CPU network's arena, which mms_pipe_infer() counts
 * once the CPU engine exists). The device limit is o->max_device_memory, or 90 % of
 * e->device_free when that is 0. *used receives the first options that fit, *st their plan and
 * *degraded what was given up (MMS_DEGRADE_*); when that is the CPU, why receives the figures
 * of the GPU steps ("an estimated N MiB of device memory as configured, ...: more than the
 * limit of L MiB"). Returns 0, or mms_pipe_plan()'s error of the last step (MMS_ENOMEM with
 * the figures of every step tried in why). */
int mms_work_plan(const struct mms_engine *e, int k, const struct mms_ct *ct,
                  const struct mms_pipe_opts *o, struct mms_pipe_opts *used,
                  struct mms_pipe_stats *st, unsigned *degraded, char *why, size_t why_len);

/* The options of the configuration's [series], [infer] and [seg] sections (max_memory_mb 0:
 * 80 % of the RAM) and the decoding child's limits ([daemon] decode_max_memory_mb,
 * decode_timeout_s); run 1, no paths, no lock. *backend receives "auto", "cpu" or "cuda".
 * Also sets mms_sandbox_set_enabled() from [daemon] isolate. */
void mms_work_opts_from_config(const struct mms_config *cfg, struct mms_work_opts *wo,
                               const char **backend);

/* The Series and SOP Instance UIDs of an output of kind `kind` ("seg", the SEG; "sc", the
 * Secondary Capture; "rtstruct", the RT Structure Set) of source series source_series (its UID, or
 * the one derived when the files have none) by the model (or model set) of digest sha256
 * (mms_engine.sha256), run `run`: "2.25." and UUIDv5s of the four (design.md section 3). */
void mms_work_output_uids(const char *kind, const char *sha256, const char *source_series, int run,
                          char series_uid[65], char sop_uid[65]);

/* Write the SEG of labels (on v's grid; v built from the files paths[], the first header h0)
 * made with card (mms_engine_card()) by the model of digest sha256 to path: segments, codes
 * and colours from the card; Series and SOP Instance UIDs derived from (source series,
 * sha256, run) as design.md section 3 says.
 * Returns mms_seg_write()'s codes (MMS_EINVAL: no label of the card is present). */
int mms_work_write_seg(const struct mms_card *card, const char *sha256, const char *const *paths,
                       const struct mms_header *h0, const struct mms_volume *v,
                       const uint8_t *labels, int run, struct mms_seg_form form,
                       const char *description, const char *path, struct mms_seg_result *res,
                       char *why, size_t why_len);

/* Write the RT Structure Set of labels (dicom/rtstruct.h) as mms_work_write_seg() writes the
 * SEG: ROIs from the card (segment label, colour), UIDs mms_work_output_uids "rtstruct",
 * Series Number 9850 + run. Returns mms_rtstruct_write()'s codes. */
int mms_work_write_rtstruct(const struct mms_card *card, const char *sha256,
                            const char *const *paths, const struct mms_header *h0,
                            const struct mms_volume *v, const uint8_t *labels, int run,
                            const char *path, struct mms_rtstruct_result *res, char *why,
                            size_t why_len);

/* mms_volume_build() in a sandbox child (sandbox.h) with the limits lim: the child decodes
 * and builds the volume and hands it back through a shared mapping sized from the headers
 * (rows x columns x frames of every file, overflow-checked, at most o->max_voxels).
 * A child that does not return fails with MMS_EDICOM and why "series UID: decoder crashed
 * (SIGSEGV) on PATH" (PATH: a file whose decoding had started and not ended, when known;
 * also "timed out after N s", "out of memory (limit N MB)", "blocked system call N").
 * Ownership and other returns: as mms_volume_build(); a fork that fails returns -errno.
 * With isolation off, mms_volume_build() itself. Threads: any. */
int mms_work_volume(const char *const *paths, const struct mms_header *h, int n,
                    const struct mms_volume_opts *o, const struct mms_sandbox_limits *lim,
                    struct mms_volume **out, char *why, size_t why_len);

/* Read the headers of the n files paths[] into h[] (caller's memory, n entries), in one
 * sandbox child with the limits lim (mms_header_read() in place with isolation off).
 * Returns 0; the first reader error with why "PATH: reason"; MMS_EDICOM with why "header
 * parser crashed (SIGSEGV) on PATH" (or timed out...) when the child did not return;
 * MMS_ENOMEM, -errno. h is complete only on success. Threads: any. */
int mms_work_headers(const char *const *paths, int n, const struct mms_sandbox_limits *lim,
                     struct mms_header *h, char *why, size_t why_len);

/* Do the work on the n files paths[] of one series (h[]: their headers): the volume through
 * mms_work_volume(), then the pipeline and the outputs. The SEG's UIDs come from the source
 * series, the model's SHA-256 and o->run. The pipeline is prepared (5.1-5.5) before an engine
 * is taken and finished (5.8) after it is given back, so that other jobs use the engine
 * meanwhile. When the plan fits only on the CPU (MMS_DEGRADE_CPU), or the GPU engine fails
 * during the sliding window with a device error or out of device memory, a CPU engine of the
 * same model file is opened for the job (r->fallback says why; the job fails when the file no
 * longer holds the same model).
 * Returns 0, or a negative code with r->stage and why. */
int mms_work_series(const struct mms_engine *e, const char *const *paths,
                    const struct mms_header *h, int n, const struct mms_work_opts *o,
                    struct mms_work_result *r, char *why, size_t why_len);

#endif
