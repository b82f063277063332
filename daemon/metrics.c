/* daemon/metrics: the text format's helpers and the histogram (metrics.h). */
#include "daemon/metrics.h"

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
