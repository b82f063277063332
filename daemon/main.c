/* The mmsegd command line: subcommands, options, exit codes. Threads: main thread.
 *
 * Exit codes: 0 success, 1 a failed operation, 2 a usage or configuration error. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/clock.h"
#include "common/crash.h"
#include "common/crashpoint.h"
#include "common/err.h"
#include "common/log.h"
#include "daemon/config.h"
#include "daemon/index.h"
#include "daemon/inspect.h"
#include "daemon/outbox.h"
#include "daemon/segment.h"
#include "daemon/serve.h"
#include "daemon/status.h"
#include "dicom/tls.h"
#include "infer/infer.h"

#define EXIT_USAGE 2

struct command {
    const char *name;
    const char *summary;
    const char *usage; /* everything after "mmsegd NAME", then the option lines */
    int (*run)(int argc, char **argv);
};

static int cmd_serve(int argc, char **argv);
static int cmd_check_config(int argc, char **argv);
static int cmd_model_info(int argc, char **argv);
static int cmd_inspect(int argc, char **argv);
static int cmd_status(int argc, char **argv);
static int cmd_segment(int argc, char **argv);
static int cmd_resend(int argc, char **argv);

static const struct command commands[] = {
    {"serve", "run the daemon in the foreground (systemd Type=notify)",
     "[-c FILE]\n"
     "\n"
     "Runs until SIGTERM or SIGINT (exit 0). SIGHUP re-reads the configuration and applies it\n"
     "only if it is valid; otherwise the running configuration stays and the reason is logged.\n"
     "\n"
     "  -c, --config FILE   configuration file (default " MMS_DEFAULT_CONFIG ")\n"
     "  -h, --help          show this help\n",
     cmd_serve},
    {"check-config", "validate the configuration and print the effective values",
     "[-c FILE]\n"
     "\n"
     "Loads the configuration exactly as serve does. Exit 0 and the effective configuration on\n"
     "standard output when it is valid; exit 2 and one line per problem on standard error\n"
     "(FILE:LINE: [section] key: reason) when it is not.\n"
     "\n"
     "  -c, --config FILE   configuration file (default " MMS_DEFAULT_CONFIG ")\n"
     "  -h, --help          show this help\n",
     cmd_check_config},
    {"model-info", "check a model file and print its card, size and SHA-256",
     "[-c FILE] [--backend NAME] [--precision P] FILE\n"
     "\n"
     "Checks FILE against every rule of the model format (mmunet.md 4.3: header, tensors,\n"
     "values, card, tensor names and shapes) and opens the backend [infer] backend names.\n"
     "Exit 0 with the model card, the line 'backend: NAME, precision P' (for cuda:\n"
     "'backend: cuda, device N, precision P'), for a fold ensemble the line 'ensemble: N members "
     "(NAME, ...), logits\n"
     "averaged', the line 'tensors: N, parameters: P, bytes: B' and the line\n"
     "'sha256: HEX' (the model ID) on standard output when it is valid and the backend\n"
     "starts; exit 1 and the reason on standard error when not.\n"
     "\n"
     "  -c, --config FILE   take [infer] from FILE (default: built-in ones)\n"
     "  --backend NAME      auto, cpu or cuda ([infer] backend)\n"
     "  --precision P       fp32, bf16 or fp16 convolutions ([infer] precision)\n"
     "  -h, --help          show this help\n",
     cmd_model_info},
    {"status", "show the series the daemon received, their states and reasons",
     "[-c FILE] [--json] [--node NAME]\n"
     "\n"
     "Reads the state database (the configuration's [daemon] database: state_dir/state.db,\n"
     "or the PostgreSQL database of a cluster; read-only; safe while the\n"
     "daemon runs) and prints every series with its state (receiving, stable, queued,\n"
     "running, done, failed, skipped), the age of its last instance, its instance count and\n"
     "the reason it was skipped or failed, then the counts per state; then the sends not\n"
     "delivered yet (pending with the time to their next attempt, or dead with the reason)\n"
     "and the counts per send state; then the quarantine (state_dir/quarantine): its items,\n"
     "bytes and the newest 5 with their reasons and origins. Exit 0, or 1 when there is no\n"
     "state database or it cannot be read. The nodes using the database follow: their\n"
     "roles, last heartbeat, running jobs and claimed sends.\n"
     "\n"
     "  -c, --config FILE   configuration file (default " MMS_DEFAULT_CONFIG ")\n"
     "  --json              print one JSON object\n"
     "  --node NAME         only that node: its row, its jobs and the sends it holds\n"
     "  -h, --help          show this help\n",
     cmd_status},
    {"inspect", "rebuild the volumes of DICOM series and show what mmsegd makes of them",
     "[-c FILE] [--json] [--nifti DIR] PATH...\n"
     "\n"
     "Reads every file under each PATH (folders recursively), groups them into series and\n"
     "rebuilds each series' volume as the daemon would: per series the frames, pixel size,\n"
     "slice step and its regularity, orientation, gantry tilt, transfer syntaxes and HU\n"
     "range, or why there is no volume, and every file or frame left out with its reason.\n"
     "Exit 0 when at least one DICOM file was read, 1 when none was.\n"
     "\n"
     "  -c, --config FILE   take the [series] settings from FILE (default: built-in ones)\n"
     "  --json              print one JSON object (per-slice positions and sources included)\n"
     "  --nifti DIR         write each volume as NIfTI-1, DIR/SERIES_UID.nii.gz (RAS sform\n"
     "                      with the exact, sheared grid; qform rigid)\n"
     "  -h, --help          show this help\n",
     cmd_inspect},
    {"segment", "segment the CT series in files and folders once, without the network",
     "[-c FILE] [OPTIONS] (-o DIR | --nifti DIR) PATH...\n"
     "\n"
     "Reads every file under each PATH (folders recursively), groups them into series,\n"
     "rebuilds each CT series' volume as inspect does and segments it with the model\n"
     "(mmunet.md section 5: orientation, normalisation, resampling, sliding window with\n"
     "Gaussian weighting and mirroring, labels back on the DICOM grid), then writes its DICOM\n"
     "Segmentation to DIR/SERIES_UID.seg.dcm (-o; one segment per organ found, frames that\n"
     "refer to the CT slices) and/or its labels to DIR/SERIES_UID.nii.gz (--nifti; uint8\n"
     "NIfTI-1 on the grid inspect --nifti writes for the CT).\n"
     "Series without CT images other than localizers are skipped. Exit 0 when every CT series\n"
     "was segmented, 1 when one failed or there was none, 2 for a usage or configuration\n"
     "error.\n"
     "\n"
     "  -c, --config FILE     take [series] and [infer] from FILE (default: built-in ones)\n"
     "  -o, --output DIR      where the SEGs go (created if needed)\n"
     "  --nifti DIR           where the label volumes go (created if needed)\n"
     "  --model FILE[,FILE..] the model file, or a model set ([infer] model)\n"
     "  --backend NAME        auto, cpu or cuda ([infer] backend)\n"
     "  --precision P         fp32, bf16 or fp16 convolutions ([infer] precision)\n"
     "  --threads N           CPU threads, 0 = all cores ([infer] threads)\n"
     "  --cpus LIST           the CPUs of inference, e.g. 0-11 ([infer] cpus)\n"
     "  --tta yes|no          mirroring test-time augmentation ([infer] tta)\n"
     "  --postprocessing yes|no  the model card's postprocessing ([infer] postprocessing)\n"
     "  --tile-step X         tile overlap step as a fraction of the tile ([infer] tile_step)\n"
     "  --max-memory-mb N     plan each job from its headers before decoding; over N MiB\n"
     "                        it runs one tile per network call, then without mirroring\n"
     "                        (\"no TTA\" in the SEG), else fails; 0 = 80% of RAM\n"
     "                        ([infer] max_memory_mb)\n"
     "  --max-device-memory-mb N  the same for a GPU's memory, then the CPU; 0 = 90% of\n"
     "                        its free memory ([infer] max_device_memory_mb)\n"
     "  --json                print one JSON object (stage times, shapes, label counts)\n"
     "  -h, --help            show this help\n",
     cmd_segment},
    {"resend", "queue undelivered results again",
     "[-c FILE] (JOB | --dead)\n"
     "\n"
     "Queues again, due now and with a fresh retry_max_age_s, the sends of job JOB that are\n"
     "dead or still pending, or with --dead every dead send. A dead send's files come back\n"
     "from state_dir/dead/JOB-DESTINATION/ to the outbox. A running daemon picks them up\n"
     "within seconds; otherwise at its next start. Delivered sends are not sent again.\n"
     "Exit 0 when at least one send was queued, 1 when none was or the state database could\n"
     "not be written.\n"
     "\n"
     "  -c, --config FILE   configuration file (default " MMS_DEFAULT_CONFIG ")\n"
     "  --dead              every dead send\n"
     "  -h, --help          show this help\n",
     cmd_resend},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void
usage(FILE *f)
{
    fprintf(f,
            "Usage: mmsegd COMMAND [OPTIONS]\n"
            "       mmsegd --version | --help | help COMMAND\n"
            "\n"
            "Segments abdominal organs in CT series with MM-UNet and returns DICOM SEG objects.\n"
            "\n"
            "Commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'mmsegd COMMAND --help' for the options of a command.\n");
}

static void
command_usage(const struct command *c, FILE *f)
{
    fprintf(f, "Usage: mmsegd %s %s", c->name, c->usage);
}

static const struct command *
find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* After getopt_long returned ch for an option that is missing its argument (':') or unknown:
 * say so. Returns EXIT_USAGE. */
static int
bad_option(const struct command *c, int ch, char **argv)
{
    if (ch == ':') {
        fprintf(stderr, "mmsegd %s: option '%s' needs an argument\n", c->name, argv[optind - 1]);
    } else {
        fprintf(stderr, "mmsegd %s: unknown option '%s'\n", c->name, argv[optind - 1]);
        command_usage(c, stderr);
    }
    return EXIT_USAGE;
}

/* The options commands take; each command says which of them it accepts. */
#define OPT_CONFIG 0x1 /* -c, --config FILE */
#define OPT_JSON 0x2   /* --json */
#define OPT_NIFTI 0x4  /* --nifti DIR */
#define OPT_INFER                                                                                  \
    0x8                  /* --model, --backend, --precision, --threads, --cpus, --tta,             \
                            --tile-step, --max-memory-mb, --max-device-memory-mb,                  \
                            --postprocessing */
#define OPT_OUTPUT 0x10  /* -o, --output DIR */
#define OPT_DEAD 0x20    /* --dead */
#define OPT_BACKEND 0x40 /* --backend, --precision (also in OPT_INFER) */
#define OPT_NODE 0x80    /* --node NAME */

struct cli_opts {
    const char *config; /* NULL when not given */
    bool json;
    bool dead;
    const char *node;
    const char *nifti;
    const char *output;
    const char *model, *threads, *cpus, *tta, *tile_step, *max_memory_mb; /* OPT_INFER */
    const char *max_device_memory_mb, *postprocessing;                    /* OPT_INFER */
    const char *backend, *precision; /* OPT_BACKEND or OPT_INFER */
};

/* Parse the options of c that `allowed` lets it take (and --help); optind ends at the first
 * operand. Returns -1 to go on, EXIT_SUCCESS after printing the usage, or EXIT_USAGE after
 * an error was printed. */
static int
parse_opts(const struct command *c, int argc, char **argv, unsigned allowed, struct cli_opts *o)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"nifti", required_argument, NULL, 'n'},
        {"output", required_argument, NULL, 'o'},
        {"model", required_argument, NULL, 'M'},
        {"backend", required_argument, NULL, 'B'},
        {"precision", required_argument, NULL, 'P'},
        {"threads", required_argument, NULL, 'T'},
        {"cpus", required_argument, NULL, 'U'},
        {"tta", required_argument, NULL, 'A'},
        {"postprocessing", required_argument, NULL, 'Q'},
        {"tile-step", required_argument, NULL, 'S'},
        {"max-memory-mb", required_argument, NULL, 'X'},
        {"max-device-memory-mb", required_argument, NULL, 'G'},
        {"dead", no_argument, NULL, 'D'},
        {"node", required_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;

    memset(o, 0, sizeof *o);
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv,
                             allowed & OPT_OUTPUT   ? ":c:o:h"
                             : allowed & OPT_CONFIG ? ":c:h"
                                                    : ":h",
                             opts, NULL)) != -1) {
        if (ch == 'h') {
            command_usage(c, stdout);
            return EXIT_SUCCESS;
        }
        if (ch == 'c' && (allowed & OPT_CONFIG))
            o->config = optarg;
        else if (ch == 'j' && (allowed & OPT_JSON))
            o->json = true;
        else if (ch == 'n' && (allowed & OPT_NIFTI))
            o->nifti = optarg;
        else if (ch == 'o' && (allowed & OPT_OUTPUT))
            o->output = optarg;
        else if (ch == 'M' && (allowed & OPT_INFER))
            o->model = optarg;
        else if (ch == 'B' && (allowed & (OPT_INFER | OPT_BACKEND)))
            o->backend = optarg;
        else if (ch == 'P' && (allowed & (OPT_INFER | OPT_BACKEND)))
            o->precision = optarg;
        else if (ch == 'T' && (allowed & OPT_INFER))
            o->threads = optarg;
        else if (ch == 'U' && (allowed & OPT_INFER))
            o->cpus = optarg;
        else if (ch == 'Q' && (allowed & OPT_INFER))
            o->postprocessing = optarg;
        else if (ch == 'A' && (allowed & OPT_INFER))
            o->tta = optarg;
        else if (ch == 'S' && (allowed & OPT_INFER))
            o->tile_step = optarg;
        else if (ch == 'X' && (allowed & OPT_INFER))
            o->max_memory_mb = optarg;
        else if (ch == 'G' && (allowed & OPT_INFER))
            o->max_device_memory_mb = optarg;
        else if (ch == 'D' && (allowed & OPT_DEAD))
            o->dead = true;
        else if (ch == 'N' && (allowed & OPT_NODE))
            o->node = optarg;
        else
            return bad_option(c, ch == ':' ? ':' : '?', argv);
    }
    return -1;
}

/* For commands without operands: -1 to go on, or EXIT_USAGE after the error was printed. */
static int
no_operands(const struct command *c, int argc, char **argv)
{
    if (optind >= argc)
        return -1;
    fprintf(stderr, "mmsegd %s: unexpected argument '%s'\n", c->name, argv[optind]);
    command_usage(c, stderr);
    return EXIT_USAGE;
}

/* The options of a command that takes -c and no operand: the configuration path (the default
 * one when not given), or the exit status (>= 0) in *st. */
static const char *
config_only(const struct command *c, int argc, char **argv, int *st)
{
    struct cli_opts o;
    if ((*st = parse_opts(c, argc, argv, OPT_CONFIG, &o)) < 0)
        *st = no_operands(c, argc, argv);
    return o.config != NULL ? o.config : MMS_DEFAULT_CONFIG;
}

/* Load the configuration or print why not. Returns 0, or the exit code. */
static int
load_config(const char *path, struct mms_config **cfg)
{
    char err[8192];
    int rc = mms_config_load(path, cfg, err, sizeof err);

    if (rc == 0)
        return 0;
    fputs(err, stderr);
    if (rc == MMS_ECONFIG)
        fprintf(stderr, "%s: invalid configuration\n", path);
    return rc == MMS_ECONFIG || rc == MMS_ENOENT || rc == MMS_EACCES ? EXIT_USAGE : EXIT_FAILURE;
}

static int
cmd_check_config(int argc, char **argv)
{
    struct mms_config *cfg;
    int rc;
    const char *path = config_only(find_command("check-config"), argc, argv, &rc);

    if (rc >= 0)
        return rc;
    rc = load_config(path, &cfg);
    if (rc != 0)
        return rc;
    if (cfg->scp.tls_cert != NULL && cfg->scp.tls_cert[0] != '\0') {
        /* the contents of the TLS files, as the daemon will load them */
        struct mms_tls_files f = {cfg->scp.tls_cert, cfg->scp.tls_key, cfg->scp.tls_ca};
        struct mms_tls *t = NULL;
        char why[1024];
        for (int role = MMS_TLS_SERVER; role <= MMS_TLS_CLIENT; role++) {
            if (mms_tls_load((enum mms_tls_role)role, &f, &t, why, sizeof why) < 0) {
                fprintf(stderr, "%s: [scp] %s\n", cfg->path, why);
                mms_config_free(cfg);
                return EXIT_USAGE;
            }
            mms_tls_unref(t);
        }
    }
    mms_config_print(cfg, stdout);
    mms_config_free(cfg);
    return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int
cmd_serve(int argc, char **argv)
{
    struct mms_config *cfg;
    int rc;
    const char *path = config_only(find_command("serve"), argc, argv, &rc);

    if (rc >= 0)
        return rc;
    rc = load_config(path, &cfg);
    if (rc != 0)
        return rc;
    bool journal = mms_log_stderr_open(STDERR_FILENO);
    /* a crash leaves the signal, the stage and a backtrace in the log (common/crash.h) */
    if ((rc = mms_crash_install(STDERR_FILENO, journal)) < 0)
        mms_log(MMS_LOG_WARNING, "fatal-signal handler not installed: %s", mms_strerror(rc));
    char why[1024];
    if ((rc = mms_work_cpus_apply(cfg, why, sizeof why)) < 0) {
        mms_log(MMS_LOG_ERR, "%s", why);
        mms_config_free(cfg);
        return EXIT_FAILURE;
    }
    rc = mms_serve(cfg); /* takes ownership of cfg */
    return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int
cmd_model_info(int argc, char **argv)
{
    const struct command *c = find_command("model-info");
    struct mms_model *m = NULL;
    const struct mms_card *card;
    char why[4096], *text = NULL;
    cJSON *json;
    int rc;

    struct cli_opts o;
    if ((rc = parse_opts(c, argc, argv, OPT_CONFIG | OPT_BACKEND, &o)) >= 0)
        return rc;
    if (optind >= argc) {
        fprintf(stderr, "mmsegd %s: a model FILE is required\n", c->name);
        command_usage(c, stderr);
        return EXIT_USAGE;
    }
    if (optind + 1 < argc) {
        fprintf(stderr, "mmsegd %s: unexpected argument '%s'\n", c->name, argv[optind + 1]);
        command_usage(c, stderr);
        return EXIT_USAGE;
    }
    struct mms_config *cfg = NULL;
    rc = o.config != NULL ? load_config(o.config, &cfg) : mms_config_defaults(&cfg);
    if (rc != 0) {
        if (o.config == NULL)
            fprintf(stderr, "mmsegd %s: %s\n", c->name, mms_strerror(rc));
        return o.config != NULL ? rc : EXIT_FAILURE;
    }
    const char *set[][2] = {{"backend", o.backend}, {"precision", o.precision}};
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
        if (set[i][1] != NULL &&
            mms_config_set(cfg, "infer", set[i][0], set[i][1], why, sizeof why) < 0) {
            fprintf(stderr, "mmsegd %s: %s\n", c->name, why);
            mms_config_free(cfg);
            return EXIT_USAGE;
        }
    rc = mms_model_load(argv[optind], &m, why, sizeof why);
    if (rc < 0) {
        fprintf(stderr, "mmsegd: model-info: %s\n", why);
        mms_config_free(cfg);
        return EXIT_FAILURE;
    }
    /* The backend the daemon would run the model on. */
    struct mms_work_opts wo;
    const char *bname;
    mms_work_opts_from_config(cfg, &wo, &bname);
    struct mms_backend_params bp = {.threads = (int)cfg->infer.threads,
                                    .device = (int)cfg->infer.devices.id[0],
                                    .precision = (int)cfg->infer.precision};
    struct mms_backend *be = NULL;
    mms_config_free(cfg);
    const char *pwhy = strcmp(bname, "cpu") == 0 ? mms_cpu_precision_why(bp.precision) : NULL;
    if (pwhy != NULL || (rc = mms_backend_open(bname, &bp, &be)) < 0) {
        fprintf(stderr, "mmsegd: model-info: backend %s: %s\n", bname,
                pwhy != NULL ? pwhy : mms_strerror(rc));
        mms_model_free(m);
        return EXIT_FAILURE;
    }
    char backend_line[128];
    if (strcmp(mms_backend_name(be), "cpu") == 0)
        snprintf(backend_line, sizeof backend_line, "backend: cpu, precision %s",
                 mms_precision_name(mms_backend_precision(be)));
    else
        snprintf(backend_line, sizeof backend_line, "backend: %s, device %d, precision %s",
                 mms_backend_name(be), bp.device, mms_precision_name(mms_backend_precision(be)));
    mms_backend_free(be);
    card = mms_model_card(m);
    /* Indented for reading; a card cJSON cannot read (NaN in provenance) is shown as stored. */
    json = cJSON_Parse(card->json);
    if (json != NULL)
        text = cJSON_Print(json);
    printf("%s\n", text != NULL ? text : card->json);
    printf("%s\n", backend_line);
    if (card->arch.n_members > 1) {
        printf("ensemble: %d members (", card->arch.n_members);
        for (int i = 0; i < card->arch.n_members; i++)
            printf("%s%s", i > 0 ? ", " : "", card->arch.member_names[i]);
        printf("), logits averaged\n");
    }
    printf("tensors: %d, parameters: %lld, bytes: %lld\n", mms_model_tensor_count(m),
           (long long)mms_model_param_count(m),
           (long long)mms_model_param_count(m) * (long long)sizeof(float));
    printf("sha256: %s\n", mms_model_sha256(m));
    free(text);
    cJSON_Delete(json);
    mms_model_free(m);
    return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int
cmd_inspect(int argc, char **argv)
{
    const struct command *c = find_command("inspect");
    struct inspect_opts o = {0};
    struct cli_opts co;
    int st = parse_opts(c, argc, argv, OPT_CONFIG | OPT_JSON | OPT_NIFTI, &co);
    if (st >= 0)
        return st;
    const char *config = co.config;
    o.json = co.json;
    o.nifti_dir = co.nifti;
    if (optind >= argc) {
        fprintf(stderr, "mmsegd %s: at least one PATH is required\n", c->name);
        command_usage(c, stderr);
        return EXIT_USAGE;
    }
    struct mms_config *cfg = NULL;
    int rc = config != NULL ? load_config(config, &cfg) : mms_config_defaults(&cfg);
    if (rc != 0) {
        if (config == NULL)
            fprintf(stderr, "mmsegd %s: %s\n", c->name, mms_strerror(rc));
        return config != NULL ? rc : EXIT_FAILURE;
    }
    o.vol.stack.max_gap_ratio = cfg->series.max_gap_ratio;
    o.vol.stack.allow_gaps = cfg->series.allow_gaps;
    o.vol.max_voxels = cfg->series.max_voxels;
    o.vol.threads = (int)cfg->series.decode_threads;
    mms_config_free(cfg);
    if (o.nifti_dir != NULL && mkdir(o.nifti_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "mmsegd %s: %s: %s\n", c->name, o.nifti_dir, mms_strerror(-errno));
        return EXIT_FAILURE;
    }
    rc = mms_inspect((const char *const *)argv + optind, argc - optind, &o, stdout);
    if (rc < 0 && rc != MMS_ENOENT)
        fprintf(stderr, "mmsegd: inspect: %s\n", mms_strerror(rc));
    else if (rc == MMS_ENOENT)
        fprintf(stderr, "mmsegd: inspect: no DICOM file found\n");
    return rc == 0 && fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int
cmd_segment(int argc, char **argv)
{
    const struct command *c = find_command("segment");
    struct cli_opts co;
    int st =
        parse_opts(c, argc, argv, OPT_CONFIG | OPT_JSON | OPT_NIFTI | OPT_INFER | OPT_OUTPUT, &co);
    if (st >= 0)
        return st;
    if ((co.nifti == NULL && co.output == NULL) || optind >= argc) {
        fprintf(stderr, "mmsegd %s: %s\n", c->name,
                optind >= argc ? "at least one PATH is required"
                               : "-o DIR or --nifti DIR is required");
        command_usage(c, stderr);
        return EXIT_USAGE;
    }
    struct mms_config *cfg = NULL;
    int rc = co.config != NULL ? load_config(co.config, &cfg) : mms_config_defaults(&cfg);
    if (rc != 0) {
        if (co.config == NULL)
            fprintf(stderr, "mmsegd %s: %s\n", c->name, mms_strerror(rc));
        return co.config != NULL ? rc : EXIT_FAILURE;
    }
    const char *set[][2] = {{"model", co.model},
                            {"backend", co.backend},
                            {"precision", co.precision},
                            {"threads", co.threads},
                            {"cpus", co.cpus},
                            {"tta", co.tta},
                            {"postprocessing", co.postprocessing},
                            {"tile_step", co.tile_step},
                            {"max_memory_mb", co.max_memory_mb},
                            {"max_device_memory_mb", co.max_device_memory_mb}};
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++) {
        char why[512];
        if (set[i][1] != NULL &&
            mms_config_set(cfg, "infer", set[i][0], set[i][1], why, sizeof why) < 0) {
            fprintf(stderr, "mmsegd %s: %s\n", c->name, why);
            mms_config_free(cfg);
            return EXIT_USAGE;
        }
    }
    char why[1024];
    if ((rc = mms_work_cpus_apply(cfg, why, sizeof why)) < 0) {
        fprintf(stderr, "mmsegd %s: %s\n", c->name, why);
        mms_config_free(cfg);
        return EXIT_FAILURE;
    }
    struct segment_opts o = {0};
    o.model = cfg->infer.model;
    o.device = (int)cfg->infer.devices.id[0];
    o.precision = (int)cfg->infer.precision;
    o.threads = (int)cfg->infer.threads;
    mms_work_opts_from_config(cfg, &o.wo, &o.backend);
    o.nifti_dir = co.nifti;
    o.seg_dir = co.output;
    o.json = co.json;
    o.progress = !co.json && isatty(STDERR_FILENO);
    const char *dirs[2] = {o.nifti_dir, o.seg_dir};
    for (int i = 0; i < 2; i++)
        if (dirs[i] != NULL && mkdir(dirs[i], 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "mmsegd %s: %s: %s\n", c->name, dirs[i], mms_strerror(-errno));
            mms_config_free(cfg);
            return EXIT_FAILURE;
        }
    rc =
        mms_segment((const char *const *)argv + optind, argc - optind, &o, stdout, why, sizeof why);
    if (rc < 0)
        fprintf(stderr, "mmsegd %s: %s\n", c->name, why);
    mms_config_free(cfg);
    return rc == 0 && fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int
cmd_status(int argc, char **argv)
{
    const struct command *c = find_command("status");
    struct cli_opts o;
    int st = parse_opts(c, argc, argv, OPT_CONFIG | OPT_JSON | OPT_NODE, &o);
    if (st < 0)
        st = no_operands(c, argc, argv);
    if (st >= 0)
        return st;
    const char *config = o.config != NULL ? o.config : MMS_DEFAULT_CONFIG;
    const bool json = o.json;
    const char *node = o.node;
    struct mms_config *cfg;
    int rc = load_config(config, &cfg);
    if (rc != 0)
        return rc;
    char why[1024];
    char where[4200];
    mms_config_database(cfg, where, sizeof where);
    rc = mms_status_print(cfg->daemon.state_dir, where, node, json, stdout, why, sizeof why);
    mms_config_free(cfg);
    if (rc < 0) {
        fprintf(stderr, "mmsegd status: %s\n", why);
        return EXIT_FAILURE;
    }
    return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int
cmd_resend(int argc, char **argv)
{
    const struct command *c = find_command("resend");
    struct cli_opts o;
    int st = parse_opts(c, argc, argv, OPT_CONFIG | OPT_DEAD, &o);
    if (st >= 0)
        return st;
    long long job = -1;
    if (o.dead ? optind != argc : optind != argc - 1) {
        fprintf(stderr, "mmsegd resend: give one JOB number or --dead\n");
        command_usage(c, stderr);
        return EXIT_USAGE;
    }
    if (!o.dead) {
        char *end;
        errno = 0;
        job = strtoll(argv[optind], &end, 10);
        if (errno != 0 || end == argv[optind] || *end != '\0' || job < 0) {
            fprintf(stderr, "mmsegd resend: '%s' is not a job number\n", argv[optind]);
            return EXIT_USAGE;
        }
    }
    struct mms_config *cfg;
    int rc = load_config(o.config != NULL ? o.config : MMS_DEFAULT_CONFIG, &cfg);
    if (rc != 0)
        return rc;
    char path[4200], why[1024];
    struct mms_index *ix = NULL;
    int count = 0;
    bool shared = mms_config_database(cfg, path, sizeof path);
    if (!shared && access(path, F_OK) != 0)
        rc = mms_why(why, sizeof why, MMS_ENOENT,
                     "no state database at %s (the daemon has not run yet)", path);
    else if ((rc = mms_index_connect(path, false, &ix, why, sizeof why)) == 0)
        rc = mms_outbox_resend(cfg->daemon.state_dir, ix, job, mms_wall_s(), &count, why,
                               sizeof why);
    mms_index_close(ix);
    mms_config_free(cfg);
    if (rc < 0)
        fprintf(stderr, "mmsegd resend: %s\n", why);
    if (count > 0)
        printf("%d send%s queued again\n", count, count == 1 ? "" : "s");
    else if (rc == 0)
        fprintf(stderr, "mmsegd resend: %s\n",
                o.dead ? "no dead send" : "that job has no dead or pending send");
    return count > 0 && fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* OpenMP threads that spin while they wait lose whole time slices when another process wants
 * the same cores: on 2 cores beside one busy process, libgomp's default spinning made the
 * network stage of one series take 30 s instead of 1.5 s; spinning 1000 rounds before
 * sleeping keeps the idle speed and takes 2.7 s there. libgomp reads its environment when it
 * is loaded, so the setting takes a new image of this program; an operator's own
 * OMP_WAIT_POLICY or GOMP_SPINCOUNT is left alone. */
static void
tame_openmp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") != NULL || getenv("GOMP_SPINCOUNT") != NULL)
        return;
    if (setenv("GOMP_SPINCOUNT", "1000", 1) != 0)
        return;
    execv("/proc/self/exe", argv); /* returns only on failure: go on as we are */
}

/* MMSEGD_CRASH_POINT (common/crashpoint.h): the armed point is said once; in a build with
 * crash points a value that arms none is a usage error, so that a test never waits for a
 * point that cannot come. Returns 0 or -1. */
static int
check_crash_point(void)
{
    char why[256];
    unsigned long hit = 0;
    const char *name = mms_crash_point_armed(&hit, why, sizeof why);
    if (name != NULL)
        fprintf(stderr, "mmsegd: crash point %s armed: the process dies at its hit %lu\n", name,
                hit);
    else if (why[0] != '\0')
        fprintf(stderr, "mmsegd: MMSEGD_CRASH_POINT: %s\n", why);
    return name == NULL && why[0] != '\0' && mms_crash_points_built() ? -1 : 0;
}

int
main(int argc, char **argv)
{
    const struct command *c;

    tame_openmp(argv);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("mmsegd %s\n", PACKAGE_VERSION);
        if (mms_crash_points_built()) /* a test build: tests/test-crash-points.sh looks */
            printf("crash points: yes (MMSEGD_CRASH_POINT)\n");
        return EXIT_SUCCESS;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return EXIT_SUCCESS;
    }
    if (strcmp(argv[1], "help") == 0) {
        if (argc == 2) {
            usage(stdout);
            return EXIT_SUCCESS;
        }
        c = find_command(argv[2]);
        if (c == NULL) {
            fprintf(stderr, "mmsegd: unknown command '%s'\n", argv[2]);
            return EXIT_USAGE;
        }
        command_usage(c, stdout);
        return EXIT_SUCCESS;
    }
    if (check_crash_point() != 0)
        return EXIT_USAGE;
    if (strcmp(argv[1], "--check-config") == 0)
        return cmd_check_config(argc - 1, argv + 1);
    c = find_command(argv[1]);
    if (c == NULL) {
        fprintf(stderr, "mmsegd: unknown command '%s'\n\n", argv[1]);
        usage(stderr);
        return EXIT_USAGE;
    }
    return c->run(argc - 1, argv + 1);
}
