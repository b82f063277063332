/* infer/ops-cpu: residual add with LReLU, nearest upsampling with concat, layout changes,
 * and the FTZ switch (mmunet.md 2.3, 2.5). */
#include "infer/ops-cpu/ops-cpu-impl.h"

#include <omp.h>
#include <string.h>
#include <xmmintrin.h>

void
mms__cpu_ftz(void)
{
    _mm_setcsr(_mm_getcsr() | 0x8040); /* FTZ and DAZ */
}

MMS_CPU_CLONES static void
add_lrelu_range(float *x, const float *y, int64_t i0, int64_t i1, float slope)
{
#pragma omp simd
    for (int64_t i = i0; i < i1; i++) {
        float v = x[i] + y[i];
        x[i] = v < 0.0f ? v * slope : v;
    }
}

void
mms__cpu_add_lrelu(int threads, float *x, const float *y, int64_t n, float slope)
{
    int nt = n < 65536 ? 1 : threads;
#pragma omp parallel num_threads(nt)
    {
        int id = omp_get_thread_num(), k = omp_get_num_threads();
        add_lrelu_range(x, y, n * id / k, n * (id + 1) / k, slope);
    }
}

void
mms__cpu_up_concat(int threads, const struct mms_tdesc *lo, const float *lo_data,
                   const struct mms_tdesc *skip, const float *skip_data, const int stride[3],
                   float *dst)
{
    int64_t f = skip->c, fl = lo->c, oc = fl + f;
    int64_t nd = skip->d, nh = skip->h, nw = skip->w;
    int nt = nd * nh < 2 ? 1 : threads;
#pragma omp parallel for collapse(2) num_threads(nt) schedule(static)
    for (int64_t d = 0; d < nd; d++) {
        for (int64_t h = 0; h < nh; h++) {
            const float *lrow = lo_data + ((d / stride[0]) * lo->h + h / stride[1]) * lo->w * fl;
            const float *srow = skip_data + (d * nh + h) * nw * f;
            float *out = dst + (d * nh + h) * nw * oc;
            for (int64_t w = 0; w < nw; w++) {
                memcpy(out + w * oc, lrow + (w / stride[2]) * fl, (size_t)fl * sizeof(float));
                memcpy(out + w * oc + fl, srow + w * f, (size_t)f * sizeof(float));
            }
        }
    }
}

void
mms__cpu_avgpool(int threads, const struct mms_tdesc *src, const float *src_data,
                 const int stride[3], float *dst)
{
    int64_t c = src->c, od = src->d / stride[0], oh = src->h / stride[1], ow = src->w / stride[2];
    float inv = 1.0f / (float)(stride[0] * stride[1] * stride[2]);
    int nt = od * oh < 2 ? 1 : threads;
#pragma omp parallel for collapse(2) num_threads(nt) schedule(static)
    for (int64_t d = 0; d < od; d++) {
        for (int64_t h = 0; h < oh; h++) {
            for (int64_t w = 0; w < ow; w++) {
                float *out = dst + ((d * oh + h) * ow + w) * c;
                for (int64_t ch = 0; ch < c; ch++)
                    out[ch] = 0.0f;
                for (int i = 0; i < stride[0]; i++)
                    for (int j = 0; j < stride[1]; j++)
                        for (int k = 0; k < stride[2]; k++) {
                            const float *in =
                                src_data +
                                (((d * stride[0] + i) * src->h + h * stride[1] + j) * src->w +
                                 w * stride[2] + k) *
                                    c;
                            for (int64_t ch = 0; ch < c; ch++)
                                out[ch] += in[ch];
                        }
                for (int64_t ch = 0; ch < c; ch++)
                    out[ch] *= inv;
            }
        }
    }
}

void
mms__cpu_transpose(int threads, const float *src, float *dst, int64_t rows, int64_t cols)
{
    const int64_t B = 32;
    int nt = rows * cols < 65536 ? 1 : threads;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r0 = 0; r0 < rows; r0 += B) {
        int64_t r1 = r0 + B < rows ? r0 + B : rows;
        for (int64_t c0 = 0; c0 < cols; c0 += B) {
            int64_t c1 = c0 + B < cols ? c0 + B : cols;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    dst[c * rows + r] = src[r * cols + c];
        }
    }
}
