/* daemon/web: the daemon's HTTP side (design.md section 10): libmicrohttpd run on the loop.
 *
 * The server has no thread of its own: libmicrohttpd's epoll descriptor is watched by the
 * loop, which calls MHD_run() when it is readable and when libmicrohttpd's next timeout is
 * due. Every request is therefore answered on the loop thread, by one callback that may read
 * the loop's state without locks. Only GET and HEAD are served; a request with a body, a
 * request head over 16 KiB, a 17th connection, a 9th from one address and a connection idle
 * for 10 s are refused or closed by libmicrohttpd.
 * Threads: the loop thread. */
#ifndef MMS_DAEMON_WEB_H
#define MMS_DAEMON_WEB_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct mms_web;

/* One answer. The handler sets status (200, 404, 503, ...) and type, and either body (new
 * memory the server frees, body_len bytes) or fd (an open file the server closes, fd_size
 * bytes from its start); fd is -1 and body NULL on entry. extra_header, when not NULL, is
 * one more header (static text: "Refresh: 10"), without line end. */
struct mms_web_reply {
    int status;
    const char *type;
    char *body;
    size_t body_len;
    int fd;
    uint64_t fd_size;
    const char *extra_name, *extra_value;
};

/* Answer a GET of path (the URL's path, without its query, as libmicrohttpd decoded it). */
typedef void (*mms_web_handler_fn)(void *ud, const char *path, struct mms_web_reply *reply);

/* Listen on listen ("IPv4:PORT"; port 0 picks one) and serve with handler. Ownership: *out is
 * new, stop it with mms_web_stop(). Returns 0, MMS_EINVAL (not "IPv4:PORT"), MMS_EIO (the
 * socket could not be bound, or libmicrohttpd did not start), MMS_ENOMEM, with why. */
int mms_web_start(uv_loop_t *loop, const char *listen, mms_web_handler_fn handler, void *ud,
                  struct mms_web **out, char *why, size_t why_len);

/* The port it listens on. */
unsigned mms_web_port(const struct mms_web *w);

/* Close the listener and every connection now; the memory goes when the loop has closed the
 * handles. NULL is a no-op. */
void mms_web_stop(struct mms_web *w);

/* Set reply to status with the plain text body text (copied). */
void mms_web_text(struct mms_web_reply *reply, int status, const char *text);

#endif
