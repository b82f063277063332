/* daemon/metrics: what the Prometheus endpoint (design.md section 10; served by daemon/web at
 * /metrics) writes in the text exposition format (version 0.0.4): label values, histograms.
 * Threads: any. */
#ifndef MMS_DAEMON_METRICS_H
#define MMS_DAEMON_METRICS_H

#include <stddef.h>
#include <stdio.h>

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
