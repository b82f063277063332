/* Fuzz target: the Store SCP's network path (dicom/scp.cc) from the first byte a peer sends:
 * our reading of the A-ASSOCIATE-RQ and its limits, the admission policy, DCMTK's parsing of
 * the request from memory, the DIMSE messages that follow, and our handling of each C-STORE
 * (the file written, sealed and checked, then given to on_store). A real SCP listens on
 * loopback (started once); each input is written to a new connection as it is, the write side
 * is closed, and everything the SCP answers is read until it closes the connection.
 * Promise checked: whatever the SCP sends first is an upper-layer PDU it may send (A-ASSOCIATE-
 * AC or RJ, P-DATA, A-RELEASE-RP, A-ABORT); every received file reaches on_store complete. A
 * crash, a leak or undefined behaviour in any of its threads is a finding too.
 * Its libFuzzer options (fuzz-pdu.args): inputs up to 64 KiB (a request and a few PDUs), and
 * single allocations up to 4 GiB: DCMTK 3.6.7 allocates the value of a command element at the
 * length the peer declares before it reads it (DIMSE_receiveCommand), which is address space
 * the kernel hands out lazily and DCMTK frees when the short PDV ends; a larger one fails as an
 * allocation and the association is aborted.
 * Threads: libFuzzer's, and the SCP's own. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "dicom/scp.h"
#include "tests/fuzz/fuzz-util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[512];
static struct mms_scp *scp;
static unsigned port;

static void
quiet(int level, const char *msg, void *arg)
{
    (void)level;
    (void)msg;
    (void)arg;
}

/* A received instance: the file is there and not empty; it is removed (nothing is kept). */
static uint16_t
on_store(void *ctx, const struct mms_scp_store *st)
{
    (void)ctx;
    struct stat sb;
    FUZZ_CHECK(st->path != NULL && stat(st->path, &sb) == 0 && sb.st_size > 0);
    FUZZ_CHECK(st->sop_instance != NULL && st->sop_instance[0] != '\0');
    unlink(st->path);
    return 0x0000;
}

static void
cleanup(void)
{
    mms_scp_stop(scp);
    fuzz_rmtree(dir, false);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    mms_log_set_sink(quiet, NULL);
    char why[512] = "";
    if (!fuzz_tmpdir("fuzz-pdu", dir, sizeof dir)) {
        fprintf(stderr, "fuzz-pdu: no temporary folder\n");
        exit(1);
    }
    struct mms_scp_opts o = {
        .ae_title = "MMSEGD",
        .bind = "127.0.0.1",
        .port = 0,
        .allowed_calling_aes = "any",
        .allowed_hosts = "127.0.0.0/8",
        .max_associations = 8,
        .max_associations_per_host = 0,
        .assoc_timeout_s = 1,
        .max_pdu = 16384,
        .timeout_s = 1,
        .tmp_dir = dir,
        .space_dir = dir,
        .min_free_bytes = 0,
        .accept_all = true,
        .tls = NULL,
        .on_store = on_store,
        .ctx = NULL,
    };
    if (mms_scp_start(&o, &scp, why, sizeof why) < 0) {
        fprintf(stderr, "fuzz-pdu: the SCP did not start: %s\n", why);
        exit(1);
    }
    port = mms_scp_port(scp);
    atexit(cleanup);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    FUZZ_CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    /* the input as it is, then the end of our side; a peer that closes early ends the write */
    size_t at = 0;
    while (at < size) {
        ssize_t w = send(fd, data + at, size - at, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        at += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    /* everything the SCP answers, until it closes (its timeouts are 1 s) */
    uint8_t buf[4096];
    int first = -1;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 10000) <= 0)
            break; /* the SCP did not close within 10 s: libFuzzer's -timeout tells */
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r <= 0)
            break;
        if (first < 0)
            first = buf[0];
    }
    close(fd);
    /* the SCP's thread done with this connection before the next input (and before a leak
       check looks at the heap) */
    for (int i = 0; i < 10000 && mms_scp_connections(scp) > 0; i++)
        usleep(1000);
    FUZZ_CHECK(first < 0 || first == 0x02 || first == 0x03 || first == 0x04 || first == 0x06 ||
               first == 0x07);
    return 0;
}
