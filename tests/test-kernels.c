/* Tests of the CUDA kernels on a GPU: each kernel against the host math of kernels/<op>-math.h.
 * Built only with CUDA; prints a TAP SKIP line with the reason when no device is usable. */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/err.h"
#include "kernels/kernels.h"
#include "kernels/rescale-math.h"
#include "tests/tap.h"

#define N 1000003 /* not a multiple of the block size */

int
main(void)
{
    int count = 0, wrong = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    int16_t *hx;
    float *hy;
    void *dx = NULL;
    float *dy = NULL;
    struct mms_k_rescale_args a;
    cudaStream_t s;
    char why[256];

    if (e != cudaSuccess || count == 0) {
        snprintf(why, sizeof why, "no usable CUDA device (cudaGetDeviceCount: %s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        skip_all(why);
    }
    plan(4, 60);
    hx = malloc(N * sizeof *hx);
    hy = malloc(N * sizeof *hy);
    if (hx == NULL || hy == NULL)
        return 1;
    for (int i = 0; i < N; i++)
        hx[i] = (int16_t)((int64_t)i * 7919 % 65536 - 32768);
    ok(cudaStreamCreate(&s) == cudaSuccess && cudaMalloc(&dx, N * sizeof *hx) == cudaSuccess &&
           cudaMalloc((void **)&dy, N * sizeof *hy) == cudaSuccess &&
           cudaMemcpy(dx, hx, N * sizeof *hx, cudaMemcpyHostToDevice) == cudaSuccess,
       "device buffers");
    a = (struct mms_k_rescale_args){
        .x = dx, .y = dy, .n = N, .dtype = MMS_K_I16, .slope = 0.3f, .intercept = -1000.25f};
    is_int(mms_k_rescale(&a, s), 0, "mms_k_rescale launches");
    ok(cudaStreamSynchronize(s) == cudaSuccess &&
           cudaMemcpy(hy, dy, N * sizeof *hy, cudaMemcpyDeviceToHost) == cudaSuccess,
       "results copied back");
    for (int i = 0; i < N; i++)
        if (hy[i] != mms_rescale_1((float)hx[i], 0.3f, -1000.25f))
            wrong++;
    is_int(wrong, 0, "device results equal the host math bit for bit");
    cudaFree(dx);
    cudaFree(dy);
    cudaStreamDestroy(s);
    free(hx);
    free(hy);
    return done_testing();
}
