/* The sliding window on the device: a mirrored tile from the padded volume into the
 * network's input, and the weighted logits back into the accumulator (window-math.h). */
#include "kernels/kernels.h"

#include "common/err.h"
#include "common/log.h"

static __global__ void
gather_kernel(const float *__restrict__ vol, struct mms_k_window w, float *__restrict__ dst,
              int64_t pp)
{
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < pp; i += step) {
        int64_t v;
        (void)mms_k_window_map(&w, i, &v);
        dst[i] = vol[v];
    }
}

static __global__ void
scatter_kernel(const float *__restrict__ src, int channels, const float *__restrict__ gauss,
               float scale, struct mms_k_window w, int64_t pv, float *__restrict__ acc, int64_t pp)
{
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < pp; i += step) {
        int64_t v, l = mms_k_window_map(&w, i, &v);
        float g = gauss[l];
        for (int ch = 0; ch < channels; ch++)
            acc[ch * pv + v] += mms_k_window_term(g, src[ch * pp + i], scale);
    }
}

static unsigned
blocks_for(int64_t n)
{
    int64_t b = (n + 255) / 256;
    return (unsigned)(b > 8192 ? 8192 : b); /* grid-stride loops cover the rest */
}

static int
launched(const char *what)
{
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess)
        return 0;
    mms_log(MMS_LOG_ERR, "%s: kernel launch failed: %s", what, cudaGetErrorString(e));
    return MMS_ECUDA;
}

static bool
valid(const struct mms_k_window *w)
{
    return w != NULL && w->p[0] > 0 && w->p[1] > 0 && w->p[2] > 0 && w->st[2] == 1 &&
           w->base >= 0 && w->mask < 8u;
}

extern "C" int
mms_k_window_gather(const float *vol, const struct mms_k_window *w, float *dst, cudaStream_t s)
{
    if (vol == NULL || dst == NULL || !valid(w))
        return MMS_EINVAL;
    int64_t pp = w->p[0] * w->p[1] * w->p[2];
    gather_kernel<<<blocks_for(pp), 256, 0, s>>>(vol, *w, dst, pp);
    return launched("mms_k_window_gather");
}

extern "C" int
mms_k_window_scatter(const float *src, int channels, const float *gauss, float scale,
                     const struct mms_k_window *w, int64_t pv, float *acc, cudaStream_t s)
{
    if (src == NULL || gauss == NULL || acc == NULL || channels < 1 || pv < 1 || !valid(w))
        return MMS_EINVAL;
    int64_t pp = w->p[0] * w->p[1] * w->p[2];
    scatter_kernel<<<blocks_for(pp), 256, 0, s>>>(src, channels, gauss, scale, *w, pv, acc, pp);
    return launched("mms_k_window_scatter");
}
