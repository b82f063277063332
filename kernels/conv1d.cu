/* Causal depthwise conv1d + SiLU of the Mamba path (mmunet.md 3.1, 3.3): one thread per
 * (token, channel), channels fastest so that the rows are read coalesced. The backward
 * direction reads the same window with the taps reversed: no reversed copy of the tokens. */
#include "kernels/kernels.h"

#include "common/err.h"
#include "common/log.h"
#include "kernels/ssm-math.h"

static __global__ void
conv1d_silu_kernel(const float *__restrict__ xe, float *__restrict__ xc, int64_t m, int e, int k,
                   const float *__restrict__ w, const float *__restrict__ b, int backward)
{
    int64_t n = m * e, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t q = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; q < n; q += stride) {
        int64_t i = q / e;
        int c = (int)(q - i * e);
        const float *wc = w + (int64_t)c * k;
        const float *in = xe + i * e + c;
        float acc = b[c];
        for (int j = 0; j < k; j++)
            acc += wc[backward ? k - 1 - j : j] * in[(int64_t)j * e];
        xc[q] = mms_silu(acc);
    }
}

static void
conv1d_launch(const struct mms_k_conv1d_args *a, cudaStream_t s)
{
    const int threads = 256;
    int64_t blocks = (a->m * a->e + threads - 1) / threads;
    if (blocks > 1048576)
        blocks = 1048576; /* grid-stride loop covers the rest */
    conv1d_silu_kernel<<<(unsigned)blocks, threads, 0, s>>>(a->xe, a->xc, a->m, a->e, a->k, a->w,
                                                            a->b, a->backward);
}

extern "C" int
mms_k_conv1d_silu(const struct mms_k_conv1d_args *a, cudaStream_t s)
{
    if (a == NULL || a->m < 0 || a->e < 1 || a->k < 1 || a->m > INT64_MAX / a->e ||
        (a->m > 0 && (a->xe == NULL || a->xc == NULL || a->w == NULL || a->b == NULL)))
        return MMS_EINVAL;
    if (a->m == 0)
        return 0;
    conv1d_launch(a, s);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        mms_log(MMS_LOG_ERR, "mms_k_conv1d_silu: kernel launch failed: %s", cudaGetErrorString(e));
        return MMS_ECUDA;
    }
    return 0;
}
