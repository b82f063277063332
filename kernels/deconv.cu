/* Transposed 3D convolution with kernel = stride and no padding on the device (the decoder's
 * upsampling in nnU-Net's networks, README "nnU-Net's standard networks"), channels-last:
 * every output voxel has exactly one input voxel and one kernel tap, so it is a sum over the
 * input channels alone. fp32 throughout, whatever the convolutions' precision. */
#include "kernels/kernels.h"

#include "common/err.h"
#include "common/log.h"

/* One thread per output element (voxel, o), o fastest: the threads of a warp read the same
 * input voxel (a broadcast) and consecutive weights of (t0, t1, t2, cin, cout) (coalesced).
 * The sum over c runs in order, in fp32, then the bias is added. */
static __global__ void
deconv_kernel(struct mms_k_deconv_args a)
{
    int64_t od = a.d * a.t[0], oh = a.h * a.t[1], ow = a.w * a.t[2];
    int64_t count = od * oh * ow * a.cout;
    const float *src = a.src + (size_t)blockIdx.y * a.stride;
    float *dst = a.dst + (size_t)blockIdx.y * a.stride;
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step) {
        int64_t o = i % a.cout, v = i / a.cout;
        int64_t x = v % ow, y = (v / ow) % oh, z = v / (ow * oh);
        int64_t tap = ((z % a.t[0]) * a.t[1] + y % a.t[1]) * a.t[2] + x % a.t[2];
        const float *__restrict__ s =
            src + (((z / a.t[0]) * a.h + y / a.t[1]) * a.w + x / a.t[2]) * a.cin;
        const float *__restrict__ wt = a.wei + tap * a.cin * a.cout + o;
        float acc = 0.0f;
        for (int64_t c = 0; c < a.cin; c++)
            acc = fmaf(s[c], wt[c * a.cout], acc);
        dst[i] = a.bias != NULL ? acc + a.bias[o] : acc;
    }
}

static void
deconv_launch(const struct mms_k_deconv_args *a, cudaStream_t s)
{
    int64_t count = a->d * a->t[0] * a->h * a->t[1] * a->w * a->t[2] * a->cout;
    int64_t blocks = (count + 255) / 256;
    if (blocks > 8192)
        blocks = 8192; /* grid-stride loop covers the rest */
    deconv_kernel<<<dim3((unsigned)blocks, (unsigned)a->n), 256, 0, s>>>(*a);
}

extern "C" int
mms_k_deconv(const struct mms_k_deconv_args *a, cudaStream_t s)
{
    if (a == NULL || a->src == NULL || a->dst == NULL || a->wei == NULL || a->n < 1 ||
        a->n > 65535 || a->d < 1 || a->h < 1 || a->w < 1 || a->cin < 1 || a->cout < 1)
        return MMS_EINVAL;
    for (int i = 0; i < 3; i++)
        if (a->t[i] < 1)
            return MMS_EINVAL;
    /* the element counts must fit int64_t with room for the grid-stride step */
    double in = (double)a->d * a->h * a->w * a->cin;
    double out = (double)a->d * a->t[0] * a->h * a->t[1] * a->w * a->t[2] * a->cout;
    if (in > 0x1p62 || out > 0x1p62)
        return MMS_EINVAL;
    if (a->n > 1 && ((double)a->stride < in || (double)a->stride < out))
        return MMS_EINVAL;
    deconv_launch(a, s);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        mms_log(MMS_LOG_ERR, "mms_k_deconv: kernel launch failed: %s", cudaGetErrorString(e));
        return MMS_ECUDA;
    }
    return 0;
}
