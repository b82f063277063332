/* Tests of daemon/config.c: a valid file, defaults, and each class of error with its exact
 * message and line number. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cpus.h"
#include "common/err.h"
#include "common/log.h"
#include "daemon/config.h"
#include "tests/tap.h"

static char dir[] = "/tmp/test-config.XXXXXX";
static char path[256];
static char err[8192];

/* Write text to the test file and load it. */
static int
load(const char *text, struct mms_config **cfg)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) == EOF || fclose(f) != 0) {
        diag("cannot write %s", path);
        exit(1);
    }
    *cfg = NULL;
    return mms_config_load(path, cfg, err, sizeof err);
}

/* Load text, expect MMS_ECONFIG and exactly the message want (path prefix added here). */
static void
expect_error(const char *name, const char *text, const char *want)
{
    struct mms_config *cfg;
    char full[1024];
    int rc = load(text, &cfg);

    snprintf(full, sizeof full, "%s:%s\n", path, want);
    if (!ok(rc == MMS_ECONFIG && cfg == NULL && strcmp(err, full) == 0, "%s", name)) {
        diag("rc %d (%s)", rc, mms_err_name(rc) ? mms_err_name(rc) : "?");
        diag("got:  %s", err);
        diag("want: %s", full);
    }
    mms_config_free(cfg);
}

int
main(void)
{
    struct mms_config *cfg = NULL;
    char longline[400];
    int rc;

    plan(72, 30);
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(path, sizeof path, "%s/mmsegd.ini", dir);

    /* Defaults: an empty file is valid and gives design.md's values. */
    rc = load("", &cfg);
    ok(rc == 0 && cfg != NULL, "an empty file is valid");
    if (cfg == NULL)
        return 1;
    is_str(cfg->daemon.state_dir, "/var/lib/mmsegd", "default state_dir");
    is_int(cfg->daemon.log_level, MMS_LOG_INFO, "default log_level info");
    is_int(cfg->scp.port, 11112, "default scp port");
    is_str(cfg->scp.ae_title, "MMSEGD", "default AE title");
    is_int(cfg->series.stable_age_s, 20, "default stable_age_s");
    ok(cfg->series.max_gap_ratio == 2.0, "default max_gap_ratio 2.0");
    is_int(cfg->series.max_voxels, 1000000000, "default max_voxels");
    ok(cfg->infer.tta, "default tta yes");
    is_int(cfg->infer.precision, MMS_PRECISION_FP32, "default precision fp32");
    is_int(cfg->n_dests, 0, "no destinations by default");
    mms_config_free(cfg);

    /* A valid file: comments, inline comments, blank lines, relative state_dir, defaults
     * restated for keys whose feature is not built yet. */
    rc = load("# mmsegd\n"
              "[daemon]\n"
              "state_dir = state   ; relative to this file\n"
              "log_level = debug\n"
              "\n"
              "[scp]\n"
              "port = 11112\n"
              "ae_title = MMSEGD\n"
              "[series]\n"
              "max_gap_ratio = 2\n"
              "[infer]\n"
              "tta = yes\n"
              "model = a.safetensors , /m/b.safetensors,c/d.safetensors\n",
              &cfg);
    ok(rc == 0, "a valid file loads");
    if (rc != 0)
        diag("%s", err);
    if (cfg != NULL) {
        char want[1000];
        snprintf(want, sizeof want, "%s/state", dir);
        is_str(cfg->daemon.state_dir, want, "relative state_dir is relative to the file");
        snprintf(want, sizeof want, "%s/a.safetensors,/m/b.safetensors,%s/c/d.safetensors", dir,
                 dir);
        is_str(cfg->infer.model, want,
               "a model set: each relative file of the list is relative to the file");
        is_int(cfg->daemon.log_level, MMS_LOG_DEBUG, "log_level debug");
        is_str(cfg->path, path, "the file's path is recorded");
    } else {
        skip("no config");
        skip("no config");
        skip("no config");
        skip("no config");
    }
    mms_config_free(cfg);

    /* Each class of error, with its exact message and line number. */
    expect_error("unknown key", "[daemon]\nlog_level = info\nloglevel = info\n",
                 "3: [daemon] loglevel: unknown key");
    expect_error("bad bool", "[infer]\n\ntta = maybe\n",
                 "3: [infer] tta: 'maybe' is not a boolean (yes or no)");
    expect_error("out of range", "[scp]\nport = 70000\n",
                 "2: [scp] port: 70000 is out of range (1 to 65535)");
    expect_error("not a number", "[scp]\nport = 11112x\n",
                 "2: [scp] port: '11112x' is not an unsigned integer");
    expect_error("negative number", "[series]\nstable_age_s = -5\n",
                 "2: [series] stable_age_s: '-5' is not an unsigned integer");
    expect_error("double out of range", "[infer]\ntile_step = 1.5\n",
                 "2: [infer] tile_step: 1.5 is out of range (0.1 to 1)");
    expect_error("bad enum", "[daemon]\nlog_level = loud\n",
                 "2: [daemon] log_level: 'loud' is not one of err, warning, notice, info, debug");
    expect_error("bad section", "[daemon]\n[scpp]\nport = 1\n", "2: [scpp]: unknown section");
    expect_error("key outside any section", "state_dir = /x\n",
                 "1: state_dir: key outside any section");
    expect_error("syntax error", "[daemon]\nstate_dir\n", "2: expected 'key = value'");
    expect_error("set twice", "[daemon]\nlog_level = info\n  log_level = debug\n",
                 "3: [daemon] log_level: set twice (first at line 2)");
    expect_error("bad AE title", "[scp]\nae_title = THIS_IS_FAR_TOO_LONG\n",
                 "2: [scp] ae_title: 'THIS_IS_FAR_TOO_LONG' is not an AE title (1 to 16 printable "
                 "characters, no backslash)");
    /* what serve would refuse at start is refused here (the same parsers) */
    expect_error("CIDR prefix over 32", "[scp]\nallowed_hosts = 127.0.0.1/33\n",
                 "2: [scp] allowed_hosts: '127.0.0.1/33' is not an IPv4 or IPv6 address or CIDR "
                 "block (prefix at most 32 or 128)");
    expect_error("host name in allowed_hosts", "[scp]\nallowed_hosts = 10.0.0.0/8, pacs\n",
                 "2: [scp] allowed_hosts: 'pacs' is not an IPv4 or IPv6 address or CIDR block "
                 "(prefix at most 32 or 128)");
    expect_error("any among AE titles", "[scp]\nallowed_calling_aes = any, CT1\n",
                 "2: [scp] allowed_calling_aes: `any` stands alone");
    expect_error("empty AE title item", "[scp]\nallowed_calling_aes = CT1,,CT2\n",
                 "2: [scp] allowed_calling_aes: an empty or over-long item");
    expect_error("bind not an address", "[scp]\nbind = localhost\n",
                 "2: [scp] bind: 'localhost' is not a numeric IPv4 or IPv6 address");
    expect_error("metrics port out of range", "[daemon]\nmetrics_listen = :99999\n",
                 "2: [daemon] metrics_listen: ':99999': not IPv4:PORT or PORT (port 0 to 65535)");
    expect_error("metrics host missing", "[daemon]\nmetrics_listen = :9411\n",
                 "2: [daemon] metrics_listen: ':9411': '' is not an IPv4 address");
    rc = load("[daemon]\nmetrics_listen = 9411\nstatus_page_phi = yes\n", &cfg);
    ok(rc == 0 && cfg != NULL && strcmp(cfg->daemon.metrics_listen, "9411") == 0 &&
           cfg->daemon.status_page_phi,
       "metrics_listen a port alone (loopback), status_page_phi yes");
    mms_config_free(cfg);
    cfg = NULL;
    expect_error("assoc_timeout_s 0", "[scp]\nassoc_timeout_s = 0\n",
                 "2: [scp] assoc_timeout_s: 0 is out of range (1 to 300)");

    /* inih splits long lines: they are refused at their own line number instead. */
    memset(longline, 'x', sizeof longline);
    memcpy(longline, "[daemon]\nstate_dir = /", 22);
    strcpy(longline + 350, "\nlog_level = info\n");
    expect_error("long line", longline, "2: line longer than 197 characters");

    expect_error("duplicate destination",
                 "[destination pacs]\ntype = dicom\n[destination pacs]\ntype = dicom\n",
                 "3: [destination pacs]: duplicate destination (first at line 1)");
    expect_error("destination without its peer", "[destination pacs]\ntype = dicom\nport = 104\n",
                 "1: [destination pacs]: type dicom needs ae_title, host and port");
    expect_error("folder destination without path", "[destination out]\ntype = folder\n",
                 "1: [destination out]: type folder needs path");
    expect_error("TLS to a destination without our certificate",
                 "[destination pacs]\nae_title = PACS\nhost = pacs\nport = 104\ntls = yes\n",
                 "1: [destination pacs] tls: needs [scp] tls_cert, tls_key and tls_ca (our "
                 "certificate and the CA of the peers)");
    expect_error("tls_cert and tls_key without tls_ca",
                 "[scp]\ntls_cert = /etc/hostname\ntls_key = /etc/hostname\n",
                 "3: [scp] tls_ca is not set: TLS needs tls_cert, tls_key and tls_ca");
    expect_error("an unreadable tls_ca",
                 "[scp]\ntls_cert = /etc/hostname\ntls_key = /etc/hostname\n"
                 "tls_ca = /no/such/ca.crt\n",
                 "4: [scp] tls_ca /no/such/ca.crt: no such file or directory");
    rc = load("[destination pacs]\nae_title = PACS\nhost = 10.0.0.5\nport = 104\n"
              "retry_initial_s = 5\n[destination out]\ntype = folder\npath = results\n",
              &cfg);
    ok(rc == 0 && cfg->n_dests == 2 && cfg->dests[0].type == MMS_DEST_DICOM &&
           strcmp(cfg->dests[0].calling_ae, "MMSEGD") == 0 && cfg->dests[0].retry_initial_s == 5 &&
           cfg->dests[0].retry_max_age_s == 86400 && cfg->dests[1].type == MMS_DEST_FOLDER &&
           strncmp(cfg->dests[1].path, dir, strlen(dir)) == 0,
       "two destinations load, with defaults and the folder relative to the file");
    mms_config_free(cfg);
    expect_error("bad regular expression", "[series]\ndescription_include = (abc\n",
                 "2: [series] description_include: not a POSIX extended regular expression: "
                 "Unmatched ( or \\(");
    expect_error("series description with a backslash",
                 "[seg]\nseries_description = Organs\\left\n",
                 "2: [seg] series_description: 1 to 64 printable ASCII characters, not only "
                 "spaces, no backslash");
    /* [infer] cpus: parsed, within the CPUs this process may use, room on each side. */
    {
        struct mms_cpus allowed;
        char list[256], text[512], want[1024];
        int first = 0;
        if (mms_cpus_get(&allowed) < 0)
            memset(&allowed, 0, sizeof allowed);
        while (first < MMS_CPUS_MAX - 1 && !mms_cpus_has(&allowed, first))
            first++;
        mms_cpus_format(&allowed, list, sizeof list);
        expect_error("cpus that do not parse", "[infer]\ncpus = 0-x\n",
                     "2: [infer] cpus: '0-x' is not a list of CPU numbers and ranges (0 to 1023, "
                     "e.g. 0-11,14)");
        snprintf(want, sizeof want,
                 "2: [infer] cpus: CPU 1023 not available to this process (it may use %s)", list);
        expect_error("a CPU this process may not use", "[infer]\ncpus = 1023\n", want);
        snprintf(text, sizeof text, "[infer]\ncpus = %d\nthreads = 2\n", first);
        snprintf(want, sizeof want,
                 "3: [infer] threads: 2 threads on the 1 CPU of [infer] cpus (%d) would share "
                 "them",
                 first);
        expect_error("more inference threads than its CPUs", text, want);
        int n = mms_cpus_count(&allowed);
        if (n >= 2) {
            snprintf(text, sizeof text, "[infer]\ncpus = %d\n[series]\ndecode_threads = %d\n",
                     first, n);
            snprintf(want, sizeof want,
                     "4: [series] decode_threads: %d threads on the %d CPU%s [infer] cpus (%d) "
                     "leaves to the rest would share them",
                     n, n - 1, n - 1 == 1 ? "" : "s", first);
            expect_error("more decoding threads than the CPUs left to them", text, want);
        } else {
            skip("one CPU: [infer] cpus leaves the rest on it too");
        }
        snprintf(text, sizeof text, "[infer]\ncpus = %d\nthreads = 1\n", first);
        rc = load(text, &cfg);
        snprintf(want, sizeof want, "%d", first);
        ok(rc == 0 && cfg != NULL && strcmp(cfg->infer.cpus, want) == 0 && cfg->infer.threads == 1,
           "[infer] cpus = %s with threads = 1 loads", want);
        mms_config_free(cfg);
        cfg = NULL;
    }
    /* [infer] precision is live: each value loads, and names back the same way. */
    rc = load("[infer]\nbackend = cuda\nprecision = bf16\n", &cfg);
    ok(rc == 0 && cfg->infer.precision == MMS_PRECISION_BF16 &&
           cfg->infer.backend == MMS_BACKEND_CUDA,
       "precision = bf16 with backend = cuda loads");
    mms_config_free(cfg);
    ok(strcmp(mms_precision_name(MMS_PRECISION_FP32), "fp32") == 0 &&
           strcmp(mms_precision_name(MMS_PRECISION_FP16), "fp16") == 0 &&
           strcmp(mms_precision_name(MMS_PRECISION_BF16), "bf16") == 0 &&
           strcmp(mms_precision_name(7), "?") == 0,
       "mms_precision_name spells each precision as the file does");
    /* [infer] device: an index, a list (an index may repeat), or all */
    rc = load("[infer]\ndevice = 3\n", &cfg);
    ok(rc == 0 && !cfg->infer.devices.all && cfg->infer.devices.n == 1 &&
           cfg->infer.devices.id[0] == 3,
       "device = 3: one engine on device 3");
    mms_config_free(cfg);
    rc = load("[infer]\ndevice = 0,1,0\n", &cfg);
    ok(rc == 0 && !cfg->infer.devices.all && cfg->infer.devices.n == 3 &&
           cfg->infer.devices.id[0] == 0 && cfg->infer.devices.id[1] == 1 &&
           cfg->infer.devices.id[2] == 0,
       "device = 0,1,0: three engines, two on device 0");
    mms_config_free(cfg);
    rc = load("[infer]\ndevice = all\n", &cfg);
    ok(rc == 0 && cfg->infer.devices.all && cfg->infer.devices.n == 1, "device = all");
    mms_config_free(cfg);
    rc = load("", &cfg);
    ok(rc == 0 && !cfg->infer.devices.all && cfg->infer.devices.n == 1 &&
           cfg->infer.devices.id[0] == 0,
       "default device 0");
    mms_config_free(cfg);
    expect_error("device out of range", "[infer]\ndevice = 0,64\n",
                 "2: [infer] device: '0,64' is not \"all\" or a list of device indexes (0 to 63, "
                 "comma-separated)");
    expect_error("device list with a gap", "[infer]\ndevice = 0,,1\n",
                 "2: [infer] device: '0,,1' is not \"all\" or a list of device indexes (0 to 63, "
                 "comma-separated)");
    expect_error("device list ending in a comma", "[infer]\ndevice = 1,\n",
                 "2: [infer] device: '1,' is not \"all\" or a list of device indexes (0 to 63, "
                 "comma-separated)");
    expect_error("device = all,0", "[infer]\ndevice = all,0\n",
                 "2: [infer] device: 'all,0' is not \"all\" or a list of device indexes (0 to 63, "
                 "comma-separated)");
    expect_error("nine devices", "[infer]\ndevice = 0,0,0,0,0,0,0,0,0\n",
                 "2: [infer] device: '0,0,0,0,0,0,0,0,0' names more than 8 devices");
    expect_error("bad precision", "[infer]\nprecision = fp8\n",
                 "2: [infer] precision: 'fp8' is not one of fp32, fp16, bf16");
    expect_error("unsupported key value", "[daemon]\nlog_level = info\n[infer]\nexport = fast\n",
                 "4: [infer] export: not supported yet (only the default 'exact' is accepted)");

    /* Several errors are all reported, one line each, in file order. */
    rc = load("[daemon]\nbogus = 1\n[infer]\ntta = perhaps\n", &cfg);
    ok(rc == MMS_ECONFIG && strstr(err, ":2: [daemon] bogus: unknown key\n") != NULL &&
           strstr(err, ":4: [infer] tta: 'perhaps'") != NULL,
       "every error is reported");

    rc = load("[daemon]\nlog_level = info\n", &cfg);
    ok(rc == 0 && unlink(path) == 0, "setup: remove the file");
    mms_config_free(cfg);
    rc = mms_config_load(path, &cfg, err, sizeof err);
    ok(rc == MMS_ENOENT && strstr(err, "cannot open: no such file or directory") != NULL,
       "a missing file is ENOENT with a message");

    /* special files are refused by type before anything is read: /dev/zero never ends, a
     * FIFO would block; a regular file over 1 MiB is refused by size */
    rc = mms_config_load("/dev/zero", &cfg, err, sizeof err);
    ok(rc == MMS_ECONFIG && strstr(err, "/dev/zero: not a regular file") != NULL,
       "/dev/zero is refused: %s", err);
    rc = mms_config_load(dir, &cfg, err, sizeof err);
    ok(rc == MMS_ECONFIG && strstr(err, "not a regular file") != NULL, "a folder is refused");
    char fifo[300];
    snprintf(fifo, sizeof fifo, "%s/fifo.ini", dir);
    rc = mkfifo(fifo, 0600) == 0 ? mms_config_load(fifo, &cfg, err, sizeof err) : MMS_EIO;
    ok(rc == MMS_ECONFIG && strstr(err, "not a regular file") != NULL,
       "a FIFO is refused without blocking");
    unlink(fifo);
    FILE *f = fopen(path, "w");
    for (int i = 0; f != NULL && i < (1 << 20) / 16 + 1; i++)
        fputs(";23456789012345\n", f);
    if (f != NULL)
        fclose(f);
    rc = mms_config_load(path, &cfg, err, sizeof err);
    ok(rc == MMS_ECONFIG &&
           strstr(err, "1048592 bytes, more than the maximum of 1048576 for a configuration") !=
               NULL,
       "a file over 1 MiB is refused: %s", err);
    unlink(path);

    rmdir(dir);
    return done_testing();
}
