/* x += y over n floats: the inner residual of a mixer. */
#include "kernels/kernels.h"

#include "common/err.h"
#include "common/log.h"

static __global__ void
add_kernel(float *__restrict__ x, const float *__restrict__ y, int64_t n)
{
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        x[i] += y[i];
}

static void
add_launch(float *x, const float *y, int64_t n, cudaStream_t s)
{
    const int threads = 256;
    int64_t blocks = (n + threads - 1) / threads;
    if (blocks > 65535)
        blocks = 65535; /* grid-stride loop covers the rest */
    add_kernel<<<(unsigned)blocks, threads, 0, s>>>(x, y, n);
}

extern "C" int
mms_k_add(float *x, const float *y, int64_t n, cudaStream_t s)
{
    if (n < 0 || (n > 0 && (x == NULL || y == NULL)))
        return MMS_EINVAL;
    if (n == 0)
        return 0;
    add_launch(x, y, n, s);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        mms_log(MMS_LOG_ERR, "mms_k_add: kernel launch failed: %s", cudaGetErrorString(e));
        return MMS_ECUDA;
    }
    return 0;
}
