/* common/clock: the two clocks, in seconds as doubles. Threads: any. */
#ifndef MMS_COMMON_CLOCK_H
#define MMS_COMMON_CLOCK_H

#include <time.h>

/* Seconds since the epoch (CLOCK_REALTIME): times stored in the state database. */
static inline double
mms_wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Seconds of CLOCK_MONOTONIC: durations. */
static inline double
mms_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
