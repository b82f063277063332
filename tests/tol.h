/* The tolerance measure of mmunet.md section 7 for the engine's tests:
 * max |got - want| / max(1, max |want|), NaN anywhere counting as infinitely wrong. */
#ifndef MMS_TESTS_TOL_H
#define MMS_TESTS_TOL_H

#include <math.h>
#include <stddef.h>

#define TOL_OF(name, want_type)                                                                    \
    static inline double name(const float *got, const want_type *want, size_t n)                   \
    {                                                                                              \
        double worst = 0.0, scale = 1.0;                                                           \
        for (size_t i = 0; i < n; i++) {                                                           \
            double d = fabs((double)got[i] - (double)want[i]);                                     \
            worst = d > worst || isnan(d) ? (isnan(d) ? INFINITY : d) : worst;                     \
            scale = fabs((double)want[i]) > scale ? fabs((double)want[i]) : scale;                 \
        }                                                                                          \
        return worst / scale;                                                                      \
    }

TOL_OF(tol_of, float)
TOL_OF(tol_of_d, double)

#endif
