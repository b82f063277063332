/* infer/ops-cpu: instance norm and layer norm on channels-last tensors (mmunet.md 2.3, 3.2).
 *
 * IN statistics run over up to millions of voxels, so they accumulate in fp64 (sum and sum of
 * squares per channel, per thread, combined in thread order); LN over at most a few hundred
 * channels uses two fp32 passes. */
#include "infer/ops-cpu/ops-cpu-impl.h"

#include <math.h>
#include <omp.h>
#include <string.h>

MMS_CPU_CLONES static void
stats_range(const float *x, int64_t t0, int64_t t1, int64_t c, double *sum, double *sq)
{
    for (int64_t j = 0; j < c; j++)
        sum[j] = sq[j] = 0.0;
    for (int64_t t = t0; t < t1; t++) {
        const float *row = x + t * c;
#pragma omp simd
        for (int64_t j = 0; j < c; j++) {
            double v = row[j];
            sum[j] += v;
            sq[j] += v * v;
        }
    }
}

MMS_CPU_CLONES static void
apply_range(float *x, int64_t t0, int64_t t1, int64_t c, const float *scale, const float *shift,
            bool lrelu, float slope)
{
    for (int64_t t = t0; t < t1; t++) {
        float *row = x + t * c;
#pragma omp simd
        for (int64_t j = 0; j < c; j++) {
            float v = row[j] * scale[j] + shift[j];
            row[j] = lrelu && v < 0.0f ? v * slope : v;
        }
    }
}

void
mms__cpu_instnorm(int threads, float *x, int64_t l, int64_t c, const float *gamma,
                  const float *beta, float eps, bool lrelu, float slope, double *part)
{
    /* part: per thread sum[c], sq[c]; then scale[c], shift[c] as floats after them */
    float *scale = (float *)(part + 2 * c * threads), *shift = scale + c;
    int nt = threads;
#pragma omp parallel num_threads(nt)
    {
        int id = omp_get_thread_num(), n = omp_get_num_threads();
        int64_t t0 = l * id / n, t1 = l * (id + 1) / n;
        stats_range(x, t0, t1, c, part + 2 * c * id, part + 2 * c * id + c);
#pragma omp barrier
#pragma omp single
        {
            for (int64_t j = 0; j < c; j++) {
                double s = 0.0, q = 0.0;
                for (int i = 0; i < n; i++) {
                    s += part[2 * c * i + j];
                    q += part[2 * c * i + c + j];
                }
                double mean = s / (double)l;
                double var = q / (double)l - mean * mean;
                if (var < 0.0)
                    var = 0.0;
                double sc = gamma[j] / sqrt(var + eps);
                scale[j] = (float)sc;
                shift[j] = (float)(beta[j] - mean * sc);
            }
        }
        apply_range(x, t0, t1, c, scale, shift, lrelu, slope);
    }
}

MMS_CPU_CLONES static void
layernorm_range(const float *x, float *u, int64_t t0, int64_t t1, int64_t c, const float *w,
                const float *b, float eps)
{
    for (int64_t t = t0; t < t1; t++) {
        const float *row = x + t * c;
        float *out = u + t * c;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < c; j++)
            s += row[j];
        float mean = s / (float)c, q = 0.0f;
#pragma omp simd reduction(+ : q)
        for (int64_t j = 0; j < c; j++)
            q += (row[j] - mean) * (row[j] - mean);
        float inv = 1.0f / sqrtf(q / (float)c + eps);
#pragma omp simd
        for (int64_t j = 0; j < c; j++)
            out[j] = (row[j] - mean) * inv * w[j] + b[j];
    }
}

void
mms__cpu_layernorm(int threads, const float *x, float *u, int64_t t, int64_t c, const float *w,
                   const float *b, float eps)
{
    int nt = t < 64 ? 1 : threads;
#pragma omp parallel num_threads(nt)
    {
        int id = omp_get_thread_num(), n = omp_get_num_threads();
        layernorm_range(x, u, t * id / n, t * (id + 1) / n, c, w, b, eps);
    }
}
