/* infer: the CUDA backend's private interface, between its host side (infer/backend-cuda.c:
 * device, arena, convolutions through cuDNN, element-wise ops) and its mixer
 * (infer/backend-cuda-mixer.c: LN, projections through cuBLAS, causal conv, selective scan).
 * CUDA, cuDNN and cuBLAS types appear only here, in those two files and in kernels/.
 *
 * Batches: the arena holds n samples side by side at a stride of the graph's arena_bytes;
 * every op runs on n samples. Everything is queued on the backend's one stream.
 * Threads: one caller at a time, with the backend's device current. */
#ifndef MMS_INFER_BACKEND_CUDA_IMPL_H
#define MMS_INFER_BACKEND_CUDA_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "infer/backend-impl.h"

/* The precision of the convolutions (mmunet.md 3.2, 8 Q13); the Mamba path, IN and LN stay
 * fp32 whatever this says. */
enum mms_cuda_precision {
    MMS_CUDA_FP32, /* true fp32 math: no TF32 (cuDNN CUDNN_FMA_MATH, cuBLAS default mode) */
    MMS_CUDA_BF16, /* tensor cores, fp32 accumulation */
    MMS_CUDA_FP16, /* tensor cores, fp32 accumulation */
};

struct mms_cuda {
    int device;
    cudaStream_t stream;
    cublasHandle_t cublas; /* on stream, default math mode (no TF32) */
    cudnnHandle_t cudnn;   /* on stream */
    enum mms_cuda_precision precision;
    bool lost; /* a sticky error (illegal address, ...) happened: every later call fails */
};

/* Evaluate a CUDA runtime / cuDNN / cuBLAS call: 0 on success; otherwise log the statement,
 * function, file, line and the library's message, and evaluate to MMS_ECUDA (MMS_ECUDNN for
 * cuDNN; MMS_ENOMEM for an allocation failure, which is then cleared). The caller's
 * `goto fail` stays visible. */
int mms__cuda_check(cudaError_t e, const char *what, const char *func, const char *file, int line);
int mms__cudnn_check(cudnnStatus_t s, const char *what, const char *func, const char *file,
                     int line);
int mms__cublas_check(cublasStatus_t s, const char *what, const char *func, const char *file,
                      int line);
#define MMS_CUDA_CHECK(call) mms__cuda_check((call), #call, __func__, __FILE__, __LINE__)
#define MMS_CUDNN_CHECK(call) mms__cudnn_check((call), #call, __func__, __FILE__, __LINE__)
#define MMS_CUBLAS_CHECK(call) mms__cublas_check((call), #call, __func__, __FILE__, __LINE__)

/* A prepared MIXER node (infer/backend-cuda-mixer.c): device copies of its weights and its
 * own device workspace, sized for max_batch samples of l tokens. */
struct mms_cuda_mixer;

/* Prepare MIXER node nd (L = l tokens per sample, at most max_batch samples per run): upload
 * the weights (fp32) and allocate the workspace. *bytes receives the device memory it holds.
 * Ownership: *out is new, free with mms__cuda_mixer_free() (which accepts NULL).
 * Returns 0, MMS_ENOMEM (device memory), MMS_ECUDA or MMS_EINVAL. */
int mms__cuda_mixer_new(struct mms_cuda *cu, const struct mms_node *nd, int64_t l, int max_batch,
                        struct mms_cuda_mixer **out, size_t *bytes);
void mms__cuda_mixer_free(struct mms_cuda_mixer *mx);

/* Device bytes mms__cuda_mixer_new() would take for nd, l and max_batch (for planning). */
size_t mms__cuda_mixer_bytes(const struct mms_node *nd, int64_t l, int max_batch);

/* dst = mixer(src) for n samples (n <= max_batch): sample i reads src + i * stride and
 * writes dst + i * stride (floats; both (L, C) token-major, device memory). When taps is not
 * NULL (n is then 1), taps[MMS_TAP_*] that are not NULL are device pointers that receive
 * the LN output (L, C), the mixer output (L, C), delta and pre-gate y of each direction
 * (L, E), as the CPU backend writes them. Queued on cu->stream.
 * Returns 0, MMS_EINVAL, MMS_ECUDA. */
int mms__cuda_mixer_run(struct mms_cuda *cu, const struct mms_node *nd, struct mms_cuda_mixer *mx,
                        int64_t l, int n, const float *src, float *dst, size_t stride,
                        float *const taps[MMS_TAP__COUNT]);

#endif
