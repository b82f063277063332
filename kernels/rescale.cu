/* HU rescale on the device: stored pixel values to float Hounsfield units. */
#include "kernels/kernels.h"

#include "common/err.h"
#include "common/log.h"
#include "kernels/rescale-math.h"

template <typename T>
static __global__ void
rescale_kernel(const T *__restrict__ x, float *__restrict__ y, int64_t n, float slope,
               float intercept)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = mms_rescale_1((float)x[i], slope, intercept);
}

static void
rescale_launch(const struct mms_k_rescale_args *a, cudaStream_t s)
{
    const int threads = 256;
    int64_t blocks = (a->n + threads - 1) / threads;
    if (blocks > 65535)
        blocks = 65535; /* grid-stride loop covers the rest */
    if (a->dtype == MMS_K_I16)
        rescale_kernel<<<(unsigned)blocks, threads, 0, s>>>((const int16_t *)a->x, a->y, a->n,
                                                            a->slope, a->intercept);
    else
        rescale_kernel<<<(unsigned)blocks, threads, 0, s>>>((const uint16_t *)a->x, a->y, a->n,
                                                            a->slope, a->intercept);
}

extern "C" int
mms_k_rescale(const struct mms_k_rescale_args *a, cudaStream_t s)
{
    cudaError_t e;

    if (a == NULL || a->n < 0 || (a->n > 0 && (a->x == NULL || a->y == NULL)) ||
        (a->dtype != MMS_K_I16 && a->dtype != MMS_K_U16))
        return MMS_EINVAL;
    if (a->n == 0)
        return 0;
    rescale_launch(a, s);
    e = cudaGetLastError();
    if (e != cudaSuccess) {
        mms_log(MMS_LOG_ERR, "mms_k_rescale: kernel launch failed: %s", cudaGetErrorString(e));
        return MMS_ECUDA;
    }
    return 0;
}
