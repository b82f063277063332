/* Layout change (rows, cols) -> (cols, rows) on the device, through 32 x 32 tiles in shared
 * memory so that both the reads and the writes are coalesced. */
#include "kernels/kernels.h"

#include "common/err.h"
#include "common/log.h"

#define TILE 32
#define ROWS 8

static __global__ void
transpose_kernel(const float *__restrict__ src, float *__restrict__ dst, int64_t rows, int64_t cols,
                 size_t stride)
{
    __shared__ float tile[TILE][TILE + 1];
    int64_t ntc = (cols + TILE - 1) / TILE;
    int64_t t = blockIdx.x, r0 = (t / ntc) * TILE, c0 = (t % ntc) * TILE;
    const float *s = src + (size_t)blockIdx.y * stride;
    float *d = dst + (size_t)blockIdx.y * stride;
    int tx = threadIdx.x, ty = threadIdx.y;
    for (int j = ty; j < TILE; j += ROWS) {
        int64_t r = r0 + j, c = c0 + tx;
        if (r < rows && c < cols)
            tile[j][tx] = s[r * cols + c];
    }
    __syncthreads();
    for (int j = ty; j < TILE; j += ROWS) {
        int64_t c = c0 + j, r = r0 + tx;
        if (r < rows && c < cols)
            d[c * rows + r] = tile[tx][j];
    }
}

static void
transpose_launch(const struct mms_k_transpose_args *a, cudaStream_t s)
{
    int64_t tiles = ((a->rows + TILE - 1) / TILE) * ((a->cols + TILE - 1) / TILE);
    transpose_kernel<<<dim3((unsigned)tiles, (unsigned)a->n), dim3(TILE, ROWS), 0, s>>>(
        a->src, a->dst, a->rows, a->cols, a->stride);
}

extern "C" int
mms_k_transpose(const struct mms_k_transpose_args *a, cudaStream_t s)
{
    if (a == NULL || a->src == NULL || a->dst == NULL || a->rows < 1 || a->cols < 1 || a->n < 1 ||
        a->n > 65535 || (a->n > 1 && a->stride < (size_t)(a->rows * a->cols)) ||
        ((a->rows + TILE - 1) / TILE) * ((a->cols + TILE - 1) / TILE) > INT32_MAX)
        return MMS_EINVAL;
    transpose_launch(a, s);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        mms_log(MMS_LOG_ERR, "mms_k_transpose: kernel launch failed: %s", cudaGetErrorString(e));
        return MMS_ECUDA;
    }
    return 0;
}
