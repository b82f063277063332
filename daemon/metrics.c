/* daemon/metrics: the HTTP endpoint and the histogram (metrics.h). */
#include "daemon/metrics.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/net.h"
#include "common/log.h"

#define MAX_REQUEST 8192
#define MAX_CONNECTIONS 16
#define CONNECTION_TIMEOUT_MS 10000

const double mms_hist_bounds[MMS_HIST_BUCKETS] = {0.1, 0.25, 0.5, 1,   2.5, 5,
                                                  10,  30,   60,  120, 300, 600};

void
mms_metrics_label_value(FILE *out, const char *text)
{
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == '\\' || *p == '"')
            fputc('\\', out);
        if (*p == '\n')
            fputs("\\n", out);
        else
            fputc(*p, out);
    }
}

void
mms_hist_observe(struct mms_hist *h, double v)
{
    h->count += 1;
    h->sum += v;
    for (int i = 0; i < MMS_HIST_BUCKETS; i++)
        if (v <= mms_hist_bounds[i])
            h->bucket[i] += 1;
}

void
mms_hist_print(FILE *out, const char *name, const char *labels, const struct mms_hist *h)
{
    const char *sep = labels[0] != '\0' ? "," : "";
    for (int i = 0; i < MMS_HIST_BUCKETS; i++)
        fprintf(out, "%s_bucket{%s%sle=\"%g\"} %.0f\n", name, labels, sep, mms_hist_bounds[i],
                h->bucket[i]);
    fprintf(out, "%s_bucket{%s%sle=\"+Inf\"} %.0f\n", name, labels, sep, h->count);
    fprintf(out, "%s_sum%s%s%s %.6f\n", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
            h->sum);
    fprintf(out, "%s_count%s%s%s %.0f\n", name, labels[0] ? "{" : "", labels, labels[0] ? "}" : "",
            h->count);
}

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct mms_metrics *m;
    char req[MAX_REQUEST];
    size_t len;
    bool answered;
    int open_handles;
    uv_write_t wr;
    char *reply;
};

struct mms_metrics {
    uv_tcp_t server;
    mms_metrics_fill_fn fill;
    void *ud;
    unsigned port;
    int connections;
    bool stopping;
    struct conn *open[MAX_CONNECTIONS];
};

static void
conn_freed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    struct mms_metrics *m = c->m;
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (m->open[i] == c)
            m->open[i] = NULL;
    m->connections--;
    free(c->reply);
    free(c);
    if (m->stopping && m->connections == 0 && uv_is_closing((uv_handle_t *)&m->server) &&
        m->server.data == NULL)
        free(m);
}

static void
conn_close(struct conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, conn_freed);
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, conn_freed);
}

static void
on_written(uv_write_t *w, int status)
{
    (void)status;
    conn_close(w->data);
}

/* Answer the request and close the connection once it is written. */
static void
answer(struct conn *c, const char *status, const char *type, const char *body, size_t body_len)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     status, type, body_len);
    c->answered = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if ((c->reply = malloc((size_t)n + body_len)) == NULL) {
        conn_close(c);
        return;
    }
    memcpy(c->reply, head, (size_t)n);
    memcpy(c->reply + n, body, body_len);
    uv_buf_t buf = uv_buf_init(c->reply, (unsigned)((size_t)n + body_len));
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &buf, 1, on_written) < 0)
        conn_close(c);
}

static void
handle(struct conn *c)
{
    const char *text = "text/plain; charset=utf-8";
    bool get = strncmp(c->req, "GET ", 4) == 0, head = strncmp(c->req, "HEAD ", 5) == 0;
    const char *target = c->req + (get ? 4 : head ? 5 : 0);
    if (!get) {
        answer(c, "405 Method Not Allowed", text, "only GET\n", 9);
        return;
    }
    if (strncmp(target, "/metrics ", 9) != 0 && strncmp(target, "/metrics?", 9) != 0) {
        static const char msg[] = "mmsegd: the metrics are at /metrics\n";
        answer(c, "404 Not Found", text, msg, sizeof msg - 1);
        return;
    }
    char *body = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&body, &len);
    if (f == NULL) {
        answer(c, "500 Internal Server Error", text, "out of memory\n", 14);
        return;
    }
    c->m->fill(c->m->ud, f);
    bool bad = ferror(f) != 0;
    fclose(f);
    if (bad || body == NULL)
        answer(c, "500 Internal Server Error", text, "out of memory\n", 14);
    else
        answer(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, len);
    free(body);
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = h->data;
    *buf = uv_buf_init(c->req + c->len, (unsigned)(sizeof c->req - 1 - c->len));
}

static void
on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct conn *c = s->data;
    if (c->answered)
        return;
    if (n < 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)n;
    c->req[c->len] = '\0';
    if (strstr(c->req, "\r\n\r\n") != NULL || strstr(c->req, "\n\n") != NULL)
        handle(c);
    else if (c->len >= sizeof c->req - 1)
        answer(c, "431 Request Header Fields Too Large", "text/plain", "too large\n", 10);
}

static void
on_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static void
on_connection(uv_stream_t *server, int status)
{
    struct mms_metrics *m = server->data;
    if (status < 0 || m->stopping)
        return;
    struct conn *c = calloc(1, sizeof *c);
    int slot = -1;
    for (int i = 0; i < MAX_CONNECTIONS && slot < 0; i++)
        if (m->open[i] == NULL)
            slot = i;
    if (c == NULL || uv_tcp_init(server->loop, &c->tcp) < 0) {
        free(c);
        return;
    }
    c->m = m;
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    m->connections++;
    uv_timer_init(server->loop, &c->timer);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 || slot < 0) {
        conn_close(c); /* over the limit: the client sees the connection closed */
        return;
    }
    m->open[slot] = c;
    uv_timer_start(&c->timer, on_timeout, CONNECTION_TIMEOUT_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
        conn_close(c);
}

int
mms_metrics_start(uv_loop_t *loop, const char *listen, mms_metrics_fill_fn fill, void *ud,
                  struct mms_metrics **out, char *why, size_t why_len)
{
    struct sockaddr_in sa;
    char msg[256];
    if (mms_net_parse_listen(listen, &sa, msg, sizeof msg) < 0)
        return mms_why(why, why_len, MMS_EINVAL, "metrics_listen %s", msg);
    struct mms_metrics *m = calloc(1, sizeof *m);
    if (m == NULL)
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    m->fill = fill;
    m->ud = ud;
    uv_tcp_init(loop, &m->server);
    m->server.data = m;
    int rc = uv_tcp_bind(&m->server, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&m->server, 16, on_connection);
    if (rc < 0) {
        mms_why(why, why_len, MMS_EIO, "metrics_listen %s: %s", listen, uv_strerror(rc));
        mms_metrics_stop(m); /* freed once the loop has closed the handle */
        return MMS_EIO;
    }
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getsockname(&m->server, (struct sockaddr *)&ss, &len) == 0)
        m->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    *out = m;
    return 0;
}

unsigned
mms_metrics_port(const struct mms_metrics *m)
{
    return m->port;
}

static void
server_closed(uv_handle_t *h)
{
    struct mms_metrics *m = h->data;
    m->server.data = NULL;
    if (m->connections == 0)
        free(m);
}

void
mms_metrics_stop(struct mms_metrics *m)
{
    if (m == NULL)
        return;
    m->stopping = true;
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (m->open[i] != NULL)
            conn_close(m->open[i]);
    uv_close((uv_handle_t *)&m->server, server_closed);
}
