/* Average pooling with kernel = stride and no padding on the device (the strided skip path of
 * ResidualEncoderUNet's blocks, README "nnU-Net's standard networks"), channels-last. */
#include "kernels/kernels.h"

#include "common/err.h"
#include "common/log.h"

/* One thread per output element (voxel, ch), ch fastest: the sum of the window in fp32, in
 * (i0, i1, i2) order, divided by the window's size (as PyTorch's avg_pool3d divides). */
static __global__ void
avgpool_kernel(struct mms_k_avgpool_args a)
{
    int64_t od = a.d / a.t[0], oh = a.h / a.t[1], ow = a.w / a.t[2];
    int64_t count = od * oh * ow * a.c;
    float size = (float)(a.t[0] * a.t[1] * a.t[2]);
    const float *src = a.src + (size_t)blockIdx.y * a.stride;
    float *dst = a.dst + (size_t)blockIdx.y * a.stride;
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step) {
        int64_t ch = i % a.c, v = i / a.c;
        int64_t x = v % ow, y = (v / ow) % oh, z = v / (ow * oh);
        const float *p = src + ((z * a.t[0] * a.h + y * a.t[1]) * a.w + x * a.t[2]) * a.c + ch;
        float sum = 0.0f;
        for (int i0 = 0; i0 < a.t[0]; i0++)
            for (int i1 = 0; i1 < a.t[1]; i1++)
                for (int i2 = 0; i2 < a.t[2]; i2++)
                    sum += p[((i0 * a.h + i1) * a.w + i2) * a.c];
        dst[i] = sum / size;
    }
}

static void
avgpool_launch(const struct mms_k_avgpool_args *a, cudaStream_t s)
{
    int64_t count = a->d / a->t[0] * (a->h / a->t[1]) * (a->w / a->t[2]) * a->c;
    int64_t blocks = (count + 255) / 256;
    if (blocks > 8192)
        blocks = 8192; /* grid-stride loop covers the rest */
    avgpool_kernel<<<dim3((unsigned)blocks, (unsigned)a->n), 256, 0, s>>>(*a);
}

extern "C" int
mms_k_avgpool(const struct mms_k_avgpool_args *a, cudaStream_t s)
{
    if (a == NULL || a->src == NULL || a->dst == NULL || a->n < 1 || a->n > 65535 || a->d < 1 ||
        a->h < 1 || a->w < 1 || a->c < 1)
        return MMS_EINVAL;
    for (int i = 0; i < 3; i++)
        if (a->t[i] < 1 || a->t[i] > 1024)
            return MMS_EINVAL;
    if (a->d % a->t[0] != 0 || a->h % a->t[1] != 0 || a->w % a->t[2] != 0)
        return MMS_EINVAL;
    /* the element count must fit int64_t with room for the grid-stride step */
    double in = (double)a->d * a->h * a->w * a->c;
    if (in > 0x1p62 || (a->n > 1 && (double)a->stride < in))
        return MMS_EINVAL;
    avgpool_launch(a, s);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        mms_log(MMS_LOG_ERR, "mms_k_avgpool: kernel launch failed: %s", cudaGetErrorString(e));
        return MMS_ECUDA;
    }
    return 0;
}
