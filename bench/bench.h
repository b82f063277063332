/* Helpers of the benchmark programs: a monotonic clock and the median of a sample. Each
 * benchmark includes it once. */
#ifndef MMS_BENCH_BENCH_H
#define MMS_BENCH_BENCH_H

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Seconds on the monotonic clock. */
static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of v[0..n) (v is not changed); 0 for n < 1 or without memory. */
static double
median(const double *v, int n)
{
    double *s = n > 0 ? malloc((size_t)n * sizeof *s) : NULL;
    if (s == NULL)
        return 0.0;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

#endif
