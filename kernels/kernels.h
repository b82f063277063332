/* CUDA kernels, called by the CUDA backend. Plain C; only the CUDA runtime API types.
 * Every entry validates its arguments, launches on the given stream, checks
 * cudaGetLastError() and returns 0 or an MMS_E* code (MMS_EINVAL, MMS_ECUDA). Launches are
 * asynchronous: results are ready after the stream is synchronized.
 * Threads: any thread with the stream's device current. */
#ifndef MMS_KERNELS_KERNELS_H
#define MMS_KERNELS_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum mms_k_dtype { MMS_K_I16, MMS_K_U16 };

/* y[i] = x[i] * slope + intercept for i < n: stored pixel values (int16 or uint16, as Pixel
 * Representation says) to Hounsfield units. x and y are device pointers, not overlapping. */
struct mms_k_rescale_args {
    const void *x; /* (n,) of dtype */
    float *y;      /* (n,) */
    int64_t n;
    enum mms_k_dtype dtype;
    float slope;
    float intercept;
};

int mms_k_rescale(const struct mms_k_rescale_args *a, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
