/* daemon/metrics: the Prometheus endpoint (design.md section 10): a small HTTP/1.0 server on
 * the loop that answers GET /metrics with the text exposition format (version 0.0.4), one
 * request per connection. The figures come from a callback that writes them when asked.
 * Threads: the loop thread. */
#ifndef MMS_DAEMON_METRICS_H
#define MMS_DAEMON_METRICS_H

#include <stddef.h>
#include <stdio.h>
#include <uv.h>

struct mms_metrics;

/* Write the metrics to out (Prometheus text format). */
typedef void (*mms_metrics_fill_fn)(void *ud, FILE *out);

/* Listen on listen ("IPv4:PORT"; port 0 picks one). Ownership: *out is new, stop it with
 * mms_metrics_stop(). Returns 0, MMS_EINVAL (not "IPv4:PORT"), MMS_EIO (bind or listen
 * failed), MMS_ENOMEM, with why. */
int mms_metrics_start(uv_loop_t *loop, const char *listen, mms_metrics_fill_fn fill, void *ud,
                      struct mms_metrics **out, char *why, size_t why_len);

/* The port it listens on. */
unsigned mms_metrics_port(const struct mms_metrics *m);

/* Close the listener and the open connections; the memory goes when the loop has closed
 * them. NULL is a no-op. */
void mms_metrics_stop(struct mms_metrics *m);

/* Write text as the inside of a label value: backslash, double quote and newline escaped as
 * the text format requires. */
void mms_metrics_label_value(FILE *out, const char *text);

/* A histogram with fixed upper bounds, for the exposition. */
#define MMS_HIST_BUCKETS 12
struct mms_hist {
    double count, sum;
    double bucket[MMS_HIST_BUCKETS]; /* cumulative counts at the bounds of mms_hist_bounds */
};

/* The upper bounds of the buckets, in seconds (0.1 ... 600). */
extern const double mms_hist_bounds[MMS_HIST_BUCKETS];

void mms_hist_observe(struct mms_hist *h, double v);

/* Write the _bucket, _sum and _count lines of h as metric `name` with the label text
 * `labels` ("stage=\"decode\"", or "" for none). */
void mms_hist_print(FILE *out, const char *name, const char *labels, const struct mms_hist *h);

#endif
