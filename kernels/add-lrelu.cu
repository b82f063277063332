/* Residual sum with LReLU on the device: x = LReLU(x + y), n samples. */
#include "kernels/kernels.h"

#include "common/err.h"
#include "common/log.h"
#include "kernels/eltwise-math.h"

static __global__ void
add_lrelu_kernel(float *__restrict__ x, const float *__restrict__ y, int64_t count, size_t stride,
                 float slope)
{
    float *xs = x + (size_t)blockIdx.y * stride;
    const float *ys = y + (size_t)blockIdx.y * stride;
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step)
        xs[i] = mms_lrelu(xs[i] + ys[i], slope);
}

static void
add_lrelu_launch(const struct mms_k_add_lrelu_args *a, cudaStream_t s)
{
    int64_t blocks = (a->count + 255) / 256;
    if (blocks > 8192)
        blocks = 8192; /* grid-stride loop covers the rest */
    add_lrelu_kernel<<<dim3((unsigned)blocks, (unsigned)a->n), 256, 0, s>>>(a->x, a->y, a->count,
                                                                            a->stride, a->slope);
}

extern "C" int
mms_k_add_lrelu(const struct mms_k_add_lrelu_args *a, cudaStream_t s)
{
    if (a == NULL || a->x == NULL || a->y == NULL || a->count < 0 || a->n < 1 || a->n > 65535 ||
        (a->n > 1 && a->stride < (size_t)a->count))
        return MMS_EINVAL;
    if (a->count == 0)
        return 0;
    add_lrelu_launch(a, s);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        mms_log(MMS_LOG_ERR, "mms_k_add_lrelu: kernel launch failed: %s", cudaGetErrorString(e));
        return MMS_ECUDA;
    }
    return 0;
}
