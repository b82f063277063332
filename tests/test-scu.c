/* Tests of the Store SCU (dicom/scu.cc) against real peers on loopback: DCMTK's storescp
 * (accepting everything, Implicit VR only, CT only, refusing, aborting, too slow, unable to
 * write, answering 0xA900), Orthanc (accepting, with the instances checked over its REST API,
 * a wrong called AE title, and a second Orthanc that knows one modality and rejects every
 * other calling AE title), our own Store SCP (every class of C-STORE status, a transient
 * A-ASSOCIATE-RJ at max_associations, duplicates sent once), a small raw upper-layer peer
 * that answers with Error Comments, a port where nothing listens and a peer that never
 * answers. The argument checks run first. Each external peer is skipped, saying why, only when
 * its program is missing. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "dicom/scp.h"
#include "dicom/scu.h"
#include "tests/proc-util.h"
#include "tests/tap.h"
#include "tests/find-testdata.h"

#define CT_REL "dcm_qa_ct/In/Philips/S21570/S2010/I10"
#define CT2_REL "dcm_qa_ct/In/Philips/S21570/S2010/I100"
#define SEG_REL "dcmqi/data/segmentations/liver.dcm"
#define CS "cornerstoneWADOImageLoader/testImages/CTImage.dcm_"
#define RLE_REL CS "RLELosslessTransferSyntax_1.2.840.10008.1.2.5.dcm"
#define JLS_REL CS "JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm"
#define ELE_REL CS "LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm"
#define ELE_UID "1.2.840.10008.1.2.1"
#define ILE_UID "1.2.840.10008.1.2"

static char td[1024], dir[64];
static char ct[1200], ct2[1200], seg[1200], rle[1200], jls[1200], ele[1200];
static char storescp[256], orthanc[256], curl[256], dcmdump[256];

/* ------------------------------------------------------------------ processes and files */

static void
stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
}

/* A loopback TCP port that nothing listens on (bound, read back, closed). */
static unsigned
free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    unsigned port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Whether something accepts TCP connections on the loopback port within timeout_ms. */
static bool
wait_listen(unsigned port, unsigned timeout_ms)
{
    for (unsigned t = 0; t < timeout_ms; t += 50) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        bool up = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        if (fd >= 0)
            close(fd);
        if (up)
            return true;
        sleep_ms(50);
    }
    return false;
}

/* The whole file, NUL-terminated (NULs inside read as spaces); NULL when unreadable. */
static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    size_t r;
    while (b != NULL && (r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            char *nb = realloc(b, cap *= 2);
            if (nb == NULL)
                free(b);
            b = nb;
        }
    }
    fclose(f);
    if (b == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (b[i] == '\0')
            b[i] = ' ';
    b[n] = '\0';
    return b;
}

static bool
file_has(const char *path, const char *needle)
{
    char *s = slurp(path);
    bool found = s != NULL && strstr(s, needle) != NULL;
    free(s);
    return found;
}

/* The lines of a log that contain needle, as diagnostics (what a peer reported). */
static void
show_lines(const char *what, const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strstr(line, needle) != NULL)
            diag("%s: %s", what, line);
    }
    if (f != NULL)
        fclose(f);
}

/* The value of tag ("0008,0018") in a file, through dcmdump; "" when absent. */
static void
dump_value(const char *path, const char *tag, char *out, size_t len)
{
    out[0] = '\0';
    if (run("'%s' -q -Un +P %s '%s'", dcmdump, tag, path) != 0)
        return;
    char *s = slurp(tool_log);
    char *b = s != NULL ? strchr(s, '[') : NULL;
    char *e = b != NULL ? strchr(b, ']') : NULL;
    if (e != NULL)
        snprintf(out, len, "%.*s", (int)(e - b - 1), b + 1);
    free(s);
}

/* The file of dir whose name contains needle, into out; false when none. */
static bool
find_in_dir(const char *d, const char *needle, char *out, size_t len)
{
    DIR *dd = opendir(d);
    struct dirent *e;
    bool found = false;
    while (dd != NULL && !found && (e = readdir(dd)) != NULL)
        if (strstr(e->d_name, needle) != NULL) {
            snprintf(out, len, "%s/%s", d, e->d_name);
            found = true;
        }
    if (dd != NULL)
        closedir(dd);
    return found;
}

static bool
same_bytes(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa != NULL && fb != NULL;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        same = ca == cb;
        if (ca == EOF)
            break;
    }
    if (fa != NULL)
        fclose(fa);
    if (fb != NULL)
        fclose(fb);
    return same;
}

/* Whether the Pixel Data values of two files are byte-equal (dcmdump +W writes each to a
 * .raw file). */
static bool
pixels_equal(const char *a, const char *b)
{
    static int seq;
    char da[256], db[256], ra[512], rb[512];
    snprintf(da, sizeof da, "%s/px%d", dir, seq++);
    snprintf(db, sizeof db, "%s/px%d", dir, seq++);
    mkdir(da, 0700);
    mkdir(db, 0700);
    if (run("'%s' -q +W '%s' '%s'", dcmdump, da, a) != 0 ||
        run("'%s' -q +W '%s' '%s'", dcmdump, db, b) != 0)
        return false;
    return find_in_dir(da, ".raw", ra, sizeof ra) && find_in_dir(db, ".raw", rb, sizeof rb) &&
           same_bytes(ra, rb);
}

/* A copy of src at dst with one digit of the meta group's SOP Instance UID (0002,0003)
 * changed, so that the request no longer matches the data set. */
static bool
copy_with_other_meta_uid(const char *src, const char *dst, const char *uid)
{
    FILE *f = fopen(src, "rb");
    if (f == NULL)
        return false;
    static unsigned char b[1 << 20];
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    size_t ul = strlen(uid);
    bool done = false;
    for (size_t i = 132; i + ul < n && i < 1024 && !done; i++)
        if (memcmp(b + i, uid, ul) == 0) {
            b[i + ul - 1] = b[i + ul - 1] == '1' ? '2' : '1';
            done = true;
        }
    f = fopen(dst, "wb");
    if (f == NULL)
        return false;
    bool ok_ = fwrite(b, 1, n, f) == n;
    return fclose(f) == 0 && ok_ && done;
}

static bool
copy_file(const char *src, const char *dst)
{
    return run("cp '%s' '%s'", src, dst) == 0;
}

/* ------------------------------------------------------------------ the SCU */

static struct mms_scu_peer
peer_at(unsigned port, const char *called)
{
    struct mms_scu_peer p = {
        .host = "127.0.0.1",
        .port = port,
        .called_ae = called,
        .calling_ae = "MMSEGD",
        .timeout_s = 5,
        .max_pdu = 0,
    };
    return p;
}

/* Send and print the outcome of every file. */
static int
send_files(const char *what, const struct mms_scu_peer *p, const char *const *paths, int n,
           struct mms_scu_result *r)
{
    char why[1024] = "";
    memset(r, 0, sizeof *r);
    int rc = mms_scu_store(p, paths, n, r, why, sizeof why);
    diag("%s: rc %d (%s), %s", what, rc, rc < 0 ? mms_err_name(rc) : "0",
         r->files != NULL ? mms_scu_class_name(r->cls) : "no result");
    for (int i = 0; i < r->n_files; i++) {
        const struct mms_scu_file *f = &r->files[i];
        diag("  file %d: %s, rc %d, sent %d, status %s0x%04X, ts %s, reason: %s", i + 1,
             mms_scu_class_name(f->cls), f->rc, f->sent, f->has_status ? "" : "(none) ", f->status,
             f->transfer_syntax[0] != '\0' ? f->transfer_syntax : "-",
             f->reason[0] != '\0' ? f->reason : "-");
    }
    if (rc < 0 && r->files == NULL)
        diag("  why: %s", why);
    return rc;
}

/* ------------------------------------------------------------------ a raw peer */

/* A minimal DICOM upper layer acceptor (PS3.8 section 9) for what no Store SCP at hand does:
 * answer a C-STORE with an Error Comment (0000,0902). One association: every presentation
 * context is accepted with its first transfer syntax, each C-STORE-RQ is answered with the
 * next status and comment of its table, A-RELEASE-RQ with A-RELEASE-RP. */
struct raw_peer {
    int listen_fd;
    unsigned port;
    int n;
    uint16_t status[4];
    const char *comment[4];
    int stores; /* C-STORE-RQs answered */
    bool released;
};

static bool
raw_read(int fd, void *p, size_t n)
{
    unsigned char *b = p;
    while (n > 0) {
        ssize_t r = read(fd, b, n);
        if (r <= 0)
            return false;
        b += r;
        n -= (size_t)r;
    }
    return true;
}

static bool
raw_write(int fd, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w <= 0)
            return false;
        b += w;
        n -= (size_t)w;
    }
    return true;
}

static uint32_t
get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static size_t
put_be16(unsigned char *p, size_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
    return 2;
}

static size_t
put_be32(unsigned char *p, size_t v)
{
    put_be16(p, v >> 16);
    return 2 + put_be16(p + 2, v & 0xffff);
}

/* One PDU: its type, the body in *body (malloc'd) and its length; -1 when closed. */
static int
raw_pdu(int fd, unsigned char **body, size_t *len)
{
    unsigned char h[6];
    if (!raw_read(fd, h, 6))
        return -1;
    *len = get_be32(h + 2);
    *body = malloc(*len + 1);
    if (*body == NULL || !raw_read(fd, *body, *len)) {
        free(*body);
        return -1;
    }
    return h[0];
}

/* An element of an implicit VR little endian command set. */
static size_t
put_elem(unsigned char *p, unsigned elem, const void *v, size_t n)
{
    size_t padded = n + (n & 1);
    p[0] = 0;
    p[1] = 0;
    p[2] = (unsigned char)elem;
    p[3] = (unsigned char)(elem >> 8);
    for (int i = 0; i < 4; i++)
        p[4 + i] = (unsigned char)(padded >> (8 * i));
    memcpy(p + 8, v, n);
    if (padded > n)
        p[8 + n] = elem == 0x0902 ? ' ' : '\0';
    return 8 + padded;
}

static size_t
put_us(unsigned char *p, unsigned elem, unsigned v)
{
    unsigned char b[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    return put_elem(p, elem, b, 2);
}

/* The value of element (0000,elem) of a command set, as text or a number. */
static bool
cmd_value(const unsigned char *c, size_t n, unsigned elem, char *text, size_t tlen, unsigned *num)
{
    for (size_t at = 0; at + 8 <= n;) {
        unsigned e = c[at + 2] | c[at + 3] << 8;
        size_t vl = c[at + 4] | c[at + 5] << 8 | c[at + 6] << 16 | (size_t)c[at + 7] << 24;
        if (at + 8 + vl > n)
            return false;
        if (e == elem) {
            if (text != NULL)
                snprintf(text, tlen, "%.*s", (int)(vl < tlen - 1 ? vl : tlen - 1),
                         (const char *)c + at + 8);
            if (num != NULL)
                *num = vl >= 2 ? (unsigned)(c[at + 8] | c[at + 9] << 8) : 0;
            return true;
        }
        at += 8 + vl;
    }
    return false;
}

/* Answer the C-STORE-RQ whose command set is cmd on presentation context ctx. */
static bool
raw_answer(struct raw_peer *rp, int fd, const unsigned char *cmd, size_t n, unsigned ctx)
{
    char cls[80] = "", inst[80] = "";
    unsigned id = 0;
    cmd_value(cmd, n, 0x0002, cls, sizeof cls, NULL);
    cmd_value(cmd, n, 0x1000, inst, sizeof inst, NULL);
    cmd_value(cmd, n, 0x0110, NULL, 0, &id);
    int k = rp->stores < rp->n ? rp->stores : rp->n - 1;
    unsigned char c[512], pdu[600];
    size_t at = 12; /* room for (0000,0000) */
    at += put_elem(c + at, 0x0002, cls, strlen(cls));
    at += put_us(c + at, 0x0100, 0x8001);
    at += put_us(c + at, 0x0120, id);
    at += put_us(c + at, 0x0800, 0x0101);
    at += put_us(c + at, 0x0900, rp->status[k]);
    if (rp->comment[k] != NULL)
        at += put_elem(c + at, 0x0902, rp->comment[k], strlen(rp->comment[k]));
    at += put_elem(c + at, 0x1000, inst, strlen(inst));
    uint32_t gl = (uint32_t)(at - 12);
    put_elem(c, 0x0000, &gl, 4); /* little endian host */
    size_t p = 0;
    pdu[p++] = 0x04;
    pdu[p++] = 0;
    p += put_be32(pdu + p, 4 + 2 + at);
    p += put_be32(pdu + p, 2 + at);
    pdu[p++] = (unsigned char)ctx;
    pdu[p++] = 0x03; /* command, last fragment */
    memcpy(pdu + p, c, at);
    rp->stores++;
    return raw_write(fd, pdu, p + at);
}

/* The A-ASSOCIATE-AC for the A-ASSOCIATE-RQ body rq (n bytes) into ac; its length. */
static size_t
raw_accept(const unsigned char *rq, size_t n, unsigned char *ac)
{
    size_t p = 6;
    memcpy(ac + p, rq, 68); /* version, reserved, called and calling AE, reserved */
    p += 68;
    for (size_t at = 68; at + 4 <= n;) {
        unsigned type = rq[at];
        size_t il = (size_t)rq[at + 2] << 8 | rq[at + 3];
        if (at + 4 + il > n)
            break;
        if (type == 0x10) {
            memcpy(ac + p, rq + at, 4 + il);
            p += 4 + il;
        } else if (type == 0x20) {
            const unsigned char *pc = rq + at + 4;
            const unsigned char *ts = NULL;
            size_t tl = 0;
            for (size_t s = 4; s + 4 <= il && ts == NULL;) {
                size_t sl = (size_t)pc[s + 2] << 8 | pc[s + 3];
                if (pc[s] == 0x40) {
                    ts = pc + s + 4;
                    tl = sl;
                }
                s += 4 + sl;
            }
            ac[p] = 0x21;
            ac[p + 1] = 0;
            put_be16(ac + p + 2, 4 + 4 + tl);
            ac[p + 4] = pc[0];
            ac[p + 5] = 0;
            ac[p + 6] = 0; /* acceptance */
            ac[p + 7] = 0;
            ac[p + 8] = 0x40;
            ac[p + 9] = 0;
            put_be16(ac + p + 10, tl);
            memcpy(ac + p + 12, ts, tl);
            p += 12 + tl;
        }
        at += 4 + il;
    }
    static const char impl[] = "1.2.826.0.1.3680043.10.999";
    size_t ul = 8 + 4 + strlen(impl);
    ac[p++] = 0x50;
    ac[p++] = 0;
    p += put_be16(ac + p, ul);
    ac[p++] = 0x51;
    ac[p++] = 0;
    p += put_be16(ac + p, 4);
    p += put_be32(ac + p, 16384);
    ac[p++] = 0x52;
    ac[p++] = 0;
    p += put_be16(ac + p, strlen(impl));
    memcpy(ac + p, impl, strlen(impl));
    p += strlen(impl);
    ac[0] = 0x02;
    ac[1] = 0;
    put_be32(ac + 2, p - 6);
    return p;
}

static void *
raw_main(void *arg)
{
    struct raw_peer *rp = arg;
    int fd = accept(rp->listen_fd, NULL, NULL);
    unsigned char *body = NULL, cmd[4096];
    size_t len, cmd_len = 0;
    int type;
    while (fd >= 0 && (type = raw_pdu(fd, &body, &len)) >= 0) {
        bool go = true;
        if (type == 0x01) {
            unsigned char *ac = malloc(len + 256);
            go = ac != NULL && raw_write(fd, ac, raw_accept(body, len, ac));
            free(ac);
        } else if (type == 0x04) {
            for (size_t at = 0; go && at + 6 <= len;) {
                size_t pl = get_be32(body + at);
                unsigned ctx = body[at + 4], mch = body[at + 5];
                if (at + 4 + pl > len || pl < 2)
                    break;
                if (mch & 1) { /* command fragment */
                    if (cmd_len + pl - 2 <= sizeof cmd) {
                        memcpy(cmd + cmd_len, body + at + 6, pl - 2);
                        cmd_len += pl - 2;
                    }
                } else if (mch & 2) { /* the data set's last fragment */
                    go = raw_answer(rp, fd, cmd, cmd_len, ctx);
                    cmd_len = 0;
                }
                at += 4 + pl;
            }
        } else if (type == 0x05) {
            static const unsigned char rp_pdu[10] = {0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0};
            rp->released = raw_write(fd, rp_pdu, sizeof rp_pdu);
            go = false;
        } else {
            go = false;
        }
        free(body);
        body = NULL;
        if (!go)
            break;
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static bool
raw_start(struct raw_peer *rp, pthread_t *t)
{
    rp->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (rp->listen_fd < 0 || bind(rp->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(rp->listen_fd, 4) != 0 ||
        getsockname(rp->listen_fd, (struct sockaddr *)&a, &alen) != 0)
        return false;
    rp->port = ntohs(a.sin_port);
    return pthread_create(t, NULL, raw_main, rp) == 0;
}

/* The Error Comment of a C-STORE-RSP reaches the reason, for a warning and a failure. */
static void
test_error_comment(void)
{
    struct raw_peer rp = {
        .n = 2,
        .status = {0xB007, 0xA700},
        .comment = {"coerced 2 elements", "spool volume full"},
    };
    pthread_t t;
    if (!ok(raw_start(&rp, &t), "a raw peer listens")) {
        for (int i = 0; i < 3; i++)
            skip("no raw peer");
        return;
    }
    struct mms_scu_peer p = peer_at(rp.port, "RAW");
    struct mms_scu_result r;
    const char *paths[] = {ct, seg};
    int rc = send_files("raw peer, 0xB007 and 0xA700 with Error Comments", &p, paths, 2, &r);
    pthread_join(t, NULL);
    close(rp.listen_fd);
    ok(r.n_files == 2 && r.files[0].cls == MMS_SCU_DELIVERED && r.files[0].status == 0xB007 &&
           strstr(r.files[0].reason, "0xB007") != NULL &&
           strstr(r.files[0].reason, "Error Comment 'coerced 2 elements'") != NULL,
       "warning 0xB007: delivered, its Error Comment in the reason");
    ok(rc == MMS_EDIMSE && r.n_files == 2 && r.files[1].cls == MMS_SCU_TRANSIENT &&
           r.files[1].status == 0xA700 &&
           strstr(r.files[1].reason, "Error Comment 'spool volume full'") != NULL,
       "0xA700: transient, its Error Comment in the reason");
    ok(rp.stores == 2 && rp.released && r.released, "two C-STOREs, then A-RELEASE");
    mms_scu_result_fini(&r);
}

/* ------------------------------------------------------------------ our own Store SCP */

static char scp_tmp[128];

static struct {
    pthread_mutex_t m;
    int calls, entered;
    uint16_t answer;
    unsigned delay_ms;
} rec = {.m = PTHREAD_MUTEX_INITIALIZER};

static uint16_t
on_store(void *ctx, const struct mms_scp_store *st)
{
    (void)ctx;
    pthread_mutex_lock(&rec.m);
    rec.entered++;
    unsigned delay_ms = rec.delay_ms;
    uint16_t answer = rec.answer;
    pthread_mutex_unlock(&rec.m);
    if (delay_ms > 0)
        sleep_ms(delay_ms);
    unlink(st->path);
    pthread_mutex_lock(&rec.m);
    rec.calls++;
    pthread_mutex_unlock(&rec.m);
    return answer;
}

static void
rec_reset(uint16_t answer, unsigned delay_ms)
{
    pthread_mutex_lock(&rec.m);
    rec.calls = rec.entered = 0;
    rec.answer = answer;
    rec.delay_ms = delay_ms;
    pthread_mutex_unlock(&rec.m);
}

static int
rec_get(int *field)
{
    pthread_mutex_lock(&rec.m);
    int v = *field;
    pthread_mutex_unlock(&rec.m);
    return v;
}

static struct mms_scp *
scp_start(unsigned max_associations)
{
    struct mms_scp_opts o = {
        .ae_title = "OURSCP",
        .bind = "127.0.0.1",
        .port = 0,
        .allowed_calling_aes = "any",
        .allowed_hosts = "any",
        .max_associations = max_associations,
        .max_pdu = 65536,
        .timeout_s = 5,
        .assoc_timeout_s = 5,
        .tmp_dir = scp_tmp,
        .space_dir = scp_tmp,
        .accept_all = true,
        .on_store = on_store,
    };
    struct mms_scp *s = NULL;
    char why[512] = "";
    if (mms_scp_start(&o, &s, why, sizeof why) < 0)
        diag("mms_scp_start: %s", why);
    return s;
}

struct bg_send {
    struct mms_scu_peer peer;
    const char *path;
    int rc;
    struct mms_scu_result res;
};

static void *
bg_send_main(void *arg)
{
    struct bg_send *b = arg;
    char why[512];
    b->rc = mms_scu_store(&b->peer, &b->path, 1, &b->res, why, sizeof why);
    return NULL;
}

/* ------------------------------------------------------------------ cases */

static void
test_args(void)
{
    struct mms_scu_peer p = peer_at(104, "X");
    struct mms_scu_result r;
    memset(&r, 0, sizeof r);
    const char *one[] = {ct};
    char why[256] = "";
    p.host = "::1";
    is_int(mms_scu_store(&p, one, 1, &r, why, sizeof why), MMS_ENOTSUP, "IPv6 literal: ENOTSUP");
    p = peer_at(104, "THIS-AE-TITLE-IS-TOO-LONG");
    is_int(mms_scu_store(&p, one, 1, &r, why, sizeof why), MMS_EINVAL, "long AE title: EINVAL");
    p = peer_at(0, "X");
    is_int(mms_scu_store(&p, one, 1, &r, why, sizeof why), MMS_EINVAL, "port 0: EINVAL");
    p = peer_at(104, "X");
    p.max_pdu = 100;
    is_int(mms_scu_store(&p, one, 1, &r, why, sizeof why), MMS_EINVAL, "max_pdu 100: EINVAL");
    p = peer_at(104, "X");
    is_int(mms_scu_store(&p, one, 0, &r, why, sizeof why), MMS_EINVAL, "no files: EINVAL");
    ok(r.files == NULL, "argument errors leave the result untouched");
    mms_scu_result_fini(NULL);
    mms_scu_result_fini(&r);
}

static void
test_down(void)
{
    unsigned port = free_port();
    struct mms_scu_peer p = peer_at(port, "NOBODY");
    struct mms_scu_result r;
    const char *paths[] = {ct, seg};
    int rc = send_files("nothing listening", &p, paths, 2, &r);
    is_int(rc, MMS_ECONNREFUSED, "peer down: MMS_ECONNREFUSED");
    ok(r.cls == MMS_SCU_TRANSIENT && r.n_transient == 2 && !r.associated,
       "peer down: both files transient, no association");
    ok(r.n_files == 2 && strstr(r.files[0].reason, "refused") != NULL && !r.files[0].sent,
       "peer down: the reason names the refused connection, nothing sent");
    mms_scu_result_fini(&r);

    /* a peer that takes the connection and never answers the A-ASSOCIATE-RQ */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    bool listening = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                     listen(fd, 4) == 0 && getsockname(fd, (struct sockaddr *)&a, &alen) == 0;
    p = peer_at(ntohs(a.sin_port), "SILENT");
    p.timeout_s = 1;
    time_t t0 = time(NULL);
    rc = listening ? send_files("a silent peer, timeout_s 1", &p, paths, 1, &r) : -1;
    ok(rc == MMS_ETIMEDOUT && r.cls == MMS_SCU_TRANSIENT && time(NULL) - t0 <= 3,
       "silent peer: ETIMEDOUT after timeout_s, transient");
    mms_scu_result_fini(&r);
    if (fd >= 0)
        close(fd);
}

/* storescp accepting everything: CT and SEG arrive with the same SOP instance and pixel data;
 * an RLE file is decoded to Explicit VR Little Endian; a JPEG-LS file cannot be converted. */
static void
test_storescp_ok(void)
{
    char od[128], log[128];
    snprintf(od, sizeof od, "%s/scp-all", dir);
    snprintf(log, sizeof log, "%s/storescp-all.log", dir);
    mkdir(od, 0700);
    unsigned port = free_port();
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' -aet STORESCP -od '%s' %u", storescp, od, port);
    pid_t pid = spawn(log, cmd);
    if (!ok(wait_listen(port, 5000), "storescp listens on port %u", port)) {
        for (int i = 0; i < 13; i++)
            skip("storescp did not start");
        stop(pid);
        return;
    }
    struct mms_scu_peer p = peer_at(port, "STORESCP");
    struct mms_scu_result r;
    const char *paths[] = {ct, seg};
    int rc = send_files("storescp, CT and SEG", &p, paths, 2, &r);
    is_int(rc, 0, "storescp: CT and SEG sent");
    ok(r.cls == MMS_SCU_DELIVERED && r.n_delivered == 2 && r.associated && r.released,
       "storescp: both delivered, association released");
    ok(r.n_files == 2 && r.files[0].has_status && r.files[0].status == 0 && r.files[0].sent &&
           strcmp(r.files[0].transfer_syntax, ELE_UID) == 0 && r.files[1].status == 0 &&
           r.files[0].reason[0] == '\0',
       "storescp: status 0x0000 each, sent in Explicit VR Little Endian");
    for (int i = 0; i < 2; i++) {
        char uid[80], got[512], gotuid[80];
        dump_value(paths[i], "0008,0018", uid, sizeof uid);
        bool there = uid[0] != '\0' && find_in_dir(od, uid, got, sizeof got);
        if (there)
            dump_value(got, "0008,0018", gotuid, sizeof gotuid);
        ok(there && strcmp(uid, gotuid) == 0 && pixels_equal(paths[i], got),
           "storescp: %s arrived with SOP Instance UID %s and equal pixel data",
           i == 0 ? "CT" : "SEG", uid);
        ok(r.n_files == 2 && strcmp(r.files[i].sop_instance, uid) == 0,
           "result names the SOP Instance UID of file %d", i + 1);
    }
    mms_scu_result_fini(&r);

    const char *rle_path[] = {rle};
    rc = send_files("storescp, RLE file", &p, rle_path, 1, &r);
    char got[512];
    ok(rc == 0 && r.n_files == 1 && strcmp(r.files[0].transfer_syntax, ELE_UID) == 0,
       "storescp: an RLE file (RLE not accepted) is decoded and sent in Explicit VR LE");
    char uid[80];
    dump_value(rle, "0008,0018", uid, sizeof uid);
    ok(find_in_dir(od, uid, got, sizeof got) && pixels_equal(ele, got),
       "storescp: its pixel data equal those of the uncompressed original");
    mms_scu_result_fini(&r);

    const char *jls_paths[] = {jls, ct2};
    rc = send_files("storescp, JPEG-LS file and a CT", &p, jls_paths, 2, &r);
    is_int(rc, MMS_EDICOM, "storescp: a JPEG-LS file that the peer does not accept: EDICOM");
    ok(r.n_files == 2 && r.files[0].cls == MMS_SCU_PERMANENT && !r.files[0].sent &&
           strstr(r.files[0].reason, "cannot convert") != NULL &&
           r.files[1].cls == MMS_SCU_DELIVERED && r.cls == MMS_SCU_PERMANENT,
       "storescp: it is permanent and not sent; the CT in the same association is delivered");
    mms_scu_result_fini(&r);

    /* a missing file beside a good one */
    char missing[256];
    snprintf(missing, sizeof missing, "%s/no-such-file.dcm", dir);
    const char *miss_paths[] = {missing, ct};
    rc = send_files("storescp, a missing file and a CT", &p, miss_paths, 2, &r);
    is_int(rc, MMS_ENOENT, "a missing file: its rc (ENOENT) is returned");
    ok(r.n_files == 2 && r.files[0].cls == MMS_SCU_PERMANENT && r.files[0].rc == MMS_ENOENT &&
           r.files[1].cls == MMS_SCU_DELIVERED,
       "a missing file: permanent; the other file is delivered");
    mms_scu_result_fini(&r);
    stop(pid);
}

/* storescp accepting Implicit VR Little Endian only: the Explicit VR file is converted. */
static void
test_storescp_implicit(void)
{
    char od[128], log[128], cmd[1024];
    snprintf(od, sizeof od, "%s/scp-implicit", dir);
    snprintf(log, sizeof log, "%s/storescp-implicit.log", dir);
    mkdir(od, 0700);
    unsigned port = free_port();
    snprintf(cmd, sizeof cmd, "'%s' +xi -od '%s' %u", storescp, od, port);
    pid_t pid = spawn(log, cmd);
    wait_listen(port, 5000);
    struct mms_scu_peer p = peer_at(port, "STORESCP");
    struct mms_scu_result r;
    const char *paths[] = {seg};
    int rc = send_files("storescp +xi, SEG", &p, paths, 1, &r);
    ok(rc == 0 && r.n_files == 1 && strcmp(r.files[0].transfer_syntax, ILE_UID) == 0,
       "storescp +xi: the SEG is converted to Implicit VR Little Endian and delivered");
    char uid[80], got[512], ts[80];
    dump_value(seg, "0008,0018", uid, sizeof uid);
    bool there = find_in_dir(od, uid, got, sizeof got);
    if (there)
        dump_value(got, "0002,0010", ts, sizeof ts);
    ok(there && strcmp(ts, ILE_UID) == 0 && pixels_equal(seg, got),
       "storescp +xi: it arrived in Implicit VR with equal pixel data");
    mms_scu_result_fini(&r);
    stop(pid);
}

/* storescp with a configuration that accepts CT Image Storage only. */
static void
test_storescp_ct_only(void)
{
    char od[128], log[128], cfg[128], cmd[1024];
    snprintf(od, sizeof od, "%s/scp-ct", dir);
    snprintf(log, sizeof log, "%s/storescp-ct.log", dir);
    snprintf(cfg, sizeof cfg, "%s/storescp-ct.cfg", dir);
    mkdir(od, 0700);
    FILE *f = fopen(cfg, "w");
    if (f != NULL) {
        fputs("[[TransferSyntaxes]]\n[Uncompressed]\nTransferSyntax1 = LocalEndianExplicit\n"
              "TransferSyntax2 = LittleEndianImplicit\n"
              "[[PresentationContexts]]\n[CTOnly]\n"
              "PresentationContext1 = CTImageStorage\\Uncompressed\n"
              "[[Profiles]]\n[Default]\nPresentationContexts = CTOnly\n",
              f);
        fclose(f);
    }
    unsigned port = free_port();
    snprintf(cmd, sizeof cmd, "'%s' -xf '%s' Default -od '%s' %u", storescp, cfg, od, port);
    pid_t pid = spawn(log, cmd);
    wait_listen(port, 5000);
    struct mms_scu_peer p = peer_at(port, "STORESCP");
    struct mms_scu_result r;
    const char *paths[] = {seg, ct};
    int rc = send_files("storescp CT only, SEG and CT", &p, paths, 2, &r);
    is_int(rc, MMS_EDIMSE, "storescp CT only: EDIMSE for the SEG");
    ok(r.n_files == 2 && r.files[0].cls == MMS_SCU_PERMANENT && !r.files[0].sent &&
           strstr(r.files[0].reason, "no presentation context") != NULL &&
           strstr(r.files[0].reason, "abstract-syntax-not-supported") != NULL,
       "storescp CT only: the SEG is permanent: no presentation context, with the answer");
    ok(r.n_files == 2 && r.files[1].cls == MMS_SCU_DELIVERED && r.cls == MMS_SCU_PERMANENT,
       "storescp CT only: the CT is delivered; overall permanent");
    mms_scu_result_fini(&r);

    const char *seg_only[] = {seg};
    rc = send_files("storescp CT only, SEG alone", &p, seg_only, 1, &r);
    ok(rc == MMS_EDIMSE && r.cls == MMS_SCU_PERMANENT && r.associated && r.released,
       "storescp CT only: SEG alone: permanent, the association is still released");
    mms_scu_result_fini(&r);
    stop(pid);
}

/* storescp refusing every association (A-ASSOCIATE-RJ, rejected-permanent). */
static void
test_storescp_refuse(void)
{
    char od[128], log[128], cmd[1024];
    snprintf(od, sizeof od, "%s/scp-refuse", dir);
    snprintf(log, sizeof log, "%s/storescp-refuse.log", dir);
    mkdir(od, 0700);
    unsigned port = free_port();
    snprintf(cmd, sizeof cmd, "'%s' --refuse -od '%s' %u", storescp, od, port);
    pid_t pid = spawn(log, cmd);
    wait_listen(port, 5000);
    struct mms_scu_peer p = peer_at(port, "STORESCP");
    struct mms_scu_result r;
    const char *paths[] = {ct};
    int rc = send_files("storescp --refuse", &p, paths, 1, &r);
    ok(rc == MMS_EDIMSE && r.cls == MMS_SCU_PERMANENT && !r.associated,
       "storescp --refuse: permanent, not associated");
    ok(r.n_files == 1 && strstr(r.files[0].reason, "A-ASSOCIATE-RJ") != NULL &&
           strstr(r.files[0].reason, "result 1 (rejected-permanent)") != NULL &&
           strstr(r.files[0].reason, "source 1 (service-user)") != NULL &&
           strstr(r.files[0].reason, "reason 1 (no-reason-given)") != NULL,
       "storescp --refuse: the reason carries result, source and reason");
    mms_scu_result_fini(&r);
    stop(pid);
}

/* storescp aborting after the request, and one too slow to answer. */
static void
test_storescp_abort_slow(void)
{
    char od[128], log[128], cmd[1024];
    snprintf(od, sizeof od, "%s/scp-abort", dir);
    snprintf(log, sizeof log, "%s/storescp-abort.log", dir);
    mkdir(od, 0700);
    unsigned port = free_port();
    snprintf(cmd, sizeof cmd, "'%s' --abort-after -od '%s' %u", storescp, od, port);
    pid_t pid = spawn(log, cmd);
    wait_listen(port, 5000);
    struct mms_scu_peer p = peer_at(port, "STORESCP");
    struct mms_scu_result r;
    const char *paths[] = {ct, seg};
    int rc = send_files("storescp --abort-after", &p, paths, 2, &r);
    ok(rc == MMS_EDIMSE && r.cls == MMS_SCU_TRANSIENT && r.n_transient == 2 && !r.released,
       "storescp --abort-after: both transient, not released");
    ok(r.n_files == 2 && r.files[0].sent && !r.files[0].has_status &&
           strstr(r.files[0].reason, "aborted by the peer") != NULL && !r.files[1].sent &&
           strstr(r.files[1].reason, "not sent") != NULL,
       "storescp --abort-after: the first file names the A-ABORT, the second was not sent");
    mms_scu_result_fini(&r);
    stop(pid);

    snprintf(log, sizeof log, "%s/storescp-slow.log", dir);
    port = free_port();
    snprintf(cmd, sizeof cmd, "'%s' --sleep-during 3 -od '%s' %u", storescp, od, port);
    pid = spawn(log, cmd);
    wait_listen(port, 5000);
    p = peer_at(port, "STORESCP");
    p.timeout_s = 1;
    const char *one[] = {seg};
    time_t t0 = time(NULL);
    rc = send_files("storescp --sleep-during 3, timeout_s 1", &p, one, 1, &r);
    time_t took = time(NULL) - t0;
    ok(rc == MMS_ETIMEDOUT && r.cls == MMS_SCU_TRANSIENT && r.n_files == 1 &&
           strstr(r.files[0].reason, "timeout_s") != NULL,
       "storescp too slow: ETIMEDOUT, transient");
    ok(took <= 3, "storescp too slow: the call ended after %ld s (timeout_s 1)", (long)took);
    mms_scu_result_fini(&r);
    stop(pid);
}

/* storescp whose output folder is gone (0xA700), and a file whose meta group names another
 * SOP instance than its data set (0xA900). */
static void
test_storescp_status(void)
{
    char od[128], log[128], cmd[1024];
    snprintf(od, sizeof od, "%s/scp-gone", dir);
    snprintf(log, sizeof log, "%s/storescp-gone.log", dir);
    mkdir(od, 0700);
    unsigned port = free_port();
    snprintf(cmd, sizeof cmd, "'%s' -od '%s' %u", storescp, od, port);
    pid_t pid = spawn(log, cmd);
    wait_listen(port, 5000);
    rmdir(od);
    struct mms_scu_peer p = peer_at(port, "STORESCP");
    struct mms_scu_result r;
    const char *paths[] = {ct};
    int rc = send_files("storescp, output folder removed", &p, paths, 1, &r);
    ok(rc == MMS_EDIMSE && r.cls == MMS_SCU_TRANSIENT && r.n_files == 1 && r.files[0].has_status &&
           r.files[0].status == 0xA700 && strstr(r.files[0].reason, "0xA700") != NULL,
       "storescp cannot write: 0xA700 is transient, the reason has the status in hex");
    show_lines("storescp", log, "cannot write");
    mms_scu_result_fini(&r);

    mkdir(od, 0700);
    char uid[80], odd[256];
    dump_value(ct, "0002,0003", uid, sizeof uid);
    snprintf(odd, sizeof odd, "%s/other-meta-uid.dcm", dir);
    const char *bad[] = {odd};
    if (!ok(uid[0] != '\0' && copy_with_other_meta_uid(ct, odd, uid),
            "a copy of the CT whose meta group names another SOP Instance UID")) {
        skip("no file for the 0xA900 case");
    } else {
        rc = send_files("storescp, meta UID differs from the data set", &p, bad, 1, &r);
        ok(rc == MMS_EDIMSE && r.cls == MMS_SCU_PERMANENT && r.n_files == 1 &&
               r.files[0].status == 0xA900 && strstr(r.files[0].reason, "0xA900") != NULL,
           "storescp answers 0xA900: permanent, the reason has the status in hex");
        mms_scu_result_fini(&r);
    }
    stop(pid);
}

/* Our own SCP: every class of status on the wire; duplicates sent once; the transient reject
 * at max_associations. */
static void
test_own_scp(void)
{
    struct mms_scp *s = scp_start(1);
    if (!ok(s != NULL, "our Store SCP starts")) {
        for (int i = 0; i < 14; i++)
            skip("no Store SCP");
        return;
    }
    struct mms_scu_peer p = peer_at(mms_scp_port(s), "OURSCP");
    static const struct {
        uint16_t status;
        enum mms_scu_class cls;
    } st[] = {
        {0xB000, MMS_SCU_DELIVERED}, {0xB006, MMS_SCU_DELIVERED}, {0xB007, MMS_SCU_DELIVERED},
        {0xA700, MMS_SCU_TRANSIENT}, {0xA7FF, MMS_SCU_TRANSIENT}, {0xA900, MMS_SCU_PERMANENT},
        {0xC000, MMS_SCU_PERMANENT}, {0x0122, MMS_SCU_PERMANENT}, {0xB001, MMS_SCU_PERMANENT},
    };
    for (size_t i = 0; i < sizeof st / sizeof st[0]; i++) {
        rec_reset(st[i].status, 0);
        struct mms_scu_result r;
        const char *one[] = {seg};
        char why[512] = "", hex[16];
        memset(&r, 0, sizeof r);
        int rc = mms_scu_store(&p, one, 1, &r, why, sizeof why);
        snprintf(hex, sizeof hex, "0x%04X", st[i].status);
        ok(r.n_files == 1 && r.files[0].status == st[i].status && r.files[0].cls == st[i].cls &&
               (rc == 0) == (st[i].cls == MMS_SCU_DELIVERED) &&
               strstr(r.files[0].reason, hex) != NULL,
           "status %s: %s (rc %d, %s)", hex, mms_scu_class_name(st[i].cls), rc,
           r.n_files == 1 ? r.files[0].reason : why);
        mms_scu_result_fini(&r);
    }

    /* duplicates: the same path twice, a symbolic link to it, a copy (same UID) */
    rec_reset(0, 0);
    char link[256], copy[256];
    snprintf(link, sizeof link, "%s/ct-link.dcm", dir);
    snprintf(copy, sizeof copy, "%s/ct-copy.dcm", dir);
    char target[PATH_MAX];
    bool made = realpath(ct, target) != NULL && symlink(target, link) == 0 && copy_file(ct, copy);
    const char *dup[] = {ct, ct, link, seg, copy};
    struct mms_scu_result r;
    int rc = send_files("our SCP, duplicates", &p, dup, 5, &r);
    is_int(rec_get(&rec.calls), 2, "duplicates: two C-STOREs reach the SCP (CT once, SEG once)");
    ok(made && rc == MMS_EINVAL && r.n_files == 5 && r.files[1].cls == MMS_SCU_DELIVERED &&
           !r.files[1].sent && r.files[2].cls == MMS_SCU_DELIVERED && !r.files[2].sent &&
           r.files[4].cls == MMS_SCU_PERMANENT && !r.files[4].sent &&
           strstr(r.files[4].reason, "same SOP Instance UID") != NULL,
       "duplicates: the same file takes the first outcome; a copy with that UID is refused");
    mms_scu_result_fini(&r);

    /* max_associations 1: a second association while the first waits in on_store */
    rec_reset(0, 1500);
    struct bg_send b = {.peer = p, .path = ct};
    pthread_t t;
    bool started = pthread_create(&t, NULL, bg_send_main, &b) == 0;
    for (int i = 0; i < 100 && rec_get(&rec.entered) == 0; i++)
        sleep_ms(20);
    const char *one[] = {seg};
    rc = send_files("our SCP, a second association beyond max_associations", &p, one, 1, &r);
    ok(rc == MMS_EDIMSE && r.cls == MMS_SCU_TRANSIENT && r.n_files == 1 &&
           strstr(r.files[0].reason, "result 2 (rejected-transient)") != NULL &&
           strstr(r.files[0].reason, "reason 2 (local-limit-exceeded)") != NULL,
       "A-ASSOCIATE-RJ rejected-transient: transient, with result, source and reason");
    mms_scu_result_fini(&r);
    if (started)
        pthread_join(t, NULL);
    ok(started && b.rc == 0 && b.res.cls == MMS_SCU_DELIVERED,
       "the first association still delivers");
    mms_scu_result_fini(&b.res);

    /* the called AE title must be the SCP's */
    rec_reset(0, 0);
    p.called_ae = "SOMEONE";
    rc = send_files("our SCP, wrong called AE title", &p, one, 1, &r);
    ok(rc == MMS_EDIMSE && r.cls == MMS_SCU_PERMANENT && r.n_files == 1 &&
           strstr(r.files[0].reason, "reason 7 (called-AE-title-not-recognized)") != NULL,
       "wrong called AE title: permanent, reason 7");
    mms_scu_result_fini(&r);
    mms_scp_stop(s);
}

/* ------------------------------------------------------------------ Orthanc */

struct orthanc {
    char dir[128], log[160];
    unsigned http, dicom;
    pid_t pid;
};

static bool
orthanc_start(struct orthanc *o, const char *name, const char *extra)
{
    snprintf(o->dir, sizeof o->dir, "%s/%s", dir, name);
    snprintf(o->log, sizeof o->log, "%s/orthanc.log", o->dir);
    mkdir(o->dir, 0700);
    o->http = free_port();
    o->dicom = free_port();
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/orthanc.json", o->dir);
    FILE *f = fopen(cfg, "w");
    if (f == NULL)
        return false;
    fprintf(f,
            "{\n"
            "  \"Name\": \"%s\",\n"
            "  \"StorageDirectory\": \"%s/db\",\n"
            "  \"IndexDirectory\": \"%s/db\",\n"
            "  \"HttpPort\": %u,\n"
            "  \"DicomPort\": %u,\n"
            "  \"DicomAet\": \"ORTHANC\",\n"
            "  \"DicomCheckCalledAet\": true,\n"
            "  \"RemoteAccessAllowed\": false,\n"
            "  \"AuthenticationEnabled\": false,\n"
            "  \"Plugins\": [],\n"
            "  \"LuaScripts\": [],\n"
            "  \"StableAge\": 1%s\n"
            "}\n",
            name, o->dir, o->dir, o->http, o->dicom, extra);
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' '%s'", orthanc, cfg);
    o->pid = spawn(o->log, cmd);
    return wait_listen(o->http, 10000) && wait_listen(o->dicom, 10000);
}

/* GET (body NULL) or POST body to the Orthanc REST path; the answer in out. */
static bool
orthanc_rest(const struct orthanc *o, const char *path, const char *body, const char *out)
{
    if (body != NULL)
        return run("'%s' -sf -o '%s' -d '%s' http://127.0.0.1:%u%s", curl, out, body, o->http,
                   path) == 0;
    return run("'%s' -sf -o '%s' http://127.0.0.1:%u%s", curl, out, o->http, path) == 0;
}

/* The Orthanc ID of the instance with this SOP Instance UID, into id; false when absent. */
static bool
orthanc_find(const struct orthanc *o, const char *uid, char *id, size_t len)
{
    char body[256], out[256];
    snprintf(body, sizeof body, "{\"Level\":\"Instance\",\"Query\":{\"SOPInstanceUID\":\"%s\"}}",
             uid);
    snprintf(out, sizeof out, "%s/find.json", o->dir);
    if (!orthanc_rest(o, "/tools/find", body, out))
        return false;
    char *s = slurp(out);
    char *b = s != NULL ? strchr(s, '"') : NULL;
    char *e = b != NULL ? strchr(b + 1, '"') : NULL;
    bool found = e != NULL && e - b - 1 > 0 && (size_t)(e - b) < len;
    if (found)
        snprintf(id, len, "%.*s", (int)(e - b - 1), b + 1);
    free(s);
    return found;
}

static void
test_orthanc(void)
{
    struct orthanc o, q;
    bool up = orthanc_start(&o, "orthanc-open", "");
    /* the second one knows one modality and nobody else may connect */
    char extra[512];
    snprintf(extra, sizeof extra,
             ",\n  \"DicomAlwaysAllowEcho\": false,\n  \"DicomAlwaysAllowStore\": false,\n"
             "  \"DicomAlwaysAllowFind\": false,\n  \"DicomAlwaysAllowFindWorklist\": false,\n"
             "  \"DicomAlwaysAllowGet\": false,\n  \"DicomAlwaysAllowMove\": false,\n"
             "  \"DicomCheckModalityHost\": true,\n"
             "  \"DicomModalities\": { \"known\": [ \"KNOWN\", \"127.0.0.1\", 104 ] }");
    bool up2 = orthanc_start(&q, "orthanc-closed", extra);
    ok(up && up2, "two Orthanc servers listen (HTTP %u, %u; DICOM %u, %u)", o.http, q.http, o.dicom,
       q.dicom);

    struct mms_scu_peer p = peer_at(o.dicom, "ORTHANC");
    struct mms_scu_result r;
    const char *paths[] = {ct, seg};
    int rc = send_files("Orthanc, CT and SEG", &p, paths, 2, &r);
    ok(rc == 0 && r.cls == MMS_SCU_DELIVERED && r.n_delivered == 2 && r.released,
       "Orthanc: CT and SEG delivered, association released");
    mms_scu_result_fini(&r);
    for (int i = 0; i < 2; i++) {
        char uid[80], study[80], id[128], path[256], out[256];
        dump_value(paths[i], "0008,0018", uid, sizeof uid);
        dump_value(paths[i], "0020,000d", study, sizeof study);
        bool found = orthanc_find(&o, uid, id, sizeof id);
        snprintf(path, sizeof path, "/instances/%s/study", id);
        snprintf(out, sizeof out, "%s/study.json", o.dir);
        char quoted[100];
        snprintf(quoted, sizeof quoted, "\"%s\"", study);
        ok(found && orthanc_rest(&o, path, NULL, out) && file_has(out, quoted),
           "Orthanc: %s %s is stored under study %s", i == 0 ? "CT" : "SEG", uid, study);
        snprintf(path, sizeof path, "/instances/%s/file", id);
        snprintf(out, sizeof out, "%s/instance-%d.dcm", o.dir, i);
        ok(found && orthanc_rest(&o, path, NULL, out) && pixels_equal(paths[i], out),
           "Orthanc: the stored %s has byte-equal pixel data", i == 0 ? "CT" : "SEG");
    }

    /* DicomCheckCalledAet: another called AE title is rejected */
    p.called_ae = "NOT-ORTHANC";
    const char *one[] = {ct};
    rc = send_files("Orthanc, wrong called AE title", &p, one, 1, &r);
    ok(rc == MMS_EDIMSE && r.cls == MMS_SCU_PERMANENT && r.n_files == 1 &&
           strstr(r.files[0].reason, "reason 7 (called-AE-title-not-recognized)") != NULL,
       "Orthanc, wrong called AE title: permanent, reason 7");
    mms_scu_result_fini(&r);
    show_lines("Orthanc", o.log, "NOT-ORTHANC");

    /* an unknown calling AE title */
    p = peer_at(q.dicom, "ORTHANC");
    rc = send_files("Orthanc (known modalities only), calling AE MMSEGD", &p, paths, 2, &r);
    ok(rc == MMS_EDIMSE && r.cls == MMS_SCU_PERMANENT && r.n_permanent == 2 && !r.associated,
       "Orthanc rejects an unknown calling AE title: both files permanent");
    ok(r.n_files == 2 &&
           strstr(r.files[0].reason, "result 1 (rejected-permanent), source 1 (service-user), "
                                     "reason 3 (calling-AE-title-not-recognized)") != NULL,
       "Orthanc's reject: result 1, source 1, reason 3 in the reason");
    mms_scu_result_fini(&r);
    show_lines("Orthanc", q.log, "MMSEGD");
    show_lines("Orthanc", q.log, "F: ");

    p.calling_ae = "KNOWN";
    rc = send_files("Orthanc (known modalities only), calling AE KNOWN", &p, one, 1, &r);
    ok(rc == 0 && r.cls == MMS_SCU_DELIVERED, "Orthanc accepts the known calling AE title");
    mms_scu_result_fini(&r);

    stop(o.pid);
    stop(q.pid);
}

int
main(void)
{
    if (!find_testdata(td, sizeof td))
        skip_all("no test data (MMS_TESTDATA, ../shared/testdata)");
    plan(68, 120);
    mms_log_set_level(getenv("MMS_TEST_DEBUG") != NULL ? MMS_LOG_DEBUG : MMS_LOG_NOTICE);
    snprintf(ct, sizeof ct, "%s/%s", td, CT_REL);
    snprintf(ct2, sizeof ct2, "%s/%s", td, CT2_REL);
    snprintf(seg, sizeof seg, "%s/%s", td, SEG_REL);
    snprintf(rle, sizeof rle, "%s/%s", td, RLE_REL);
    snprintf(jls, sizeof jls, "%s/%s", td, JLS_REL);
    snprintf(ele, sizeof ele, "%s/%s", td, ELE_REL);

    snprintf(dir, sizeof dir, "/tmp/mms-test-scu-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    snprintf(tool_log, sizeof tool_log, "%s/tool.log", dir);
    snprintf(scp_tmp, sizeof scp_tmp, "%s/scp-tmp", dir);
    mkdir(scp_tmp, 0700);

    bool have_dcmdump = find_tool("dcmdump", "/usr/bin/dcmdump", dcmdump, sizeof dcmdump);
    bool have_storescp = find_tool("storescp", "/usr/bin/storescp", storescp, sizeof storescp);
    bool have_orthanc = find_tool("Orthanc", "/usr/sbin/Orthanc", orthanc, sizeof orthanc);
    bool have_curl = find_tool("curl", "/usr/bin/curl", curl, sizeof curl);

    test_args();          /* 8 */
    test_down();          /* 4 */
    test_own_scp();       /* 15 */
    test_error_comment(); /* 4 */
    if (have_storescp && have_dcmdump) {
        test_storescp_ok();         /* 14 */
        test_storescp_implicit();   /* 2 */
        test_storescp_ct_only();    /* 4 */
        test_storescp_refuse();     /* 2 */
        test_storescp_abort_slow(); /* 4 */
        test_storescp_status();     /* 3 */
    } else {
        for (int i = 0; i < 29; i++)
            skip(have_storescp ? "dcmdump is missing (Debian package dcmtk)"
                               : "storescp is missing (Debian package dcmtk)");
    }
    if (have_orthanc && have_curl && have_dcmdump) {
        test_orthanc(); /* 10 */
    } else {
        for (int i = 0; i < 10; i++)
            skip(!have_orthanc ? "Orthanc is missing (Debian package orthanc)"
                 : !have_curl  ? "curl is missing (Debian package curl)"
                               : "dcmdump is missing (Debian package dcmtk)");
    }
    if (tap_failed == 0 && getenv("MMS_TEST_KEEP") == NULL)
        run("rm -rf '%s'", dir);
    else
        diag("files kept in %s", dir);
    return done_testing();
}
