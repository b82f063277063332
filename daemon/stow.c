/* daemon/stow: DICOMweb STOW-RS with libcurl (stow.h).
 *
 * A request's body is multipart/related; type="application/dicom": for each file a part
 * "--BOUNDARY CRLF Content-Type: application/dicom CRLF CRLF <file> CRLF", then
 * "--BOUNDARY--CRLF". Its length is known beforehand, so it goes with a Content-Length, read
 * from the files as libcurl sends it (never whole in memory). The response (DICOM JSON, a
 * Store Instances Response Module) is kept up to 1 MiB; its Failed SOP Sequence names the
 * instances that were not stored and why. */
#include "daemon/stow.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/fs.h"

#define RESPONSE_MAX (1u << 20)
#define PART_HEAD_MAX 160

/* The body of one request: files[i0, i1) as parts. */
struct body {
    const char *const *files;
    int i0, i1, at; /* at: the part being read */
    int stage;      /* 0 its head, 1 its file, 2 its CRLF; at == i1: the closing line */
    char head[PART_HEAD_MAX];
    size_t head_len, pos; /* pos: read so far of the current piece */
    char closing[PART_HEAD_MAX];
    size_t closing_len;
    int fd;
    int err; /* -errno of a file that failed */
};

static size_t
read_body(char *buf, size_t size, size_t nitems, void *arg)
{
    struct body *b = arg;
    size_t cap = size * nitems, out = 0;
    while (out < cap) {
        if (b->at == b->i1) { /* the closing delimiter */
            size_t n = b->closing_len - b->pos;
            n = n < cap - out ? n : cap - out;
            memcpy(buf + out, b->closing + b->pos, n);
            b->pos += n;
            out += n;
            break;
        }
        if (b->stage == 0) {
            size_t n = b->head_len - b->pos;
            n = n < cap - out ? n : cap - out;
            memcpy(buf + out, b->head + b->pos, n);
            b->pos += n;
            out += n;
            if (b->pos == b->head_len) {
                b->stage = 1;
                b->pos = 0;
                b->fd = open(b->files[b->at], O_RDONLY | O_CLOEXEC);
                if (b->fd < 0) {
                    b->err = -errno;
                    return CURL_READFUNC_ABORT;
                }
            }
        } else if (b->stage == 1) {
            ssize_t r = read(b->fd, buf + out, cap - out);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                b->err = -errno;
                return CURL_READFUNC_ABORT;
            }
            if (r == 0) { /* its end */
                close(b->fd);
                b->fd = -1;
                b->stage = 2;
                b->pos = 0;
            }
            out += (size_t)r;
        } else {
            static const char crlf[] = "\r\n";
            size_t n = 2 - b->pos;
            n = n < cap - out ? n : cap - out;
            memcpy(buf + out, crlf + b->pos, n);
            b->pos += n;
            out += n;
            if (b->pos == 2) {
                b->at++;
                b->stage = 0;
                b->pos = 0;
            }
        }
    }
    return out;
}

struct response {
    char *text;
    size_t len;
    double retry_after;
};

static size_t
on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct response *r = arg;
    size_t n = size * nmemb, keep = n;
    if (r->len + keep > RESPONSE_MAX)
        keep = RESPONSE_MAX - r->len;
    if (keep > 0) {
        char *t = realloc(r->text, r->len + keep + 1);
        if (t == NULL)
            return 0; /* libcurl ends the transfer: CURLE_WRITE_ERROR */
        memcpy(t + r->len, ptr, keep);
        r->len += keep;
        t[r->len] = '\0';
        r->text = t;
    }
    return n;
}

/* Retry-After: delta-seconds, or an HTTP date. */
static size_t
on_header(char *buf, size_t size, size_t nitems, void *arg)
{
    struct response *r = arg;
    size_t n = size * nitems;
    static const char key[] = "retry-after:";
    if (n > sizeof key && strncasecmp(buf, key, sizeof key - 1) == 0) {
        char v[96];
        size_t len = n - (sizeof key - 1) < sizeof v - 1 ? n - (sizeof key - 1) : sizeof v - 1;
        memcpy(v, buf + sizeof key - 1, len);
        v[len] = '\0';
        char *p = v, *end;
        while (*p == ' ' || *p == '\t')
            p++;
        for (end = p + strlen(p); end > p && isspace((unsigned char)end[-1]); end--)
            end[-1] = '\0';
        char *stop;
        long s = strtol(p, &stop, 10);
        if (stop != p && *stop == '\0' && s >= 0) {
            r->retry_after = (double)s;
        } else {
            time_t t = curl_getdate(p, NULL);
            if (t > 0)
                r->retry_after = difftime(t, time(NULL)) > 0 ? difftime(t, time(NULL)) : 0.0;
        }
    }
    return n;
}

/* The first line of the credentials file, without its line end, into out (len bytes).
 * Returns 0 or a negative code with why. */
static int
read_credentials(const char *path, char *out, size_t len, char *why, size_t why_len)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        int rc = mms_err_errno();
        return mms_why(why, why_len, rc, "credentials file %s: %s", path, mms_strerror(rc));
    }
    bool got = fgets(out, (int)len, f) != NULL;
    fclose(f);
    if (got)
        out[strcspn(out, "\r\n")] = '\0';
    if (!got || out[0] == '\0')
        return mms_why(why, why_len, MMS_EINVAL, "credentials file %s is empty", path);
    return 0;
}

/* The text of a response for a reason: printable ASCII, blanks folded, at most 200 bytes. */
static void
plain(const char *text, size_t len, char *out, size_t out_len)
{
    size_t o = 0;
    bool blank = false;
    for (size_t i = 0; i < len && o + 1 < out_len && o < 200; i++) {
        unsigned char c = (unsigned char)text[i];
        if (isspace(c)) {
            blank = o > 0;
            continue;
        }
        if (blank && o + 2 < out_len)
            out[o++] = ' ';
        blank = false;
        out[o++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[o] = '\0';
}

/* The Failed SOP Sequence (0008,1198) of a DICOM JSON response: how many items, and whether
 * every Failure Reason (0008,1197) is 0xA7xx (out of resources: worth retrying); their
 * reasons into why. Returns the count, 0 for none, -1 when the body is not such JSON. */
static int
failed_instances(const char *text, bool *all_resources, char *why, size_t why_len)
{
    *all_resources = true;
    cJSON *root = cJSON_Parse(text);
    if (root == NULL)
        return -1;
    cJSON *top = cJSON_IsArray(root) ? cJSON_GetArrayItem(root, 0) : root;
    cJSON *seq = top != NULL ? cJSON_GetObjectItemCaseSensitive(top, "00081198") : NULL;
    cJSON *items = seq != NULL ? cJSON_GetObjectItemCaseSensitive(seq, "Value") : NULL;
    int n = cJSON_IsArray(items) ? cJSON_GetArraySize(items) : 0;
    size_t used = 0;
    if (why_len > 0)
        why[0] = '\0';
    for (int i = 0; i < n; i++) {
        cJSON *it = cJSON_GetArrayItem(items, i);
        cJSON *uid = cJSON_GetObjectItemCaseSensitive(it, "00081155");
        cJSON *reason = cJSON_GetObjectItemCaseSensitive(it, "00081197");
        cJSON *uv = uid != NULL ? cJSON_GetObjectItemCaseSensitive(uid, "Value") : NULL;
        cJSON *rv = reason != NULL ? cJSON_GetObjectItemCaseSensitive(reason, "Value") : NULL;
        const char *u = cJSON_IsArray(uv) && cJSON_IsString(cJSON_GetArrayItem(uv, 0))
                            ? cJSON_GetArrayItem(uv, 0)->valuestring
                            : "?";
        int code = cJSON_IsArray(rv) && cJSON_IsNumber(cJSON_GetArrayItem(rv, 0))
                       ? cJSON_GetArrayItem(rv, 0)->valueint
                       : -1;
        if (code < 0xA700 || code > 0xA7FF)
            *all_resources = false;
        if (used < why_len)
            used += (size_t)snprintf(why + used, why_len - used, "%s%.64s: failure reason 0x%04X",
                                     i > 0 ? "; " : "", u, code < 0 ? 0 : code);
    }
    cJSON_Delete(root);
    return n;
}

/* One request of files[i0, i1). */
static enum mms_scu_class
request(CURL *c, const struct mms_stow_peer *p, const char *const *files, int i0, int i1,
        const char *userpwd, const char *bearer, struct mms_stow_result *res, char *why,
        size_t why_len)
{
    char boundary[64], name[48];
    if (mms_fs_random_name("mmsegd", name, sizeof name) < 0)
        snprintf(name, sizeof name, "mmsegd%ld", (long)getpid());
    snprintf(boundary, sizeof boundary, "%s-stow", name);
    struct body b = {.files = files, .i0 = i0, .i1 = i1, .at = i0, .fd = -1};
    b.head_len = (size_t)snprintf(b.head, sizeof b.head,
                                  "--%s\r\nContent-Type: application/dicom\r\n\r\n", boundary);
    b.closing_len = (size_t)snprintf(b.closing, sizeof b.closing, "--%s--\r\n", boundary);
    curl_off_t total = (curl_off_t)b.closing_len;
    for (int i = i0; i < i1; i++) {
        struct stat sb;
        if (stat(files[i], &sb) != 0) {
            int rc = mms_err_errno();
            mms_why(why, why_len, rc, "%s: %s", files[i], mms_strerror(rc));
            return MMS_SCU_PERMANENT;
        }
        total += (curl_off_t)b.head_len + (curl_off_t)sb.st_size + 2;
    }
    char ctype[160], auth[1100];
    snprintf(ctype, sizeof ctype,
             "Content-Type: multipart/related; type=\"application/dicom\"; boundary=%s", boundary);
    struct curl_slist *h = curl_slist_append(NULL, ctype);
    struct curl_slist *h2 =
        h != NULL ? curl_slist_append(h, "Accept: application/dicom+json") : NULL;
    struct curl_slist *hs = h2 != NULL ? curl_slist_append(h2, "Expect:") : NULL;
    if (hs != NULL && bearer != NULL) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", bearer);
        hs = curl_slist_append(hs, auth);
    }
    if (hs == NULL) {
        curl_slist_free_all(h);
        mms_why(why, why_len, MMS_ENOMEM, "out of memory");
        return MMS_SCU_TRANSIENT;
    }
    struct response r = {NULL, 0, 0.0};
    char err[CURL_ERROR_SIZE] = "";
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, p->url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, total);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_body);
    curl_easy_setopt(c, CURLOPT_READDATA, &b);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)p->timeout_s);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L); /* a stall of timeout_s ends it */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)p->timeout_s);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, p->verify ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, p->verify ? 2L : 0L);
    if (p->ca_file != NULL && p->ca_file[0] != '\0')
        curl_easy_setopt(c, CURLOPT_CAINFO, p->ca_file);
    if (userpwd != NULL) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERPWD, userpwd);
    }
    CURLcode cc = curl_easy_perform(c);
    if (b.fd >= 0)
        close(b.fd);
    curl_slist_free_all(hs);
    res->requests++;
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    res->http_status = status;
    res->retry_after = r.retry_after;
    enum mms_scu_class cls;
    char text[256] = "";
    if (r.text != NULL)
        plain(r.text, r.len, text, sizeof text);
    if (cc != CURLE_OK) {
        if (b.err < 0) {
            mms_why(why, why_len, b.err, "%s: %s", files[b.at], mms_strerror(b.err));
            cls = MMS_SCU_PERMANENT;
        } else {
            mms_why(why, why_len, MMS_EIO, "%s: %s", p->url, err[0] ? err : curl_easy_strerror(cc));
            cls = MMS_SCU_TRANSIENT; /* refused, unreachable, stalled, TLS: may come right */
        }
    } else if (status == 200 || status == 202) {
        bool resources;
        char failed[600];
        int n = r.text != NULL ? failed_instances(r.text, &resources, failed, sizeof failed) : 0;
        if (n <= 0) {
            cls = MMS_SCU_DELIVERED;
        } else {
            cls = resources ? MMS_SCU_TRANSIENT : MMS_SCU_PERMANENT;
            mms_why(why, why_len, MMS_EIO, "HTTP %ld from %s: %d of %d instances not stored: %s",
                    status, p->url, n, i1 - i0, failed);
        }
    } else {
        bool resources = false;
        char failed[600] = "";
        if (r.text != NULL && failed_instances(r.text, &resources, failed, sizeof failed) <= 0)
            failed[0] = '\0';
        cls =
            status == 408 || status == 429 || status >= 500 ? MMS_SCU_TRANSIENT : MMS_SCU_PERMANENT;
        mms_why(why, why_len, MMS_EIO, "HTTP %ld from %s%s%s", status, p->url,
                failed[0] || text[0] ? ": " : "", failed[0] ? failed : text);
    }
    free(r.text);
    return cls;
}

int
mms_stow_send(const struct mms_stow_peer *p, const char *const *files, int n,
              struct mms_stow_result *res, char *why, size_t why_len)
{
    memset(res, 0, sizeof *res);
    char cred[1024], *userpwd = NULL, *bearer = NULL;
    if (p->auth != MMS_STOW_AUTH_NONE) {
        if (read_credentials(p->credentials_file, cred, sizeof cred, why, why_len) < 0) {
            res->cls = MMS_SCU_TRANSIENT; /* an operator can put it right */
            return 0;
        }
        if (p->auth == MMS_STOW_AUTH_BASIC)
            userpwd = cred;
        else
            bearer = cred;
    }
    CURL *c = curl_easy_init();
    if (c == NULL)
        return mms_why(why, why_len, MMS_ENOMEM, "curl_easy_init failed");
    const uint64_t limit = (uint64_t)(p->max_request_mb > 0 ? p->max_request_mb : 1) << 20;
    res->cls = MMS_SCU_DELIVERED;
    for (int i0 = 0; i0 < n && res->cls == MMS_SCU_DELIVERED;) {
        int i1 = i0;
        uint64_t sum = 0;
        while (i1 < n) { /* as many as fit, one at least */
            struct stat sb;
            uint64_t size = stat(files[i1], &sb) == 0 ? (uint64_t)sb.st_size : 0;
            if (i1 > i0 && sum + size > limit)
                break;
            sum += size;
            i1++;
        }
        res->cls = request(c, p, files, i0, i1, userpwd, bearer, res, why, why_len);
        i0 = i1;
    }
    curl_easy_cleanup(c);
    memset(cred, 0, sizeof cred);
    return 0;
}

int
mms_stow_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : MMS_EIO;
}
