/* Configuration: the ini file (inih) read through one declarative table of keys.
 *
 * A struct mms_config is immutable once loaded: SIGHUP builds a complete new one and the loop
 * swaps it in only if it loaded without error. Threads: loading and freeing run on the loop
 * thread (or in a one-shot command); a loaded config may be read from any thread that holds a
 * reference to it while the loop keeps it alive. */
#ifndef MMS_DAEMON_CONFIG_H
#define MMS_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "infer/infer.h" /* enum mms_precision */

enum mms_backend_choice { MMS_BACKEND_AUTO, MMS_BACKEND_CPU, MMS_BACKEND_CUDA };
enum mms_export_mode { MMS_EXPORT_EXACT, MMS_EXPORT_FAST };
enum mms_accept_sop { MMS_ACCEPT_CT, MMS_ACCEPT_ALL };
enum mms_empty_frames { MMS_EMPTY_FRAMES_OMIT, MMS_EMPTY_FRAMES_KEEP };
enum mms_seg_type { MMS_SEG_TYPE_BINARY, MMS_SEG_TYPE_LABELMAP };
enum mms_dest_type { MMS_DEST_DICOM, MMS_DEST_FOLDER, MMS_DEST_DICOMWEB };
/* The files of a result, by the name they have in the outbox (daemon/jobs.c): SOP.dcm the
 * SEG, SOP.rtstruct.dcm the RT Structure Set, SOP.sc.dcm the Secondary Capture, SOP.png the
 * preview (folder destinations only). */
enum mms_output {
    MMS_OUTPUT_SEG = 1,
    MMS_OUTPUT_RTSTRUCT = 2,
    MMS_OUTPUT_SC = 4,
    MMS_OUTPUT_PREVIEW = 8,
    MMS_OUTPUT_ALL = 15,
};
/* The output a file of the outbox is, by its name; 0 for none of them. */
unsigned mms_output_of(const char *name);

/* One [destination NAME] section. */
struct mms_dest_config {
    char *name;
    int type; /* enum mms_dest_type */
    char *ae_title;
    char *host;
    unsigned port;
    char *calling_ae;
    bool tls;
    char *path;
    char *url;              /* dicomweb: the STOW-RS endpoint (.../studies) */
    int auth;               /* dicomweb: enum mms_stow_auth (daemon/stow.h) */
    char *credentials_file; /* dicomweb: basic "user:password", bearer the token */
    char *ca_file;          /* dicomweb: PEM CAs to trust ("" = the system's) */
    bool verify_tls;        /* dicomweb: check the server's certificate and name */
    unsigned max_request_mb;
    char *outputs;         /* "seg,rtstruct,sc,preview" or a part of it; "" = all */
    unsigned outputs_mask; /* of enum mms_output, from outputs (all bits when "") */
    unsigned retry_initial_s;
    double retry_multiplier;
    unsigned retry_max_s;
    unsigned retry_max_age_s;
};

/* [infer] device: the engines to run, one per entry: a device index (0 to 63), a list of
 * them ("0,1"; an index may repeat: two engines on one device), or "all" (every CUDA device;
 * one engine on the CPU backend). With the CPU backend each entry is one engine on the host's
 * cores, which they share. */
#define MMS_MAX_ENGINES 8
struct mms_devices {
    bool all;
    int n; /* entries in id (1 for "all": id[0] = 0, the first) */
    unsigned id[MMS_MAX_ENGINES];
};

/* [daemon] roles: what a node of a cluster does. */
enum {
    MMS_ROLE_INTAKE = 1, /* Store SCP, drop folder, completeness */
    MMS_ROLE_INFER = 2,  /* jobs */
    MMS_ROLE_SEND = 4,   /* sends */
};

struct mms_config {
    char *path; /* the file this was loaded from */
    struct {
        char *state_dir;
        int log_level; /* enum mms_log_level */
        unsigned workers;
        char *metrics_listen;          /* HTTP: /metrics, the status page, /healthz */
        bool status_page_phi;          /* the status page shows patient names and IDs */
        unsigned quarantine_max_mb;    /* 0: no size bound */
        unsigned quarantine_max_days;  /* 0: no age bound */
        bool isolate;                  /* headers and decoding in sandbox children */
        unsigned decode_max_memory_mb; /* their memory ceiling; 0: none */
        unsigned decode_timeout_s;     /* a job's decoding (a header: at most 60 s) */
        char *database;                /* "sqlite", or a PostgreSQL connection string */
        char *node;                    /* this node's name (default: the host name) */
        char *roles;                   /* "intake,infer,send" or a part */
        unsigned roles_mask;           /* MMS_ROLE_* of roles */
        unsigned lease_s;              /* a node's jobs and sends are taken over after this */
    } daemon;
    struct {
        char *ae_title;
        char *bind;
        unsigned port;
        char *allowed_calling_aes;
        char *allowed_hosts;
        unsigned max_associations;
        unsigned max_associations_per_host;
        unsigned assoc_timeout_s;
        unsigned max_pdu;
        unsigned timeout_s;
        unsigned min_free_mb;
        int accept_sop_classes; /* enum mms_accept_sop */
        char *tls_cert;
        char *tls_key;
        char *tls_ca;
    } scp;
    struct {
        char *dir;
        unsigned stable_s;
        unsigned scan_s;
    } drop;
    struct {
        unsigned stable_age_s;
        unsigned min_slices;
        char *body_parts;
        char *description_include;
        char *description_exclude;
        double max_slice_thickness_mm;
        double max_gap_ratio;
        bool allow_gaps;
        uint64_t max_voxels;
        unsigned decode_threads; /* 0: one per CPU (of the rest, with infer.cpus) */
    } series;
    struct {
        char *model;
        int backend;                /* enum mms_backend_choice */
        struct mms_devices devices; /* the key is "device" */
        unsigned threads;
        bool tta;
        bool postprocessing; /* the card's postprocessing */
        double tile_step;
        unsigned max_memory_mb;
        unsigned max_device_memory_mb; /* 0: 90 % of the GPU's free memory at start */
        int precision;                 /* enum mms_precision */
        char *cpus;                    /* CPUs of inference ("0-11,14"); "" = not set */
        int export_mode;               /* enum mms_export_mode; the key is "export" */
    } infer;
    struct {
        int type;         /* enum mms_seg_type */
        int empty_frames; /* enum mms_empty_frames */
        bool preview_sc;  /* the preview as a Secondary Capture too */
        bool rtstruct;    /* an RT Structure Set too */
        char *series_description;
    } seg;
    struct mms_dest_config *dests;
    size_t n_dests;
};

/* The configuration file used when no -c is given. */
#ifndef MMS_DEFAULT_CONFIG
#define MMS_DEFAULT_CONFIG "/etc/mmsegd/mmsegd.ini"
#endif

/* Load and validate the file at path. Relative paths in the file are taken relative to the
 * directory of the file. Every problem found is described in errbuf (one line each, at most
 * errlen bytes in all, "FILE:LINE: [section] key: reason"), not logged.
 * Ownership: *out is new, free with mms_config_free(); written only on success.
 * Returns 0; MMS_ECONFIG when the file has errors; -errno when it cannot be read (errbuf
 * says why); MMS_ENOMEM. */
int mms_config_load(const char *path, struct mms_config **out, char *errbuf, size_t errlen);

/* The configuration of an empty file: every key at its default, no destination.
 * Ownership: *out is new, free with mms_config_free(). Returns 0 or MMS_ENOMEM. */
int mms_config_defaults(struct mms_config **out);

/* Set one key of the main sections as the file would (the same parsing and ranges); for
 * command-line overrides. Paths are taken as given.
 * Returns 0, MMS_ENOMEM, or MMS_EINVAL with "[section] key: reason" in why. */
int mms_config_set(struct mms_config *cfg, const char *section, const char *key, const char *value,
                   char *why, size_t why_len);

/* Free cfg and everything it owns. NULL is a harmless no-op. */
void mms_config_free(struct mms_config *cfg);

/* Write the effective configuration to f as an ini file that loads back to the same values:
 * every key of every section, defaults included, then the destinations. */
void mms_config_print(const struct mms_config *cfg, FILE *f);

/* The Store SCP's association policy in words, for check-config and the start of serve:
 * hosts and aes receive "none (every association is refused; ...)", "any host (WARNING: ...)"
 * or "LIST only". */
void mms_config_policy(const struct mms_config *cfg, char *hosts, size_t hosts_len, char *aes,
                       size_t aes_len);

/* For a reload from old to new: call fn once for each key whose new value differs from the
 * old one but that a running daemon cannot change (it needs a restart); returns their count.
 * Destinations count as one key named "destination". */
int mms_config_restart_keys(const struct mms_config *old_cfg, const struct mms_config *new_cfg,
                            void (*fn)(const char *section, const char *key, void *ud), void *ud);

/* The index to open (mms_index_connect()): state_dir/state.db, or the PostgreSQL connection
 * string of [daemon] database. Returns whether it is PostgreSQL (shared by nodes). */
bool mms_config_database(const struct mms_config *c, char *out, size_t len);

/* The folder of this node's own files (tmp/, job markers): state_dir itself with SQLite,
 * state_dir/nodes/NODE with a shared database (nodes share state_dir). */
void mms_config_node_dir(const struct mms_config *c, char *out, size_t len);

#endif
