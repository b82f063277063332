/* Tests of the Store SCP (dicom/scp.cc) with the real DCMTK tools as peers, and a small raw
 * DICOM client for what those tools refuse to send: C-ECHO, a CT series and compressed files
 * stored bit-preserving in their transfer syntax, the association policy (called and calling
 * AE title, allowed_hosts over IPv4 and IPv6, max_associations), the refusals (free space,
 * empty or differing SOP Instance UID, on_store's answer), accept_all, probes and non-DICOM
 * peers, stop while idle, while a sender is busy and with an idle association, no descriptor
 * left behind, and mms_cidr_match. */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
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
#include "tests/proc-util.h"
#include "tests/tap.h"
#include "tests/find-testdata.h"

#define S2010 "dcm_qa_ct/In/Philips/S21570/S2010"
#define CS "cornerstoneWADOImageLoader/testImages/CTImage.dcm_"
#define I10 S2010 "/I10"
#define CT_CLASS "1.2.840.10008.5.1.4.1.1.2"
#define J2K CS "JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm"
#define JLS CS "JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm"
#define RLE CS "RLELosslessTransferSyntax_1.2.840.10008.1.2.5.dcm"
#define SC_DFL "pydicom/src/pydicom/data/test_files/image_dfl.dcm"

static char td[1024], dir[64], tmp_dir[128], kept_dir[128];

/* What on_store saw, and what it answers. */
static struct {
    pthread_mutex_t m;
    int calls, seq, bad_name;
    uint16_t answer;
    unsigned delay_ms;
    char calling[64], peer[64], sop_class[65];
} rec = {.m = PTHREAD_MUTEX_INITIALIZER};

static uint16_t
on_store(void *ctx, const struct mms_scp_store *st)
{
    (void)ctx;
    pthread_mutex_lock(&rec.m);
    unsigned delay_ms = rec.delay_ms;
    pthread_mutex_unlock(&rec.m);
    if (delay_ms > 0)
        usleep(delay_ms * 1000);
    pthread_mutex_lock(&rec.m);
    rec.calls++;
    /* the name must be tmp_dir/rx-<16 hex>.dcm */
    size_t n = strlen(tmp_dir);
    const char *name = st->path + n;
    bool good = strncmp(st->path, tmp_dir, n) == 0 && strlen(name) == 24 &&
                strncmp(name, "/rx-", 4) == 0 && strcmp(name + 20, ".dcm") == 0 &&
                strspn(name + 4, "0123456789abcdef") == 16;
    rec.bad_name += !good;
    snprintf(rec.calling, sizeof rec.calling, "%s", st->calling_ae);
    snprintf(rec.peer, sizeof rec.peer, "%s", st->peer);
    snprintf(rec.sop_class, sizeof rec.sop_class, "%s", st->sop_class);
    uint16_t answer = rec.answer;
    if (answer == 0) {
        char to[256];
        snprintf(to, sizeof to, "%s/%d.dcm", kept_dir, rec.seq++);
        if (rename(st->path, to) != 0)
            answer = 0xA700;
    } else {
        unlink(st->path);
    }
    pthread_mutex_unlock(&rec.m);
    return answer;
}

static void
rec_reset(uint16_t answer, unsigned delay_ms)
{
    pthread_mutex_lock(&rec.m);
    rec.calls = 0;
    rec.answer = answer;
    rec.delay_ms = delay_ms;
    pthread_mutex_unlock(&rec.m);
}

/* A field of rec, read under its lock. */
static const char *
rec_get(const char *field)
{
    static char out[80];
    pthread_mutex_lock(&rec.m);
    snprintf(out, sizeof out, "%s",
             strcmp(field, "calling") == 0 ? rec.calling
             : strcmp(field, "peer") == 0  ? rec.peer
                                           : rec.sop_class);
    pthread_mutex_unlock(&rec.m);
    return out;
}

static int
rec_seq(void)
{
    pthread_mutex_lock(&rec.m);
    int n = rec.seq;
    pthread_mutex_unlock(&rec.m);
    return n;
}

static int
rec_calls(void)
{
    pthread_mutex_lock(&rec.m);
    int n = rec.calls;
    pthread_mutex_unlock(&rec.m);
    return n;
}

static int
reap(pid_t pid)
{
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Whether the file path contains needle. */
static bool
file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    return strstr(buf, needle) != NULL;
}

static void
show_log(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        diag("  %s", line);
    }
    if (f != NULL)
        fclose(f);
}

static int
count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void
empty_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        unlink(p);
    }
    if (d != NULL)
        closedir(d);
}

/* Whether an explicit VR has a 4-byte length (PS3.5 table 7.1-1). */
static bool
long_vr(const unsigned char *vr)
{
    static const char *const l[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ",
                                    "SV", "UC", "UN", "UR", "UT", "UV"};
    for (size_t i = 0; i < sizeof l / sizeof l[0]; i++)
        if (memcmp(vr, l[i], 2) == 0)
            return true;
    return false;
}

/* A file in memory: its bytes, where the data set starts (after the file meta group,
 * found by walking the group 0002 elements, explicit VR little endian) and the transfer
 * syntax of the meta. */
struct dcm {
    unsigned char *b;
    size_t n, ds;
    char ts[65], inst[65]; /* (0002,0010), (0002,0003) */
};

static bool
dcm_load(const char *path, struct dcm *d)
{
    memset(d, 0, sizeof *d);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    d->b = malloc(len > 0 ? (size_t)len : 1);
    d->n = d->b != NULL && len > 0 ? fread(d->b, 1, (size_t)len, f) : 0;
    fclose(f);
    if (d->n < 132 || memcmp(d->b + 128, "DICM", 4) != 0)
        return false;
    size_t at = 132;
    while (at + 8 <= d->n && d->b[at] == 0x02 && d->b[at + 1] == 0x00) {
        unsigned elem = d->b[at + 2] | d->b[at + 3] << 8;
        const unsigned char *vr = d->b + at + 4;
        size_t hdr, vl;
        if (long_vr(vr)) {
            if (at + 12 > d->n)
                return false;
            vl = d->b[at + 8] | d->b[at + 9] << 8 | d->b[at + 10] << 16 |
                 (size_t)d->b[at + 11] << 24;
            hdr = 12;
        } else {
            vl = d->b[at + 6] | d->b[at + 7] << 8;
            hdr = 8;
        }
        if (at + hdr + vl > d->n)
            return false;
        char *to = elem == 0x0010 ? d->ts : elem == 0x0003 ? d->inst : NULL;
        if (to != NULL) {
            size_t k = vl < sizeof d->ts - 1 ? vl : sizeof d->ts - 1;
            memcpy(to, d->b + at + hdr, k);
            while (k > 0 && (to[k - 1] == '\0' || to[k - 1] == ' '))
                k--;
            to[k] = '\0';
        }
        at += hdr + vl;
    }
    d->ds = at;
    return true;
}

static bool
dcm_same_dataset(const struct dcm *a, const struct dcm *b)
{
    return a->n - a->ds == b->n - b->ds && memcmp(a->b + a->ds, b->b + b->ds, a->n - a->ds) == 0;
}

static void
dcm_free(struct dcm *d)
{
    free(d->b);
    d->b = NULL;
}

/* The kept file whose data set equals that of src; its meta transfer syntax in ts. */
static bool
kept_has(const char *src, char *ts, size_t ts_len)
{
    struct dcm s, k;
    bool found = false;
    if (!dcm_load(src, &s)) {
        dcm_free(&s);
        return false;
    }
    for (int i = 0, n = rec_seq(); i < n && !found; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%d.dcm", kept_dir, i);
        if (dcm_load(p, &k) && dcm_same_dataset(&s, &k)) {
            found = true;
            snprintf(ts, ts_len, "%s", k.ts);
        }
        dcm_free(&k);
    }
    dcm_free(&s);
    return found;
}

/* A minimal DICOM upper layer client (PS3.8 section 9), for what the DCMTK tools refuse to
 * send: data sets whose SOP Instance UID is empty or differs from the request's, a request
 * without Affected SOP Instance UID, data sets sent byte for byte, an association left idle. */
static bool
put_all(int fd, const void *p, size_t n)
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

static bool
get_all(int fd, void *p, size_t n)
{
    unsigned char *b = p;
    while (n > 0) {
        struct pollfd q = {fd, POLLIN, 0};
        if (poll(&q, 1, 10000) != 1)
            return false;
        ssize_t r = read(fd, b, n);
        if (r <= 0)
            return false;
        b += r;
        n -= (size_t)r;
    }
    return true;
}

static uint32_t
be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void
put_be16(unsigned char *p, size_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void
put_be32(unsigned char *p, size_t v)
{
    put_be16(p, v >> 16);
    put_be16(p + 2, v & 0xffff);
}

/* One PDU into buf: its type, or -1 (closed, timeout, too long). */
static int
get_pdu(int fd, unsigned char *buf, size_t cap, size_t *len)
{
    unsigned char h[6];
    if (!get_all(fd, h, 6))
        return -1;
    *len = be32(h + 2);
    if (*len > cap || !get_all(fd, buf, *len))
        return -1;
    return h[0];
}

/* An item or sub-item: type, reserved, 16-bit length, value. */
static size_t
item(unsigned char *p, int type, const void *v, size_t n)
{
    p[0] = (unsigned char)type;
    p[1] = 0;
    put_be16(p + 2, n);
    memcpy(p + 4, v, n);
    return 4 + n;
}

/* Connect and negotiate one presentation context (id 1); the socket, or -1. */
static int
ul_open_at(const char *host, unsigned port, const char *called, const char *sop_class,
           const char *ts)
{
    unsigned char rq[1024], sub[512], *p = rq + 6;
    memset(rq, 0, sizeof rq);
    p[1] = 1; /* protocol version */
    memset(p + 4, ' ', 32);
    memcpy(p + 4, called, strlen(called));
    memcpy(p + 20, "RAWSCU", 6);
    p += 68;
    p += item(p, 0x10, "1.2.840.10008.3.1.1.1", 21);
    size_t n = 4;
    memset(sub, 0, 4);
    sub[0] = 1; /* presentation context id */
    n += item(sub + n, 0x30, sop_class, strlen(sop_class));
    n += item(sub + n, 0x40, ts, strlen(ts));
    p += item(p, 0x20, sub, n);
    unsigned char max[4];
    put_be32(max, 16384);
    n = item(sub, 0x51, max, 4);
    n += item(sub + n, 0x52, "1.2.3.4", 7);
    p += item(p, 0x50, sub, n);
    rq[0] = 0x01;
    put_be32(rq + 2, (size_t)(p - rq) - 6);

    struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    struct sockaddr_in sa4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    bool v6 = strchr(host, ':') != NULL;
    if (v6 ? inet_pton(AF_INET6, host, &sa6.sin6_addr) != 1
           : inet_pton(AF_INET, host, &sa4.sin_addr) != 1)
        return -1;
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr *sa = v6 ? (struct sockaddr *)&sa6 : (struct sockaddr *)&sa4;
    socklen_t sa_len = v6 ? sizeof sa6 : sizeof sa4;
    unsigned char ac[4096];
    size_t len;
    if (fd < 0 || connect(fd, sa, sa_len) != 0 || !put_all(fd, rq, (size_t)(p - rq)) ||
        get_pdu(fd, ac, sizeof ac, &len) != 0x02) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int
ul_open(unsigned port, const char *called, const char *sop_class, const char *ts)
{
    return ul_open_at("127.0.0.1", port, called, sop_class, ts);
}

/* Send one message part (command or data set) as P-DATA-TF PDUs of 16000-byte PDVs. */
static bool
ul_pdata(int fd, bool command, const unsigned char *d, size_t n)
{
    static unsigned char pdu[16000 + 12];
    size_t at = 0;
    do {
        size_t k = n - at < 16000 ? n - at : 16000;
        pdu[0] = 0x04;
        pdu[1] = 0;
        put_be32(pdu + 2, k + 6);
        put_be32(pdu + 6, k + 2);
        pdu[10] = 1;
        pdu[11] = (unsigned char)((command ? 1 : 0) | (at + k == n ? 2 : 0));
        memcpy(pdu + 12, d + at, k);
        if (!put_all(fd, pdu, k + 12))
            return false;
        at += k;
    } while (at < n);
    return true;
}

/* A command element of group 0000, implicit VR little endian; UIDs padded with NUL. */
static size_t
cmd_elem(unsigned char *p, unsigned el, const void *v, size_t n)
{
    size_t padded = n + (n & 1);
    p[0] = p[1] = 0;
    p[2] = (unsigned char)el;
    p[3] = (unsigned char)(el >> 8);
    for (int i = 0; i < 4; i++)
        p[4 + i] = (unsigned char)(padded >> (8 * i));
    memcpy(p + 8, v, n);
    if (padded > n)
        p[8 + n] = 0;
    return 8 + padded;
}

/* One C-STORE on context 1: the response status, -2 if the SCP aborted, -1 on any other
 * failure. */
static int
ul_store(int fd, const char *sop_class, const char *inst, const unsigned char *ds, size_t n)
{
    unsigned char cmd[512], *p = cmd + 12;
    const unsigned char one[2] = {1, 0}, zero[2] = {0, 0}, id[2] = {7, 0};
    p += cmd_elem(p, 0x0002, sop_class, strlen(sop_class));
    p += cmd_elem(p, 0x0100, one, 2);
    p += cmd_elem(p, 0x0110, id, 2);
    p += cmd_elem(p, 0x0700, zero, 2);
    p += cmd_elem(p, 0x0800, zero, 2);
    p += cmd_elem(p, 0x1000, inst, strlen(inst));
    uint32_t gl = (uint32_t)(p - cmd - 12);
    unsigned char glv[4] = {(unsigned char)gl, (unsigned char)(gl >> 8), (unsigned char)(gl >> 16),
                            (unsigned char)(gl >> 24)};
    cmd_elem(cmd, 0x0000, glv, 4);
    static unsigned char pdu[70000], rsp[4096];
    size_t len, got = 0;
    if (!ul_pdata(fd, true, cmd, (size_t)(p - cmd)) || !ul_pdata(fd, false, ds, n))
        return get_pdu(fd, pdu, sizeof pdu, &len) == 0x07 ? -2 : -1;
    for (;;) {
        int type = get_pdu(fd, pdu, sizeof pdu, &len);
        if (type == 0x07)
            return -2;
        if (type != 0x04)
            return -1;
        bool last = false;
        for (size_t at = 0; at + 6 <= len;) {
            size_t k = be32(pdu + at);
            if (k < 2 || at + 4 + k > len || got + k - 2 > sizeof rsp)
                return -1;
            memcpy(rsp + got, pdu + at + 6, k - 2);
            got += k - 2;
            last = (pdu[at + 5] & 3) == 3;
            at += 4 + k;
        }
        if (last)
            break;
    }
    for (size_t at = 0; at + 8 <= got;) {
        unsigned g = rsp[at] | rsp[at + 1] << 8, e = rsp[at + 2] | rsp[at + 3] << 8;
        size_t k =
            rsp[at + 4] | rsp[at + 5] << 8 | (size_t)rsp[at + 6] << 16 | (size_t)rsp[at + 7] << 24;
        if (g == 0 && e == 0x0900 && k == 2 && at + 10 <= got)
            return rsp[at + 8] | rsp[at + 9] << 8;
        at += 8 + k;
    }
    return -1;
}

/* A-RELEASE; whether the SCP answered with A-RELEASE-RP. */
static bool
ul_release(int fd)
{
    const unsigned char rq[10] = {0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0};
    unsigned char rp[64];
    size_t len;
    bool ok = put_all(fd, rq, sizeof rq) && get_pdu(fd, rp, sizeof rp, &len) == 0x06;
    close(fd);
    return ok;
}

/* The data set of d (explicit VR little endian) with (0008,0018) emptied, in *out. */
static bool
blank_uid(const struct dcm *d, unsigned char **out, size_t *n)
{
    size_t at = d->ds;
    while (at + 8 <= d->n) {
        const unsigned char *b = d->b + at;
        unsigned g = b[0] | b[1] << 8, e = b[2] | b[3] << 8;
        bool lv = long_vr(b + 4);
        size_t hdr = lv ? 12 : 8;
        size_t vl = lv ? (size_t)(b[8] | b[9] << 8 | b[10] << 16 | (size_t)b[11] << 24)
                       : (size_t)(b[6] | b[7] << 8);
        if (vl == 0xffffffff || at + hdr + vl > d->n || g > 0x0008)
            return false;
        if (g == 0x0008 && e == 0x0018) {
            *n = d->n - d->ds - vl;
            *out = malloc(*n);
            if (*out == NULL)
                return false;
            size_t head = at - d->ds;
            memcpy(*out, d->b + d->ds, head + hdr);
            (*out)[head + 6] = (*out)[head + 7] = 0;
            memcpy(*out + head + hdr, d->b + at + hdr + vl, d->n - at - hdr - vl);
            return true;
        }
        at += hdr + vl;
    }
    return false;
}

static struct mms_scp_opts
default_opts(void)
{
    struct mms_scp_opts o = {
        .ae_title = "MMSEGD",
        .bind = "127.0.0.1",
        .port = 0,
        .allowed_calling_aes = "any",
        .allowed_hosts = "any",
        .max_associations = 4,
        .max_pdu = 65536,
        .timeout_s = 5,
        .assoc_timeout_s = 5,
        .tmp_dir = tmp_dir,
        .space_dir = tmp_dir,
        .min_free_bytes = 0,
        .on_store = on_store,
    };
    return o;
}

static struct mms_scp *
start(const struct mms_scp_opts *o)
{
    struct mms_scp *s = NULL;
    char why[512] = "";
    int rc = mms_scp_start(o, &s, why, sizeof why);
    if (rc < 0) {
        diag("mms_scp_start: %s (%s)", why, mms_strerror(rc));
        return NULL;
    }
    return s;
}

static int
count_fds(void)
{
    return count_dir("/proc/self/fd");
}

static double
now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void
test_cidr(void)
{
    is_int(mms_cidr_match("", "10.1.2.3"), 0, "cidr: an empty list contains no address");
    is_int(mms_cidr_match(" any ", "10.1.2.3"), 1, "cidr: `any` contains every address");
    is_int(mms_cidr_match("any", "::1"), 1, "cidr: `any` contains IPv6 addresses too");
    is_int(mms_cidr_match("10.0.0.0/8", "10.1.2.3"), 1, "cidr: v4 inside /8");
    is_int(mms_cidr_match("10.0.0.0/8", "11.1.2.3"), 0, "cidr: v4 outside /8");
    is_int(mms_cidr_match(" 192.168.1.7 ,10.0.0.0/8", "192.168.1.7"), 1,
           "cidr: plain address is /32, spaces around commas");
    is_int(mms_cidr_match("192.168.1.7", "192.168.1.8"), 0, "cidr: /32 excludes its neighbour");
    is_int(mms_cidr_match("0.0.0.0/0", "1.2.3.4"), 1, "cidr: /0 contains all of v4");
    is_int(mms_cidr_match("172.16.0.0/12", "172.31.255.255"), 1, "cidr: /12 upper edge");
    is_int(mms_cidr_match("172.16.0.0/12", "172.32.0.0"), 0, "cidr: /12 just past");
    is_int(mms_cidr_match("2001:db8::/32", "2001:db8:1::5"), 1, "cidr: v6 inside /32");
    is_int(mms_cidr_match("2001:db8::/32", "2001:db9::1"), 0, "cidr: v6 outside /32");
    is_int(mms_cidr_match("::1", "::1"), 1, "cidr: v6 plain address is /128");
    is_int(mms_cidr_match("::1", "::2"), 0, "cidr: /128 excludes ::2");
    is_int(mms_cidr_match("127.0.0.0/8", "::ffff:127.0.0.1"), 1,
           "cidr: IPv4-mapped peer matches an IPv4 block");
    is_int(mms_cidr_match("10.0.0.0/8", "::ffff:127.0.0.1"), 0,
           "cidr: IPv4-mapped peer outside an IPv4 block");
    is_int(mms_cidr_match("10.0.0.0/8", "::1"), 0, "cidr: v6 loopback is not in a v4 block");
    is_int(mms_cidr_match("10.0.0.0/33", "10.0.0.1"), MMS_EINVAL, "cidr: v4 prefix over 32");
    is_int(mms_cidr_match("::/129", "::1"), MMS_EINVAL, "cidr: v6 prefix over 128");
    is_int(mms_cidr_match("10.0.0.0/", "10.0.0.1"), MMS_EINVAL, "cidr: empty prefix");
    is_int(mms_cidr_match("10.0.0.0/+8", "10.0.0.1"), MMS_EINVAL, "cidr: signed prefix");
    is_int(mms_cidr_match("10.0.0/8", "10.0.0.1"), MMS_EINVAL, "cidr: short v4 address");
    is_int(mms_cidr_match("example.org", "10.0.0.1"), MMS_EINVAL, "cidr: host names refused");
    is_int(mms_cidr_match("10.0.0.0/8,,::1", "10.0.0.1"), MMS_EINVAL, "cidr: empty item");
    is_int(mms_cidr_match("10.0.0.0/8", "10.0.0.x"), MMS_EINVAL, "cidr: bad address");
    is_int(mms_cidr_match(NULL, "10.0.0.1"), MMS_EINVAL, "cidr: NULL list");
}

static void
test_options(void)
{
    struct mms_scp *s = NULL;
    char why[256];
    struct mms_scp_opts o = default_opts();
    o.ae_title = "THIS-AE-TITLE-IS-TOO-LONG";
    is_int(mms_scp_start(&o, &s, why, sizeof why), MMS_EINVAL, "start: AE title too long");
    o = default_opts();
    o.allowed_hosts = "10.0.0.0/40";
    is_int(mms_scp_start(&o, &s, why, sizeof why), MMS_EINVAL, "start: bad allowed_hosts");
    diag("%s", why);
    o = default_opts();
    o.max_pdu = 1024;
    is_int(mms_scp_start(&o, &s, why, sizeof why), MMS_EINVAL, "start: max_pdu too small");
    o = default_opts();
    o.bind = "localhost";
    is_int(mms_scp_start(&o, &s, why, sizeof why), MMS_EINVAL, "start: bind is not numeric");
    ok(s == NULL, "start: *out untouched on failure");
}

/* The transfer syntax in the meta of the file on_store kept last. */
static void
last_kept_ts(char *ts, size_t len)
{
    struct dcm k;
    char p[256];
    snprintf(p, sizeof p, "%s/%d.dcm", kept_dir, rec_seq() - 1);
    snprintf(ts, len, "%s", dcm_load(p, &k) ? k.ts : "");
    dcm_free(&k);
}

/* The raw client: data sets byte for byte, and the refusals the DCMTK tools cannot provoke. */
static void
test_raw(unsigned port)
{
    const struct {
        const char *rel, *ts, *what;
    } exact[] = {
        {I10, "1.2.840.10008.1.2.1", "explicit little endian"},
        {J2K, "1.2.840.10008.1.2.4.90", "JPEG 2000 lossless"},
        {JLS, "1.2.840.10008.1.2.4.80", "JPEG-LS lossless"},
        {RLE, "1.2.840.10008.1.2.5", "RLE lossless"},
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        char src[1200], ts[65] = "";
        struct dcm d;
        snprintf(src, sizeof src, "%s/%s", td, exact[i].rel);
        bool loaded = dcm_load(src, &d);
        rec_reset(0, 0);
        int fd = ul_open(port, "MMSEGD", CT_CLASS, exact[i].ts);
        int st = fd >= 0 && loaded ? ul_store(fd, CT_CLASS, d.inst, d.b + d.ds, d.n - d.ds) : -1;
        bool released = fd >= 0 && ul_release(fd);
        is_int(st, 0, "raw %s: stored", exact[i].what);
        ok(released && kept_has(src, ts, sizeof ts) && strcmp(ts, exact[i].ts) == 0,
           "raw %s: kept byte for byte, meta transfer syntax %s", exact[i].what, ts);
        dcm_free(&d);
    }

    char src[1200];
    struct dcm d;
    unsigned char *blank = NULL;
    size_t blank_n = 0;
    snprintf(src, sizeof src, "%s/" I10, td);
    bool have = dcm_load(src, &d) && blank_uid(&d, &blank, &blank_n);
    ok(have, "raw: a copy of I10 with (0008,0018) empty");
    rec_reset(0, 0);
    int fd = ul_open(port, "MMSEGD", CT_CLASS, "1.2.840.10008.1.2.1");
    int st = have && fd >= 0 ? ul_store(fd, CT_CLASS, d.inst, blank, blank_n) : -1;
    is_int(st, 0xA900, "raw: data set without SOP Instance UID refused with 0xA900");
    st = have && fd >= 0 ? ul_store(fd, CT_CLASS, "1.2.3.4", d.b + d.ds, d.n - d.ds) : -1;
    is_int(st, 0xA900, "raw: SOP Instance UID differing from the request's refused with 0xA900");
    /* DCMTK's command parser refuses an empty Affected SOP Instance UID ("DIMSE Badly formed
     * message") before the SCP sees the request, so the association is aborted */
    st = have && fd >= 0 ? ul_store(fd, CT_CLASS, "", d.b + d.ds, d.n - d.ds) : -1;
    is_int(st, -2, "raw: request without Affected SOP Instance UID: association aborted");
    if (fd >= 0)
        close(fd);
    is_int(rec_calls(), 0, "raw: on_store was not called for any of them");
    is_int(count_dir(tmp_dir), 0, "raw: no file left in tmp_dir");
    free(blank);
    dcm_free(&d);
}

int
main(void)
{
    if (!find_testdata(td, sizeof td))
        skip_all("no test data (MMS_TESTDATA, ../shared/testdata)");
    const char *progs[] = {"echoscu", "storescu"};
    char tool_path[1024];
    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++)
        if (!find_tool(progs[i], "", tool_path, sizeof tool_path)) {
            char why[128];
            snprintf(why, sizeof why, "%s is not on PATH (Debian package dcmtk)", progs[i]);
            skip_all(why);
        }
    plan(116, 300);
    mms_log_set_level(getenv("MMS_TEST_DEBUG") != NULL ? MMS_LOG_DEBUG : MMS_LOG_NOTICE);

    snprintf(dir, sizeof dir, "/tmp/mms-test-scp-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    snprintf(tmp_dir, sizeof tmp_dir, "%s/tmp", dir);
    snprintf(kept_dir, sizeof kept_dir, "%s/kept", dir);
    snprintf(tool_log, sizeof tool_log, "%s/tool.log", dir);
    mkdir(tmp_dir, 0700);
    mkdir(kept_dir, 0700);

    test_cidr();
    test_options();
    int fds_before = count_fds();

    /* the first SCP: CT classes, any calling AE, any host */
    struct mms_scp_opts o = default_opts();
    struct mms_scp *s = start(&o);
    if (!ok(s != NULL && mms_scp_port(s) > 0, "start on 127.0.0.1 port 0")) {
        printf("Bail out! the SCP did not start\n");
        return 1;
    }
    unsigned port = mms_scp_port(s);

    /* the port is taken: a second SCP must fail in mms_scp_start */
    struct mms_scp_opts o2 = default_opts();
    o2.port = port;
    struct mms_scp *s2 = NULL;
    char why[512] = "";
    is_int(mms_scp_start(&o2, &s2, why, sizeof why), MMS_EDIMSE,
           "start: the port in use is reported at once");
    ok(strstr(why, "in use") != NULL, "start: the reason says so (%s)", why);

    is_int(run("echoscu -aec MMSEGD 127.0.0.1 %u", port), 0, "C-ECHO succeeds");
    {
        /* connections being served: an open association counts until it is closed */
        int fd = ul_open(port, "MMSEGD", CT_CLASS, "1.2.840.10008.1.2.1");
        unsigned during = mms_scp_connections(s);
        if (fd >= 0)
            close(fd);
        unsigned after = 1;
        for (int i = 0; i < 500 && (after = mms_scp_connections(s)) > 0; i++)
            usleep(10000);
        ok(fd >= 0 && during == 1 && after == 0,
           "mms_scp_connections: 1 while an association is open, 0 after it closed (%u, %u)",
           during, after);
    }

    /* a CT series of 28 files, uncompressed explicit little endian */
    rec_reset(0, 0);
    char files[8192] = "";
    for (int i = 10; i <= 280; i += 10) {
        char one[1200];
        snprintf(one, sizeof one, " '%s/" S2010 "/I%d'", td, i);
        strcat(files, one);
    }
    int rc = run("storescu -aet SENDER -aec MMSEGD 127.0.0.1 %u %s", port, files);
    if (!ok(rc == 0, "storescu: 28 files sent (exit %d)", rc))
        show_log(tool_log);
    is_int(rec_calls(), 28, "on_store called once per instance");
    pthread_mutex_lock(&rec.m);
    int bad_name = rec.bad_name;
    pthread_mutex_unlock(&rec.m);
    is_int(bad_name, 0, "each file is tmp_dir/rx-<16 hex>.dcm");
    is_str(rec_get("calling"), "SENDER", "on_store sees the calling AE title");
    is_str(rec_get("peer"), "127.0.0.1", "on_store sees the peer address");
    is_str(rec_get("sop_class"), CT_CLASS, "on_store sees the SOP class");
    int same = 0;
    for (int i = 10; i <= 280; i += 10) {
        char src[1200], ts[65];
        snprintf(src, sizeof src, "%s/" S2010 "/I%d", td, i);
        same += kept_has(src, ts, sizeof ts);
    }
    is_int(same, 28, "every data set arrived bit for bit");
    is_int(count_dir(tmp_dir), 0, "nothing is left in tmp_dir");

    /* compressed files keep their transfer syntax (storescu proposes it when asked to; it
     * writes the data set anew, so the bytes are compared in test_raw) */
    const struct {
        const char *rel, *opt, *ts, *what;
    } comp[] = {
        {J2K, "-xv", "1.2.840.10008.1.2.4.90", "JPEG 2000 lossless"},
        {JLS, "-xt", "1.2.840.10008.1.2.4.80", "JPEG-LS lossless"},
        {RLE, "-xr", "1.2.840.10008.1.2.5", "RLE lossless"},
    };
    for (size_t i = 0; i < sizeof comp / sizeof comp[0]; i++) {
        char ts[65] = "";
        rec_reset(0, 0);
        rc =
            run("storescu %s -aec MMSEGD 127.0.0.1 %u '%s/%s'", comp[i].opt, port, td, comp[i].rel);
        if (!ok(rc == 0 && rec_calls() == 1, "storescu: %s sent (exit %d)", comp[i].what, rc))
            show_log(tool_log);
        last_kept_ts(ts, sizeof ts);
        is_str(ts, comp[i].ts, "%s: kept in its transfer syntax", comp[i].what);
    }

    test_raw(port);

    /* a port probe (connect, close) and a peer that does not speak DICOM */
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in lo = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok(probe >= 0 && connect(probe, (struct sockaddr *)&lo, sizeof lo) == 0 && close(probe) == 0,
       "a port probe connects and closes");
    int http = socket(AF_INET, SOCK_STREAM, 0);
    const char get[] = "GET / HTTP/1.0\r\n\r\n";
    char junk[256];
    bool sent = http >= 0 && connect(http, (struct sockaddr *)&lo, sizeof lo) == 0 &&
                write(http, get, sizeof get - 1) == (ssize_t)(sizeof get - 1);
    struct pollfd q = {http, POLLIN, 0};
    /* closed with unread input, so the read may see a reset */
    ok(sent && poll(&q, 1, 3000) == 1 &&
           (read(http, junk, sizeof junk) >= 0 || errno == ECONNRESET),
       "an HTTP request is answered or closed at once");
    if (http >= 0)
        close(http);
    is_int(run("echoscu -aec MMSEGD 127.0.0.1 %u", port), 0, "C-ECHO after the probe and HTTP");

    /* only the CT classes without accept_all */
    char sc[1200];
    snprintf(sc, sizeof sc, "%s/" SC_DFL, td);
    rec_reset(0, 0);
    rc = run("storescu -aec MMSEGD 127.0.0.1 %u '%s'", port, sc);
    ok(rc != 0 && rec_calls() == 0, "Secondary Capture refused without accept_all");

    /* called AE title */
    rec_reset(0, 0);
    rc = run("storescu -aec OTHER 127.0.0.1 %u '%s/%s'", port, td, I10);
    ok(rc != 0 && file_has(tool_log, "Called AE Title Not Recognized"),
       "wrong called AE title: association rejected");
    is_int(rec_calls(), 0, "wrong called AE title: nothing stored");

    /* on_store's answer is sent (storescu exits 0 on a failure status, it only reports it) */
    rec_reset(0xA700, 0);
    run("storescu -v -aec MMSEGD 127.0.0.1 %u '%s/%s'", port, td, I10);
    ok(file_has(tool_log, "Received Store Response (Refused: OutOfResources)"),
       "on_store answers 0xA700: storescu receives it");
    is_int(rec_calls(), 1, "on_store answering 0xA700 was called once");

    double t0 = now_s();
    mms_scp_stop(s);
    double dt = now_s() - t0;
    ok(dt < 1.0, "stop while idle returns at once (%.3f s)", dt);
    ok(run("echoscu -to 2 -aec MMSEGD 127.0.0.1 %u", port) != 0,
       "after stop nothing listens on the port");

    /* free space under min_free_bytes */
    o = default_opts();
    o.min_free_bytes = UINT64_MAX;
    s = start(&o);
    port = s != NULL ? mms_scp_port(s) : 0;
    int kept_before = count_dir(kept_dir);
    rec_reset(0, 0);
    run("storescu -v -aec MMSEGD 127.0.0.1 %u '%s/%s'", port, td, I10);
    ok(file_has(tool_log, "Received Store Response (Refused: OutOfResources)"),
       "low free space: storescu receives 0xA700");
    is_int(rec_calls(), 0, "low free space: on_store not called");
    is_int(count_dir(tmp_dir), 0, "low free space: nothing in tmp_dir");
    is_int(count_dir(kept_dir), kept_before, "low free space: nothing kept");
    is_int(run("echoscu -aec MMSEGD 127.0.0.1 %u", port), 0, "low free space: C-ECHO still works");
    mms_scp_stop(s);

    /* calling AE titles */
    o = default_opts();
    o.allowed_calling_aes = "OTHER, GOOD";
    s = start(&o);
    port = s != NULL ? mms_scp_port(s) : 0;
    rc = run("echoscu -aet BAD -aec MMSEGD 127.0.0.1 %u", port);
    ok(rc != 0 && file_has(tool_log, "Calling AE Title Not Recognized"),
       "calling AE title not allowed: association rejected");
    is_int(run("echoscu -aet GOOD -aec MMSEGD 127.0.0.1 %u", port), 0,
           "calling AE title in the list: accepted");
    mms_scp_stop(s);

    /* deny by default: empty lists refuse everyone, and each refusal is counted */
    o = default_opts();
    o.allowed_hosts = "";
    s = start(&o);
    port = s != NULL ? mms_scp_port(s) : 0;
    rc = run("echoscu -aec MMSEGD 127.0.0.1 %u", port);
    ok(rc != 0 && file_has(tool_log, "Rejected Permanent"), "empty allowed_hosts: refused");
    is_int((int)mms_scp_refused(s, MMS_SCP_REFUSED_HOST), 1,
           "empty allowed_hosts: counted as host");
    mms_scp_stop(s);
    o = default_opts();
    o.allowed_calling_aes = NULL;
    s = start(&o);
    port = s != NULL ? mms_scp_port(s) : 0;
    rc = run("echoscu -aet GOOD -aec MMSEGD 127.0.0.1 %u", port);
    ok(rc != 0 && file_has(tool_log, "Calling AE Title Not Recognized"),
       "no allowed_calling_aes: refused");
    is_int((int)mms_scp_refused(s, MMS_SCP_REFUSED_CALLING_AE), 1,
           "no allowed_calling_aes: counted as calling_ae");
    rc = run("echoscu -aet GOOD -aec OTHER 127.0.0.1 %u", port);
    is_int((int)mms_scp_refused(s, MMS_SCP_REFUSED_CALLED_AE), 1,
           "called AE: counted as called_ae");
    is_str(mms_scp_refusal_name(MMS_SCP_REFUSED_PER_HOST_LIMIT), "per_host_limit",
           "refusal names are metrics labels");
    mms_scp_stop(s);
    o = default_opts();
    o.allowed_calling_aes = "any, GOOD";
    is_int(mms_scp_start(&o, &s, why, sizeof why), MMS_EINVAL,
           "start: `any` with other AE titles is refused");
    o = default_opts();
    o.assoc_timeout_s = 0;
    is_int(mms_scp_start(&o, &s, why, sizeof why), MMS_EINVAL, "start: assoc_timeout_s 0 refused");

    /* max_associations_per_host 1: an open association of 127.0.0.1 keeps a second one out
     * (transient, local limit), counted as per_host_limit; free again after its release */
    o = default_opts();
    o.max_associations_per_host = 1;
    s = start(&o);
    port = s != NULL ? mms_scp_port(s) : 0;
    int held = ul_open_at("127.0.0.1", port, "MMSEGD", CT_CLASS, "1.2.840.10008.1.2.1");
    rc = run("echoscu -aec MMSEGD 127.0.0.1 %u", port);
    ok(held >= 0 && rc != 0 && file_has(tool_log, "Rejected Transient") &&
           mms_scp_refused(s, MMS_SCP_REFUSED_PER_HOST_LIMIT) == 1,
       "max_associations_per_host 1: a second association of the host is rejected (transient)");
    ok(held >= 0 && ul_release(held) && run("echoscu -aec MMSEGD 127.0.0.1 %u", port) == 0,
       "max_associations_per_host 1: after the release the host is served again");
    mms_scp_stop(s);

    /* allowed hosts */
    o = default_opts();
    o.allowed_hosts = "10.0.0.0/8";
    s = start(&o);
    port = s != NULL ? mms_scp_port(s) : 0;
    rc = run("echoscu -aec MMSEGD 127.0.0.1 %u", port);
    ok(rc != 0 && file_has(tool_log, "Rejected Permanent") && file_has(tool_log, "No Reason"),
       "loopback outside allowed_hosts: rejected permanently, no reason given");
    mms_scp_stop(s);
    o.allowed_hosts = "10.0.0.0/8, 127.0.0.0/8";
    s = start(&o);
    port = s != NULL ? mms_scp_port(s) : 0;
    is_int(run("echoscu -aec MMSEGD 127.0.0.1 %u", port), 0, "loopback inside allowed_hosts");
    mms_scp_stop(s);

    /* bind "::" takes IPv4 too; the peer is reported as plain IPv4 */
    o = default_opts();
    o.bind = "::";
    s = start(&o);
    port = s != NULL ? mms_scp_port(s) : 0;
    rec_reset(0, 0);
    is_int(run("storescu -aec MMSEGD 127.0.0.1 %u '%s/%s'", port, td, I10), 0,
           "bind ::, IPv4 peer: stored");
    is_str(rec_get("peer"), "127.0.0.1", "bind ::, IPv4 peer: reported as 127.0.0.1");
    /* the DCMTK 3.6.7 tools connect over IPv4 only: the IPv6 peer is the raw client */
    struct dcm d;
    char src[1200];
    snprintf(src, sizeof src, "%s/" I10, td);
    bool loaded = dcm_load(src, &d);
    rec_reset(0, 0);
    int fd = ul_open_at("::1", port, "MMSEGD", CT_CLASS, "1.2.840.10008.1.2.1");
    int st = fd >= 0 && loaded ? ul_store(fd, CT_CLASS, d.inst, d.b + d.ds, d.n - d.ds) : -1;
    ok(st == 0 && ul_release(fd), "bind ::, IPv6 peer: stored");
    is_str(rec_get("peer"), "::1", "bind ::, IPv6 peer: reported as ::1");
    mms_scp_stop(s);
    o.allowed_hosts = "127.0.0.1, ::1";
    s = start(&o);
    port = s != NULL ? mms_scp_port(s) : 0;
    fd = ul_open_at("::1", port, "MMSEGD", CT_CLASS, "1.2.840.10008.1.2.1");
    ok(fd >= 0 && ul_release(fd), "allowed_hosts ::1: the IPv6 peer is accepted");
    mms_scp_stop(s);
    o.allowed_hosts = "127.0.0.1";
    s = start(&o);
    port = s != NULL ? mms_scp_port(s) : 0;
    fd = ul_open_at("::1", port, "MMSEGD", CT_CLASS, "1.2.840.10008.1.2.1");
    ok(fd < 0, "allowed_hosts 127.0.0.1: the IPv6 peer ::1 is rejected");
    ok(run("echoscu -aec MMSEGD 127.0.0.1 %u", port) == 0,
       "allowed_hosts 127.0.0.1: the IPv4 peer through the dual-stack socket is accepted");
    mms_scp_stop(s);
    dcm_free(&d);

    /* accept_all: other storage classes, deflate kept as deflate */
    o = default_opts();
    o.accept_all = true;
    s = start(&o);
    port = s != NULL ? mms_scp_port(s) : 0;
    rec_reset(0, 0);
    rc = run("storescu -xd -aec MMSEGD 127.0.0.1 %u '%s'", port, sc);
    if (!ok(rc == 0 && rec_calls() == 1, "accept_all: Secondary Capture sent (exit %d)", rc))
        show_log(tool_log);
    is_str(rec_get("sop_class"), "1.2.840.10008.5.1.4.1.1.7",
           "accept_all: on_store sees the SC class");
    {
        char ts[65] = "";
        last_kept_ts(ts, sizeof ts);
        is_str(ts, "1.2.840.10008.1.2.1.99", "accept_all: kept as deflate");
    }
    is_int(run("echoscu -aec MMSEGD 127.0.0.1 %u", port), 0, "accept_all: C-ECHO");
    mms_scp_stop(s);

    /* max_associations = 1: a slow sender holds the only slot, a second one is rejected */
    o = default_opts();
    o.max_associations = 1;
    s = start(&o);
    port = s != NULL ? mms_scp_port(s) : 0;
    rec_reset(0, 100);
    char cmd[9000], log_a[160], log_b[160];
    snprintf(log_a, sizeof log_a, "%s/a.log", dir);
    snprintf(log_b, sizeof log_b, "%s/b.log", dir);
    snprintf(cmd, sizeof cmd, "storescu -aet SLOW -aec MMSEGD 127.0.0.1 %u %s", port, files);
    pid_t a = spawn(log_a, cmd);
    for (int i = 0; i < 100 && rec_calls() == 0; i++)
        usleep(20000);
    snprintf(cmd, sizeof cmd, "storescu -aet SECOND -aec MMSEGD 127.0.0.1 %u '%s/%s'", port, td,
             I10);
    pid_t b = spawn(log_b, cmd);
    int rc_b = reap(b);
    int rc_a = reap(a);
    if (!ok(rc_b != 0 && file_has(log_b, "Local Limit Exceeded") &&
                file_has(log_b, "Rejected Transient"),
            "max_associations 1: the second sender is rejected (transient, local limit exceeded)"))
        show_log(log_b);
    is_int(rc_a, 0, "max_associations 1: the first sender completes");
    is_int(rec_calls(), 28, "max_associations 1: all 28 instances of the first stored");
    is_int(run("echoscu -aec MMSEGD 127.0.0.1 %u", port), 0,
           "max_associations 1: the slot is free again afterwards");

    /* stop while a sender is busy: the association is aborted after the instance in progress */
    rec_reset(0, 200);
    snprintf(cmd, sizeof cmd, "storescu -aet BUSY -aec MMSEGD 127.0.0.1 %u %s", port, files);
    a = spawn(log_a, cmd);
    for (int i = 0; i < 100 && rec_calls() < 2; i++)
        usleep(20000);
    t0 = now_s();
    mms_scp_stop(s);
    dt = now_s() - t0;
    rc_a = reap(a);
    ok(dt < 2.0, "stop while a sender is busy returns within the instance in progress (%.3f s)",
       dt);
    ok(rc_a != 0, "stop while busy: the sender sees the association end");
    is_int(count_dir(tmp_dir), 0, "stop while busy: nothing left in tmp_dir");
    diag("stored before the stop: %d of 28", rec_calls());

    /* stop with an accepted association idle, and with a connection that never speaks */
    o = default_opts();
    o.timeout_s = 30;
    s = start(&o);
    port = s != NULL ? mms_scp_port(s) : 0;
    int idle = ul_open(port, "MMSEGD", CT_CLASS, "1.2.840.10008.1.2.1");
    int silent = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool connected = silent >= 0 && connect(silent, (struct sockaddr *)&sa, sizeof sa) == 0;
    usleep(200000);
    t0 = now_s();
    mms_scp_stop(s);
    dt = now_s() - t0;
    ok(idle >= 0 && connected && dt < 1.5,
       "stop with an idle association and a silent connection returns at once (%.3f s)", dt);
    unsigned char pdu[64];
    size_t len;
    is_int(idle >= 0 ? get_pdu(idle, pdu, sizeof pdu, &len) : 0, 0x07,
           "stop: the idle association gets an A-ABORT");
    char byte;
    ok(connected && read(silent, &byte, 1) == 0, "stop: the silent connection was closed");
    if (idle >= 0)
        close(idle);
    if (silent >= 0)
        close(silent);

    mms_scp_stop(NULL);
    ok(true, "mms_scp_stop(NULL) is a no-op");
    is_int(count_fds(), fds_before, "every descriptor of every SCP is closed");

    if (getenv("MMS_TEST_KEEP") != NULL) {
        diag("kept in %s", dir);
        return done_testing();
    }
    empty_dir(tmp_dir);
    empty_dir(kept_dir);
    rmdir(tmp_dir);
    rmdir(kept_dir);
    unlink(tool_log);
    unlink(log_a);
    unlink(log_b);
    rmdir(dir);
    return done_testing();
}
