/* daemon/web: libmicrohttpd on the loop (web.h). */
#include "daemon/web.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/net.h"

#define MAX_CONNECTIONS 16
#define MAX_PER_ADDRESS 8
#define IDLE_TIMEOUT_S 10
#define REQUEST_MEMORY (16 * 1024) /* the request head and its parsing, per connection */

struct mms_web {
    struct MHD_Daemon *mhd;
    uv_poll_t poll;   /* libmicrohttpd's epoll descriptor */
    uv_timer_t timer; /* its next timeout */
    int open_handles;
    bool had_connections; /* at the last MHD_run() */
    unsigned port;
    mms_web_handler_fn handler;
    void *ud;
};

void
mms_web_text(struct mms_web_reply *reply, int status, const char *text)
{
    reply->status = status;
    reply->type = "text/plain; charset=utf-8";
    free(reply->body);
    reply->body = strdup(text);
    reply->body_len = reply->body != NULL ? strlen(text) : 0;
}

/* libmicrohttpd's own messages (refused connections, broken requests): the debug log, since
 * any host that reaches the port can cause them. */
static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    mms_log(MMS_LOG_DEBUG, "http: %s", line);
}

static enum MHD_Result
queue(struct MHD_Connection *conn, struct mms_web_reply *r)
{
    struct MHD_Response *resp;
    if (r->fd >= 0) {
        resp = MHD_create_response_from_fd64(r->fd_size, r->fd);
        if (resp == NULL)
            close(r->fd);
        r->fd = -1;
    } else {
        resp = MHD_create_response_from_buffer(r->body_len, r->body, MHD_RESPMEM_MUST_FREE);
        if (resp == NULL)
            free(r->body);
        r->body = NULL;
    }
    if (resp == NULL)
        return MHD_NO; /* out of memory: libmicrohttpd closes the connection */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->type);
    /* the page and the figures are of this moment; previews are not shared with caches */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'");
    if (r->extra_name != NULL)
        MHD_add_response_header(resp, r->extra_name, r->extra_value);
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size, void **state)
{
    (void)version;
    (void)upload_data;
    struct mms_web *w = cls;
    struct mms_web_reply r = {.status = 500, .fd = -1};
    /* The first call comes with the head only. A request with a body is answered then,
     * while libmicrohttpd still lets a response be queued; a body that comes anyway (no
     * length announced) is read and dropped, and the request answered the same way. */
    if (*state == NULL) {
        *state = w;
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
            mms_web_text(&r, MHD_HTTP_METHOD_NOT_ALLOWED, "mmsegd: only GET and HEAD\n");
            r.extra_name = MHD_HTTP_HEADER_ALLOW;
            r.extra_value = "GET, HEAD";
            return queue(conn, &r);
        }
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if ((cl != NULL && strcmp(cl, "0") != 0) ||
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) !=
                NULL) {
            mms_web_text(&r, MHD_HTTP_CONTENT_TOO_LARGE, "mmsegd: a request has no body here\n");
            return queue(conn, &r);
        }
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        *state = &w->port; /* marks a request that had a body */
        return MHD_YES;
    }
    if (*state == &w->port) {
        mms_web_text(&r, MHD_HTTP_CONTENT_TOO_LARGE, "mmsegd: a request has no body here\n");
        return queue(conn, &r);
    }
    w->handler(w->ud, url, &r);
    if (r.type == NULL)
        r.type = "text/plain; charset=utf-8";
    return queue(conn, &r);
}

static void arm(struct mms_web *w);

static void
run(struct mms_web *w)
{
    if (w->mhd == NULL)
        return;
    MHD_run(w->mhd);
    arm(w);
}

static void
on_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    run(p->data);
}

static void
on_timer(uv_timer_t *t)
{
    run(t->data);
}

/* After every MHD_run(): when libmicrohttpd has work without a new event on its descriptor
 * (data read ahead, an idle connection to time out), its timeout says when to call it.
 * That is not all: at the connection limit libmicrohttpd takes the listening socket out of
 * its epoll set, and puts it back in a later MHD_run() once closed connections are cleaned
 * up, with no event of its own to ask for that call. So while connections are open the loop
 * calls it at least every CHECK_MS, and once more right after the last one is gone. */
#define CHECK_MS 250

static void
arm(struct mms_web *w)
{
    MHD_UNSIGNED_LONG_LONG ms = 0;
    bool has = MHD_get_timeout(w->mhd, &ms) == MHD_YES;
    const union MHD_DaemonInfo *n =
        MHD_get_daemon_info(w->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    bool open = n == NULL || n->num_connections > 0;
    if (open && (!has || ms > CHECK_MS)) {
        ms = CHECK_MS;
        has = true;
    } else if (!open && w->had_connections) {
        ms = 0;
        has = true;
    }
    w->had_connections = open;
    if (has)
        uv_timer_start(&w->timer, on_timer, ms, 0);
    else
        uv_timer_stop(&w->timer);
}

/* A bound, listening, non-blocking socket: bound here rather than by libmicrohttpd so that
 * a port in use is reported as such. */
static int
listen_socket(const struct sockaddr_in *sa, char *why, size_t why_len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return mms_why(why, why_len, MMS_EIO, "socket(): %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)sa, sizeof *sa) < 0 || listen(fd, 16) < 0) {
        int e = errno;
        close(fd);
        return mms_why(why, why_len, MMS_EIO, "%s", strerror(e));
    }
    return fd;
}

static void
handle_closed(uv_handle_t *h)
{
    struct mms_web *w = h->data;
    if (--w->open_handles == 0)
        free(w);
}

int
mms_web_start(uv_loop_t *loop, const char *listen, mms_web_handler_fn handler, void *ud,
              struct mms_web **out, char *why, size_t why_len)
{
    struct sockaddr_in sa;
    char msg[256];
    if (mms_net_parse_listen(listen, &sa, msg, sizeof msg) < 0)
        return mms_why(why, why_len, MMS_EINVAL, "metrics_listen %s", msg);
    int fd = listen_socket(&sa, msg, sizeof msg);
    if (fd < 0)
        return mms_why(why, why_len, fd, "metrics_listen %s: %s", listen, msg);
    struct mms_web *w = calloc(1, sizeof *w);
    if (w == NULL) {
        close(fd);
        return mms_why(why, why_len, MMS_ENOMEM, "out of memory");
    }
    w->handler = handler;
    w->ud = ud;
    w->mhd = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, w, MHD_OPTION_LISTEN_SOCKET,
        fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)MAX_PER_ADDRESS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)REQUEST_MEMORY, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    if (w->mhd == NULL) {
        close(fd);
        free(w);
        return mms_why(why, why_len, MMS_EIO, "metrics_listen %s: libmicrohttpd did not start",
                       listen);
    }
    const union MHD_DaemonInfo *ep = MHD_get_daemon_info(w->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    const union MHD_DaemonInfo *port = MHD_get_daemon_info(w->mhd, MHD_DAEMON_INFO_BIND_PORT);
    w->port = port != NULL ? port->port : 0;
    int rc = ep != NULL ? uv_poll_init(loop, &w->poll, ep->epoll_fd) : UV_EINVAL;
    if (rc < 0) {
        MHD_stop_daemon(w->mhd);
        free(w);
        return mms_why(why, why_len, MMS_EIO, "metrics_listen %s: %s", listen, uv_strerror(rc));
    }
    uv_timer_init(loop, &w->timer);
    w->poll.data = w->timer.data = w;
    w->open_handles = 2;
    uv_poll_start(&w->poll, UV_READABLE, on_poll);
    arm(w);
    *out = w;
    return 0;
}

unsigned
mms_web_port(const struct mms_web *w)
{
    return w->port;
}

void
mms_web_stop(struct mms_web *w)
{
    if (w == NULL)
        return;
    /* the poll handle lets go of the epoll descriptor before libmicrohttpd closes it */
    uv_poll_stop(&w->poll);
    uv_timer_stop(&w->timer);
    MHD_stop_daemon(w->mhd);
    w->mhd = NULL;
    uv_close((uv_handle_t *)&w->poll, handle_closed);
    uv_close((uv_handle_t *)&w->timer, handle_closed);
}
