/* infer: the CUDA backend (style.md 2.6): cuDNN convolutions, own kernels (kernels/) for the
 * element-wise ops, the mixer of infer/backend-cuda-mixer.c.
 *
 * Memory: the arena is one cudaMalloc block holding max_batch samples at a stride of the
 * graph's arena size; upload and download are copies on the backend's stream, waited for.
 * graph_init() prepares per node what compute() needs (convolution descriptors and algorithm,
 * device weights, the mixer) and the scratch memory the nodes share, so compute() allocates
 * nothing. max_batch comes from the free device memory at graph_init(): as many samples as
 * fit beside the prepared memory, up to MAX_BATCH (the 8 mirrorings of a tile).
 *
 * Convolutions use cuDNN's legacy API (cudnnConvolutionForward with Nd descriptors): it is
 * the form whose behaviour is documented per algorithm and per data type configuration, it
 * needs no graph or engine heuristics to build, and its descriptors map one to one onto a
 * node: activations NDHWC (5-dimensional descriptors with channels-last strides), filters
 * (cout, kD, kH, kW, cin) (CUDNN_TENSOR_NHWC with 5 dimensions), reordered once at
 * graph_init(). Many legacy algorithms want fully packed tensors, so a convolution runs once
 * per sample (each sample is a packed (D, H, W, C) tensor). The
 * algorithm is chosen once per node from cudnnGetConvolutionForwardAlgorithm_v7's list
 * (deterministic ones first, so runs repeat bit for bit); when a run answers NOT_SUPPORTED,
 * the next one on the list is used from then on. The bias (and for the skip projections the
 * residual sum and LReLU) is a kernel after the convolution, in the CPU backend's order.
 *
 * A convolution without a bias (nnU-Net's conv_bias false) gets a zero bias on the device;
 * in fp32 without a residual sum its epilogue is skipped.
 *
 * The transposed convolutions of nnU-Net's decoders (DECONV, kernel = stride) and the average
 * pooling of its residual blocks (AVGPOOL) are own kernels (kernels/deconv.cu,
 * kernels/avgpool.cu) over all n samples at once, in fp32 whatever the precision; DECONV's
 * weights are reordered once at graph_init() to (kD, kH, kW, cin, cout).
 *
 * Precision (mmunet.md 3.2): fp32 is strict (CUDNN_FMA_MATH: no TF32); bf16 and fp16 cast
 * the input of each convolution into a scratch buffer, use tensor cores with fp32
 * accumulation, and write their output in that type, which the epilogue widens to fp32.
 * Instance norm, LN, the Mamba path, DECONV and AVGPOOL stay fp32.
 *
 * Threads: one caller at a time; every entry makes the backend's device current. */
#include "infer/backend-cuda-impl.h"

#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "kernels/kernels.h"

#define MAX_BATCH 8
#define MAX_ALGOS 8
#define CONV_WS_CAP ((size_t)1 << 30)    /* largest cuDNN workspace an algorithm may ask for */
#define MARGIN_BYTES ((size_t)256 << 20) /* left free for cuDNN's and cuBLAS's own needs */

struct graph_ctx;

struct cuda_backend {
    struct mms_cuda cu;       /* first: the mixer sees this */
    struct graph_ctx *graphs; /* prepared graphs, for max_batch() */
};

struct conv_state {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t algo[MAX_ALGOS];
    size_t algo_ws[MAX_ALGOS];
    int n_algos, cur;
    void *wei;   /* (cout, kD, kH, kW, cin) in the precision's type */
    float *bias; /* (cout) */
    int64_t in_count, out_count;
};

struct node_state {
    struct conv_state conv;
    float *gamma, *beta; /* NORM: device copies */
    float *dwei, *dbias; /* DECONV: (kD, kH, kW, cin, cout) and (cout) or NULL (no bias) */
    struct mms_cuda_mixer *mixer;
};

struct graph_ctx {
    struct graph_ctx *next;
    const struct mms_graph *g;
    int n_nodes;
    struct node_state *nodes; /* zeroed at allocation: fini accepts empty ones */
    int max_batch;
    void *conv_ws; /* cuDNN workspace, shared by the convolutions */
    size_t conv_ws_bytes;
    void *xbuf; /* bf16/fp16: one sample's convolution input */
    void *ybuf; /* bf16/fp16 or accumulate: one sample's convolution output */
    void *norm_ws;
    size_t fixed_bytes;
};

/* ------------------------------------------------------------------------ error checks */
static bool
sticky(cudaError_t e)
{
    switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorLaunchTimeout:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorHardwareStackError:
    case cudaErrorAssert:
    case cudaErrorECCUncorrectable:
    case cudaErrorContextIsDestroyed:
        return true;
    default:
        return false;
    }
}

int
mms__cuda_check(cudaError_t e, const char *what, const char *func, const char *file, int line)
{
    if (e == cudaSuccess)
        return 0;
    mms_log(MMS_LOG_ERR, "cuda: %s: %s failed (%s:%d): %s%s", func, what, file, line,
            cudaGetErrorString(e), sticky(e) ? " (the device context is lost)" : "");
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* not sticky: clear it so that later calls do not see it */
        return MMS_ENOMEM;
    }
    return MMS_ECUDA;
}

int
mms__cudnn_check(cudnnStatus_t s, const char *what, const char *func, const char *file, int line)
{
    if (s == CUDNN_STATUS_SUCCESS)
        return 0;
    mms_log(MMS_LOG_ERR, "cudnn: %s: %s failed (%s:%d): %s", func, what, file, line,
            cudnnGetErrorString(s));
    return s == CUDNN_STATUS_ALLOC_FAILED ? MMS_ENOMEM : MMS_ECUDNN;
}

int
mms__cublas_check(cublasStatus_t s, const char *what, const char *func, const char *file, int line)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return 0;
    mms_log(MMS_LOG_ERR, "cublas: %s: %s failed (%s:%d): %s", func, what, file, line,
            cublasGetStatusString(s));
    return s == CUBLAS_STATUS_ALLOC_FAILED ? MMS_ENOMEM : MMS_ECUDA;
}

/* After a failed call: a sticky error marks the backend lost. */
static void
note_lost(struct mms_cuda *cu)
{
    cudaError_t e = cudaPeekAtLastError();
    if (sticky(e) && !cu->lost) {
        cu->lost = true;
        mms_log(MMS_LOG_ERR, "cuda: device %d: %s; every later call fails", cu->device,
                cudaGetErrorString(e));
    }
}

static int
current(struct mms_cuda *cu)
{
    if (cu->lost) {
        mms_log(MMS_LOG_ERR, "cuda: device %d was lost after an earlier error", cu->device);
        return MMS_ECUDA;
    }
    return MMS_CUDA_CHECK(cudaSetDevice(cu->device));
}

/* cudaMalloc with MMS_ENOMEM and the figures logged when the device memory is short. */
static int
dev_alloc(void **p, size_t nbytes, const char *what)
{
    *p = NULL;
    cudaError_t e = cudaMalloc(p, nbytes ? nbytes : 256);
    if (e == cudaSuccess)
        return 0;
    *p = NULL;
    if (e == cudaErrorMemoryAllocation) {
        size_t free_b = 0, total_b = 0;
        (void)cudaGetLastError();
        (void)cudaMemGetInfo(&free_b, &total_b);
        mms_log(MMS_LOG_ERR,
                "cuda: out of device memory for %s: %.1f MiB asked, %.1f MiB free of "
                "%.1f MiB",
                what, nbytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0);
        return MMS_ENOMEM;
    }
    return MMS_CUDA_CHECK(e);
}

static void
dev_free(void *p)
{
    if (p != NULL)
        (void)MMS_CUDA_CHECK(cudaFree(p));
}

/* Host to device on the backend's stream, waited for (the stream does not synchronize with
 * the legacy default stream, so plain cudaMemcpy could race with the kernels). */
static int
h2d(struct mms_cuda *cu, void *dst, const void *src, size_t nbytes)
{
    int rc = MMS_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, cu->stream));
    if (rc == 0)
        rc = MMS_CUDA_CHECK(cudaStreamSynchronize(cu->stream));
    return rc;
}

/* ------------------------------------------------------------------------ device */
static int
cuda_init(struct mms_backend *be, const struct mms_backend_params *p)
{
    int count = 0, drv = 0, rt = 0, rc;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        if (e == cudaErrorInsufficientDriver) {
            (void)cudaDriverGetVersion(&drv);
            (void)cudaRuntimeGetVersion(&rt);
            if (drv == 0)
                mms_log(MMS_LOG_NOTICE,
                        "cuda: no usable device: no NVIDIA driver is loaded (the runtime is CUDA "
                        "%d.%d)",
                        rt / 1000, rt % 1000 / 10);
            else
                mms_log(MMS_LOG_NOTICE,
                        "cuda: no usable device: the driver supports CUDA %d.%d, older than the "
                        "runtime's CUDA %d.%d",
                        drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
        } else {
            mms_log(MMS_LOG_NOTICE, "cuda: no usable device: %s",
                    e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device present");
        }
        return MMS_ENODEV;
    }
    if (p->device < 0 || p->device >= count) {
        mms_log(MMS_LOG_NOTICE, "cuda: device %d does not exist (%d device%s: 0 to %d)", p->device,
                count, count == 1 ? "" : "s", count - 1);
        return MMS_ENODEV;
    }
    struct cuda_backend *cb = calloc(1, sizeof *cb);
    if (cb == NULL)
        return MMS_ENOMEM;
    struct mms_cuda *cu = &cb->cu;
    cu->device = p->device;
    switch (p->precision) {
    case MMS_PRECISION_BF16:
        cu->precision = MMS_CUDA_BF16;
        break;
    case MMS_PRECISION_FP16:
        cu->precision = MMS_CUDA_FP16;
        break;
    default:
        cu->precision = MMS_CUDA_FP32;
        break;
    }
    if ((rc = MMS_CUDA_CHECK(cudaSetDevice(cu->device))) < 0) {
        rc = MMS_ENODEV;
        goto fail;
    }
    struct cudaDeviceProp prop;
    if ((rc = MMS_CUDA_CHECK(cudaGetDeviceProperties(&prop, cu->device))) < 0) {
        rc = MMS_ENODEV;
        goto fail;
    }
    if ((rc = MMS_CUDA_CHECK(cudaStreamCreateWithFlags(&cu->stream, cudaStreamNonBlocking))) < 0)
        goto fail;
    if ((rc = MMS_CUBLAS_CHECK(cublasCreate(&cu->cublas))) < 0) {
        cu->cublas = NULL;
        goto fail;
    }
    if ((rc = MMS_CUBLAS_CHECK(cublasSetStream(cu->cublas, cu->stream))) < 0 ||
        (rc = MMS_CUBLAS_CHECK(cublasSetMathMode(cu->cublas, CUBLAS_DEFAULT_MATH))) < 0)
        goto fail;
    if ((rc = MMS_CUDNN_CHECK(cudnnCreate(&cu->cudnn))) < 0) {
        cu->cudnn = NULL;
        goto fail;
    }
    if ((rc = MMS_CUDNN_CHECK(cudnnSetStream(cu->cudnn, cu->stream))) < 0)
        goto fail;
    static const char *const prec[] = {"fp32", "bf16", "fp16"};
    mms_log(MMS_LOG_INFO, "cuda: device %d: %s, compute %d.%d, %.1f GiB; convolutions in %s",
            cu->device, prop.name, prop.major, prop.minor,
            prop.totalGlobalMem / (1024.0 * 1048576.0), prec[cu->precision]);
    be->ctx = cb;
    return 0;
fail:
    if (cu->cudnn != NULL)
        cudnnDestroy(cu->cudnn);
    if (cu->cublas != NULL)
        cublasDestroy(cu->cublas);
    if (cu->stream != NULL)
        cudaStreamDestroy(cu->stream);
    free(cb);
    return rc;
}

static void
cuda_free(struct mms_backend *be)
{
    struct cuda_backend *cb = be->ctx;
    if (cb == NULL)
        return;
    struct mms_cuda *cu = &cb->cu;
    (void)cudaSetDevice(cu->device);
    if (!cu->lost)
        (void)MMS_CUDA_CHECK(cudaStreamSynchronize(cu->stream));
    (void)MMS_CUDNN_CHECK(cudnnDestroy(cu->cudnn));
    (void)MMS_CUBLAS_CHECK(cublasDestroy(cu->cublas));
    (void)MMS_CUDA_CHECK(cudaStreamDestroy(cu->stream));
    free(cb);
    be->ctx = NULL;
}

static int
cuda_buffer_alloc(struct mms_backend *be, size_t nbytes, struct mms_buffer *out)
{
    struct cuda_backend *cb = be->ctx;
    int rc = current(&cb->cu);
    if (rc < 0)
        return rc;
    void *p;
    if ((rc = dev_alloc(&p, (nbytes + 63) & ~(size_t)63, "the arena")) < 0)
        return rc;
    out->host = NULL;
    out->device = p;
    out->nbytes = nbytes;
    return 0;
}

static void
cuda_buffer_free(struct mms_backend *be, struct mms_buffer *buf)
{
    struct cuda_backend *cb = be->ctx;
    (void)cudaSetDevice(cb->cu.device);
    dev_free(buf->device);
    memset(buf, 0, sizeof *buf);
}

static int
cuda_sync(struct mms_cuda *cu)
{
    int rc = MMS_CUDA_CHECK(cudaStreamSynchronize(cu->stream));
    if (rc < 0)
        note_lost(cu);
    return rc;
}

static int
cuda_upload(struct mms_backend *be, struct mms_buffer *buf, size_t offset, const void *src,
            size_t nbytes)
{
    struct cuda_backend *cb = be->ctx;
    if (offset > buf->nbytes || nbytes > buf->nbytes - offset)
        return MMS_EINVAL;
    int rc = current(&cb->cu);
    if (rc < 0)
        return rc;
    if ((rc = MMS_CUDA_CHECK(cudaMemcpyAsync((char *)buf->device + offset, src, nbytes,
                                             cudaMemcpyHostToDevice, cb->cu.stream))) < 0) {
        note_lost(&cb->cu);
        return rc;
    }
    return cuda_sync(&cb->cu);
}

static int
cuda_download(struct mms_backend *be, void *dst, const struct mms_buffer *buf, size_t offset,
              size_t nbytes)
{
    struct cuda_backend *cb = be->ctx;
    if (offset > buf->nbytes || nbytes > buf->nbytes - offset)
        return MMS_EINVAL;
    int rc = current(&cb->cu);
    if (rc < 0)
        return rc;
    if ((rc = MMS_CUDA_CHECK(cudaMemcpyAsync(dst, (const char *)buf->device + offset, nbytes,
                                             cudaMemcpyDeviceToHost, cb->cu.stream))) < 0) {
        note_lost(&cb->cu);
        return rc;
    }
    return cuda_sync(&cb->cu);
}

static int
cuda_synchronize(struct mms_backend *be)
{
    struct cuda_backend *cb = be->ctx;
    int rc = current(&cb->cu);
    return rc < 0 ? rc : cuda_sync(&cb->cu);
}

static bool
cuda_supports_op(struct mms_backend *be, const struct mms_node *nd)
{
    (void)be;
    switch (nd->op) {
    case MMS_OP_CONV:
        return nd->u.conv.cin >= 1 && nd->u.conv.cout >= 1 && nd->u.conv.cin <= INT32_MAX &&
               nd->u.conv.cout <= INT32_MAX;
    case MMS_OP_DECONV: /* kernel = stride, no padding: each output voxel has one tap */
        for (int i = 0; i < 3; i++)
            if (nd->u.conv.k[i] < 1 || nd->u.conv.k[i] != nd->u.conv.stride[i] ||
                nd->u.conv.pad[i] != 0)
                return false;
        return nd->u.conv.cin >= 1 && nd->u.conv.cout >= 1 && nd->u.conv.w != NULL &&
               !nd->u.conv.accumulate;
    case MMS_OP_AVGPOOL:
        for (int i = 0; i < 3; i++)
            if (nd->u.up.stride[i] < 1 || nd->u.up.stride[i] > 1024)
                return false;
        return true;
    case MMS_OP_NORM:
    case MMS_OP_ADD_LRELU:
    case MMS_OP_MIXER:
    case MMS_OP_UP_CONCAT:
    case MMS_OP_TO_NCDHW:
    case MMS_OP_FROM_NCDHW:
        return true;
    default:
        return false;
    }
}

/* ------------------------------------------------------------------------ convolutions */
static cudnnDataType_t
conv_dtype(const struct mms_cuda *cu)
{
    return cu->precision == MMS_CUDA_BF16   ? CUDNN_DATA_BFLOAT16
           : cu->precision == MMS_CUDA_FP16 ? CUDNN_DATA_HALF
                                            : CUDNN_DATA_FLOAT;
}

static enum mms_k_ftype
conv_ftype(const struct mms_cuda *cu)
{
    return cu->precision == MMS_CUDA_BF16   ? MMS_K_BF16
           : cu->precision == MMS_CUDA_FP16 ? MMS_K_F16
                                            : MMS_K_F32;
}

static size_t
conv_esize(const struct mms_cuda *cu)
{
    return cu->precision == MMS_CUDA_FP32 ? sizeof(float) : 2;
}

static void
conv_fini(struct conv_state *c)
{
    if (c->x != NULL)
        (void)MMS_CUDNN_CHECK(cudnnDestroyTensorDescriptor(c->x));
    if (c->y != NULL)
        (void)MMS_CUDNN_CHECK(cudnnDestroyTensorDescriptor(c->y));
    if (c->w != NULL)
        (void)MMS_CUDNN_CHECK(cudnnDestroyFilterDescriptor(c->w));
    if (c->conv != NULL)
        (void)MMS_CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(c->conv));
    dev_free(c->wei);
    dev_free(c->bias);
    memset(c, 0, sizeof *c);
}

/* Descriptors and algorithm of a CONV node (no device memory yet). */
static int
conv_plan(struct mms_cuda *cu, const struct mms_graph *g, const struct mms_node *nd,
          struct conv_state *c)
{
    const struct mms_tdesc *s = &g->tensors[nd->src[0]], *d = &g->tensors[nd->dst];
    cudnnDataType_t dt = conv_dtype(cu);
    int xd[5] = {1, (int)s->c, (int)s->d, (int)s->h, (int)s->w};
    int yd[5] = {1, (int)d->c, (int)d->d, (int)d->h, (int)d->w};
    int wd[5] = {(int)d->c, (int)s->c, nd->u.conv.k[0], nd->u.conv.k[1], nd->u.conv.k[2]};
    int dil[3] = {1, 1, 1}, out[5];
    int rc;

    if (s->c != nd->u.conv.cin || d->c != nd->u.conv.cout ||
        s->c * mms__tdesc_voxels(s) > INT32_MAX || d->c * mms__tdesc_voxels(d) > INT32_MAX) {
        mms_log(MMS_LOG_ERR, "cuda: %s: shape out of cuDNN's range", nd->name);
        return MMS_ENOTSUP;
    }
    c->in_count = s->c * mms__tdesc_voxels(s);
    c->out_count = d->c * mms__tdesc_voxels(d);
    if ((rc = MMS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&c->x))) < 0)
        return c->x = NULL, rc;
    if ((rc = MMS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&c->y))) < 0)
        return c->y = NULL, rc;
    if ((rc = MMS_CUDNN_CHECK(cudnnCreateFilterDescriptor(&c->w))) < 0)
        return c->w = NULL, rc;
    if ((rc = MMS_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&c->conv))) < 0)
        return c->conv = NULL, rc;
    /* dims (N, C, D, H, W) with NDHWC strides: channels fastest, packed */
    int xs[5] = {xd[1] * xd[2] * xd[3] * xd[4], 1, xd[3] * xd[4] * xd[1], xd[4] * xd[1], xd[1]};
    int ys[5] = {yd[1] * yd[2] * yd[3] * yd[4], 1, yd[3] * yd[4] * yd[1], yd[4] * yd[1], yd[1]};
    if ((rc = MMS_CUDNN_CHECK(cudnnSetTensorNdDescriptor(c->x, dt, 5, xd, xs))) < 0 ||
        (rc = MMS_CUDNN_CHECK(cudnnSetTensorNdDescriptor(c->y, dt, 5, yd, ys))) < 0 ||
        (rc = MMS_CUDNN_CHECK(cudnnSetFilterNdDescriptor(c->w, dt, CUDNN_TENSOR_NHWC, 5, wd))) <
            0 ||
        (rc = MMS_CUDNN_CHECK(
             cudnnSetConvolutionNdDescriptor(c->conv, 3, nd->u.conv.pad, nd->u.conv.stride, dil,
                                             CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT))) < 0 ||
        (rc = MMS_CUDNN_CHECK(cudnnSetConvolutionMathType(
             c->conv, cu->precision == MMS_CUDA_FP32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH))) <
            0 ||
        (rc = MMS_CUDNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(c->conv, c->x, c->w, 5, out))) <
            0)
        return rc;
    if (memcmp(out, yd, sizeof out) != 0) {
        mms_log(MMS_LOG_ERR,
                "cuda: %s: cuDNN's output %dx%dx%dx%d differs from the graph's %dx%dx%dx%d",
                nd->name, out[1], out[2], out[3], out[4], yd[1], yd[2], yd[3], yd[4]);
        return MMS_ENOTSUP;
    }
    cudnnConvolutionFwdAlgoPerf_t perf[32];
    int max = 0, got = 0;
    if ((rc = MMS_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(cu->cudnn, &max))) < 0)
        return rc;
    if (max > 32)
        max = 32;
    if ((rc = MMS_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(cu->cudnn, c->x, c->w, c->conv,
                                                                     c->y, max, &got, perf))) < 0)
        return rc;
    /* deterministic algorithms first, each pass in cuDNN's order of preference */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < got && c->n_algos < MAX_ALGOS; i++) {
            if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > CONV_WS_CAP ||
                (perf[i].determinism == CUDNN_DETERMINISTIC) != (pass == 0))
                continue;
            c->algo[c->n_algos] = perf[i].algo;
            c->algo_ws[c->n_algos] = perf[i].memory;
            c->n_algos++;
        }
    }
    if (c->n_algos == 0) {
        mms_log(MMS_LOG_ERR, "cuda: %s: cuDNN offers no convolution algorithm", nd->name);
        return MMS_ENOTSUP;
    }
    mms_log(MMS_LOG_DEBUG, "cuda: %s: cuDNN algorithm %d (%zu bytes of workspace), %d in reserve",
            nd->name, (int)c->algo[0], c->algo_ws[0], c->n_algos - 1);
    return 0;
}

/* Device weights of a planned CONV node: (cout, cin, kD, kH, kW) -> (cout, kD, kH, kW, cin). */
static int
conv_upload(struct mms_cuda *cu, const struct mms_node *nd, struct conv_state *c, size_t *bytes)
{
    int64_t co = nd->u.conv.cout, ci = nd->u.conv.cin;
    int64_t kv = (int64_t)nd->u.conv.k[0] * nd->u.conv.k[1] * nd->u.conv.k[2];
    size_t count = (size_t)(co * ci * kv), fbytes = count * sizeof(float);
    float *host = malloc(fbytes);
    void *tmp = NULL;
    int rc;
    if (host == NULL)
        return MMS_ENOMEM;
    for (int64_t o = 0; o < co; o++)
        for (int64_t i = 0; i < ci; i++)
            for (int64_t k = 0; k < kv; k++)
                host[(o * kv + k) * ci + i] = nd->u.conv.w[(o * ci + i) * kv + k];
    if ((rc = dev_alloc(&c->wei, count * conv_esize(cu), nd->name)) < 0 ||
        (rc = dev_alloc((void **)&c->bias, (size_t)co * sizeof(float), nd->name)) < 0)
        goto out;
    if (nd->u.conv.b != NULL)
        rc = h2d(cu, c->bias, nd->u.conv.b, (size_t)co * sizeof(float));
    else /* no bias: zero, for the epilogue of the residual sum and the reduced precisions */
        rc = MMS_CUDA_CHECK(cudaMemsetAsync(c->bias, 0, (size_t)co * sizeof(float), cu->stream));
    if (rc < 0)
        goto out;
    if (cu->precision == MMS_CUDA_FP32) {
        rc = h2d(cu, c->wei, host, fbytes);
    } else {
        if ((rc = dev_alloc(&tmp, fbytes, nd->name)) < 0 || (rc = h2d(cu, tmp, host, fbytes)) < 0)
            goto out;
        struct mms_k_cast_args ca = {
            .src = tmp, .dst = c->wei, .count = (int64_t)count, .to = conv_ftype(cu)};
        if ((rc = mms_k_cast(&ca, cu->stream)) < 0 ||
            (rc = MMS_CUDA_CHECK(cudaStreamSynchronize(cu->stream))) < 0)
            goto out;
    }
    *bytes += count * conv_esize(cu) + (size_t)co * sizeof(float);
out:
    dev_free(tmp);
    free(host);
    return rc;
}

static bool
not_supported(cudnnStatus_t s)
{
    return s >= CUDNN_STATUS_NOT_SUPPORTED && s < CUDNN_STATUS_NOT_SUPPORTED + 1000;
}

/* One CONV node on sample pointers src, dst. */
static int
conv_run(struct mms_cuda *cu, struct graph_ctx *gc, const struct mms_node *nd, struct conv_state *c,
         const float *src, float *dst)
{
    const float alpha = 1.0f, beta = 0.0f;
    const void *x = src;
    void *y = dst;
    int rc;
    if (cu->precision != MMS_CUDA_FP32) {
        struct mms_k_cast_args ca = {
            .src = src, .dst = gc->xbuf, .count = c->in_count, .to = conv_ftype(cu)};
        if ((rc = mms_k_cast(&ca, cu->stream)) < 0)
            return rc;
        x = gc->xbuf;
        y = gc->ybuf;
    } else if (nd->u.conv.accumulate) {
        y = gc->ybuf;
    }
    for (;;) {
        cudnnStatus_t s = cudnnConvolutionForward(cu->cudnn, &alpha, c->x, x, c->w, c->wei, c->conv,
                                                  c->algo[c->cur], gc->conv_ws, gc->conv_ws_bytes,
                                                  &beta, c->y, y);
        if (s == CUDNN_STATUS_SUCCESS)
            break;
        if (not_supported(s) && c->cur + 1 < c->n_algos) {
            mms_log(MMS_LOG_NOTICE, "cuda: %s: cuDNN algorithm %d: %s; using algorithm %d",
                    nd->name, (int)c->algo[c->cur], cudnnGetErrorString(s),
                    (int)c->algo[c->cur + 1]);
            c->cur++;
            continue;
        }
        return MMS_CUDNN_CHECK(s);
    }
    if (y == dst && nd->u.conv.b == NULL)
        return 0; /* fp32, no bias, no residual sum: cuDNN wrote the result */
    const struct mms_k_conv_epilogue_args ea = {
        .y = y,
        .ytype = conv_ftype(cu),
        .dst = dst,
        .bias = c->bias,
        .l = c->out_count / nd->u.conv.cout,
        .c = nd->u.conv.cout,
        .accumulate = nd->u.conv.accumulate,
        .slope = nd->slope,
    };
    return mms_k_conv_epilogue(&ea, cu->stream);
}

/* ------------------------------------------------------------------------ DECONV, AVGPOOL */
/* Whether a DECONV or AVGPOOL node's tensors have the shapes its parameters say: DECONV
 * dst = src * stride with cin and cout channels, AVGPOOL dst = src / stride exactly. */
static bool
resample_shapes_ok(const struct mms_graph *g, const struct mms_node *nd)
{
    const struct mms_tdesc *s = &g->tensors[nd->src[0]], *d = &g->tensors[nd->dst];
    int64_t sv[3] = {s->d, s->h, s->w}, dv[3] = {d->d, d->h, d->w};
    if (nd->op == MMS_OP_DECONV) {
        if (s->c != nd->u.conv.cin || d->c != nd->u.conv.cout)
            return false;
        for (int i = 0; i < 3; i++)
            if (dv[i] != sv[i] * nd->u.conv.stride[i])
                return false;
        return true;
    }
    if (s->c != d->c)
        return false;
    for (int i = 0; i < 3; i++)
        if (sv[i] != dv[i] * nd->u.up.stride[i])
            return false;
    return true;
}

/* Device weights of a DECONV node: (cin, cout, kD, kH, kW) -> (kD, kH, kW, cin, cout), and
 * its bias when it has one. */
static int
deconv_upload(struct mms_cuda *cu, const struct mms_node *nd, struct node_state *st, size_t *bytes)
{
    int64_t co = nd->u.conv.cout, ci = nd->u.conv.cin;
    int64_t kv = (int64_t)nd->u.conv.k[0] * nd->u.conv.k[1] * nd->u.conv.k[2];
    size_t count = (size_t)(co * ci * kv), fbytes = count * sizeof(float);
    float *host = malloc(fbytes);
    int rc;
    if (host == NULL)
        return MMS_ENOMEM;
    for (int64_t i = 0; i < ci; i++)
        for (int64_t o = 0; o < co; o++)
            for (int64_t k = 0; k < kv; k++)
                host[(k * ci + i) * co + o] = nd->u.conv.w[(i * co + o) * kv + k];
    if ((rc = dev_alloc((void **)&st->dwei, fbytes, nd->name)) < 0 ||
        (rc = h2d(cu, st->dwei, host, fbytes)) < 0)
        goto out;
    *bytes += fbytes;
    if (nd->u.conv.b != NULL) {
        if ((rc = dev_alloc((void **)&st->dbias, (size_t)co * sizeof(float), nd->name)) < 0 ||
            (rc = h2d(cu, st->dbias, nd->u.conv.b, (size_t)co * sizeof(float))) < 0)
            goto out;
        *bytes += (size_t)co * sizeof(float);
    }
out:
    free(host);
    return rc;
}

/* ------------------------------------------------------------------------ graphs */
static void
cuda_graph_fini(struct mms_backend *be, void *gctx)
{
    struct cuda_backend *cb = be->ctx;
    struct graph_ctx *gc = gctx;
    if (gc == NULL)
        return;
    (void)cudaSetDevice(cb->cu.device);
    if (!cb->cu.lost)
        (void)MMS_CUDA_CHECK(cudaStreamSynchronize(cb->cu.stream));
    for (struct graph_ctx **pp = &cb->graphs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == gc) {
            *pp = gc->next;
            break;
        }
    }
    for (int i = 0; gc->nodes != NULL && i < gc->n_nodes; i++) {
        struct node_state *s = &gc->nodes[i];
        conv_fini(&s->conv);
        dev_free(s->gamma);
        dev_free(s->beta);
        dev_free(s->dwei);
        dev_free(s->dbias);
        mms__cuda_mixer_free(s->mixer);
    }
    dev_free(gc->conv_ws);
    dev_free(gc->xbuf);
    dev_free(gc->ybuf);
    dev_free(gc->norm_ws);
    free(gc->nodes);
    free(gc);
}

static int
upload_vec(struct mms_cuda *cu, float **out, const float *src, int64_t n, const char *what)
{
    int rc = dev_alloc((void **)out, (size_t)n * sizeof(float), what);
    if (rc == 0)
        rc = h2d(cu, *out, src, (size_t)n * sizeof(float));
    return rc;
}

static int
cuda_graph_init(struct mms_backend *be, const struct mms_graph *g, void **gctx, size_t *fixed_bytes)
{
    struct cuda_backend *cb = be->ctx;
    struct mms_cuda *cu = &cb->cu;
    int rc = current(cu);
    if (rc < 0)
        return rc;
    struct graph_ctx *gc = calloc(1, sizeof *gc);
    if (gc == NULL)
        return MMS_ENOMEM;
    gc->g = g;
    size_t free_b = 0, total_b = 0;
    if ((rc = MMS_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b))) < 0)
        goto fail;
    if (g->arena_bytes > free_b) { /* before any descriptor: a huge tile is out of memory */
        mms_log(MMS_LOG_ERR,
                "cuda: out of device memory: the arena of one tile takes %.1f MiB, %.1f MiB are "
                "free of %.1f MiB",
                g->arena_bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0);
        rc = MMS_ENOMEM;
        goto fail;
    }
    rc = MMS_ENOMEM;
    if ((gc->nodes = calloc((size_t)g->n_nodes, sizeof *gc->nodes)) == NULL)
        goto fail;
    gc->n_nodes = g->n_nodes;

    /* 1. plan: descriptors, algorithms and the sizes of everything, no device memory yet */
    size_t weights = 0, xbuf = 0, ybuf = 0, esize = conv_esize(cu);
    int64_t max_c = 1;
    for (int i = 0; i < g->n_nodes; i++) {
        const struct mms_node *nd = &g->nodes[i];
        struct conv_state *c = &gc->nodes[i].conv;
        if (nd->op == MMS_OP_CONV) {
            if ((rc = conv_plan(cu, g, nd, c)) < 0)
                goto fail;
            int64_t kv = (int64_t)nd->u.conv.k[0] * nd->u.conv.k[1] * nd->u.conv.k[2];
            weights += (size_t)(nd->u.conv.cout * nd->u.conv.cin * kv) * esize +
                       (size_t)nd->u.conv.cout * sizeof(float);
            for (int j = 0; j < c->n_algos; j++)
                if (c->algo_ws[j] > gc->conv_ws_bytes)
                    gc->conv_ws_bytes = c->algo_ws[j];
            if (cu->precision != MMS_CUDA_FP32) {
                if ((size_t)c->in_count * esize > xbuf)
                    xbuf = (size_t)c->in_count * esize;
                if ((size_t)c->out_count * esize > ybuf)
                    ybuf = (size_t)c->out_count * esize;
            } else if (nd->u.conv.accumulate && (size_t)c->out_count * sizeof(float) > ybuf) {
                ybuf = (size_t)c->out_count * sizeof(float);
            }
        } else if (nd->op == MMS_OP_NORM) {
            int64_t ch = g->tensors[nd->src[0]].c;
            max_c = ch > max_c ? ch : max_c;
            weights += 2 * (size_t)ch * sizeof(float);
        } else if (nd->op == MMS_OP_DECONV || nd->op == MMS_OP_AVGPOOL) {
            if (!resample_shapes_ok(g, nd)) {
                mms_log(MMS_LOG_ERR, "cuda: %s: tensor shapes do not match the op's strides",
                        nd->name);
                rc = MMS_EINVAL;
                goto fail;
            }
            if (nd->op == MMS_OP_DECONV) {
                int64_t kv = (int64_t)nd->u.conv.k[0] * nd->u.conv.k[1] * nd->u.conv.k[2];
                weights += (size_t)(nd->u.conv.cout * nd->u.conv.cin * kv) * sizeof(float) +
                           (nd->u.conv.b != NULL ? (size_t)nd->u.conv.cout * sizeof(float) : 0);
            }
        }
    }

    /* 2. the batch: as many samples as fit in the free memory beside the fixed part */
    if ((rc = MMS_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b))) < 0)
        goto fail;
    size_t base = weights + gc->conv_ws_bytes + xbuf + ybuf, need = 0;
    gc->max_batch = 0;
    for (int b = 1; b <= MAX_BATCH; b++) {
        size_t nb = base + (size_t)b * g->arena_bytes + mms_k_instnorm_ws_bytes(max_c, b);
        for (int i = 0; i < g->n_nodes; i++) {
            const struct mms_node *nd = &g->nodes[i];
            if (nd->op == MMS_OP_MIXER)
                nb += mms__cuda_mixer_bytes(nd, mms__tdesc_voxels(&g->tensors[nd->src[0]]), b);
        }
        if (b == 1)
            need = nb;
        if (nb + MARGIN_BYTES > free_b)
            break;
        gc->max_batch = b;
    }
    if (need > free_b) {
        mms_log(MMS_LOG_ERR,
                "cuda: the network needs %.1f MiB of device memory for one tile (arena %.1f MiB), "
                "%.1f MiB are free of %.1f MiB",
                need / 1048576.0, g->arena_bytes / 1048576.0, free_b / 1048576.0,
                total_b / 1048576.0);
        rc = MMS_ENOMEM;
        goto fail;
    }
    if (gc->max_batch < 1)
        gc->max_batch = 1; /* within the margin: let the allocations tell */

    /* 3. device memory: weights, mixers, scratch */
    for (int i = 0; i < g->n_nodes; i++) {
        const struct mms_node *nd = &g->nodes[i];
        struct node_state *s = &gc->nodes[i];
        size_t mb = 0;
        switch (nd->op) {
        case MMS_OP_CONV:
            if ((rc = conv_upload(cu, nd, &s->conv, &gc->fixed_bytes)) < 0)
                goto fail;
            break;
        case MMS_OP_NORM: {
            int64_t ch = g->tensors[nd->src[0]].c;
            if ((rc = upload_vec(cu, &s->gamma, nd->u.norm.gamma, ch, nd->name)) < 0 ||
                (rc = upload_vec(cu, &s->beta, nd->u.norm.beta, ch, nd->name)) < 0)
                goto fail;
            gc->fixed_bytes += 2 * (size_t)ch * sizeof(float);
            break;
        }
        case MMS_OP_DECONV:
            if ((rc = deconv_upload(cu, nd, s, &gc->fixed_bytes)) < 0)
                goto fail;
            break;
        case MMS_OP_MIXER:
            rc = mms__cuda_mixer_new(cu, nd, mms__tdesc_voxels(&g->tensors[nd->src[0]]),
                                     gc->max_batch, &s->mixer, &mb);
            if (rc < 0) {
                s->mixer = NULL;
                goto fail;
            }
            gc->fixed_bytes += mb;
            break;
        default:
            break;
        }
    }
    size_t norm_ws = mms_k_instnorm_ws_bytes(max_c, gc->max_batch);
    if ((gc->conv_ws_bytes > 0 &&
         (rc = dev_alloc(&gc->conv_ws, gc->conv_ws_bytes, "the convolution workspace")) < 0) ||
        (xbuf > 0 && (rc = dev_alloc(&gc->xbuf, xbuf, "the convolution input")) < 0) ||
        (ybuf > 0 && (rc = dev_alloc(&gc->ybuf, ybuf, "the convolution output")) < 0) ||
        (rc = dev_alloc(&gc->norm_ws, norm_ws, "the instance norm workspace")) < 0)
        goto fail;
    gc->fixed_bytes += gc->conv_ws_bytes + xbuf + ybuf + norm_ws;
    mms_log(MMS_LOG_INFO,
            "cuda: graph of %d ops: %.1f MiB fixed, arena %.1f MiB per tile, batch %d "
            "(%.1f MiB free before)",
            g->n_nodes, gc->fixed_bytes / 1048576.0, g->arena_bytes / 1048576.0, gc->max_batch,
            free_b / 1048576.0);
    gc->next = cb->graphs;
    cb->graphs = gc;
    *gctx = gc;
    *fixed_bytes = gc->fixed_bytes;
    return 0;
fail:
    note_lost(cu);
    cuda_graph_fini(be, gc);
    return rc;
}

static int
cuda_max_batch(struct mms_backend *be, const struct mms_graph *g)
{
    struct cuda_backend *cb = be->ctx;
    for (struct graph_ctx *gc = cb->graphs; gc != NULL; gc = gc->next)
        if (gc->g == g)
            return gc->max_batch;
    return 1;
}

static int
run_node(struct mms_cuda *cu, const struct mms_graph *g, struct graph_ctx *gc, int i, char *base,
         int n)
{
    const struct mms_node *nd = &g->nodes[i];
    struct node_state *s = &gc->nodes[i];
    const struct mms_tdesc *src = &g->tensors[nd->src[0]];
    size_t sb = g->arena_bytes, sf = sb / sizeof(float); /* sample stride: bytes, floats */
    int rc = 0;
#define T(t) ((float *)(base + g->tensors[(t)].offset))
    switch (nd->op) {
    case MMS_OP_CONV:
        for (int k = 0; k < n && rc == 0; k++)
            rc = conv_run(cu, gc, nd, &s->conv, T(nd->src[0]) + k * sf, T(nd->dst) + k * sf);
        break;
    case MMS_OP_NORM: {
        const struct mms_k_instnorm_args a = {
            .x = T(nd->src[0]),
            .l = mms__tdesc_voxels(src),
            .c = src->c,
            .n = n,
            .stride = sf,
            .gamma = s->gamma,
            .beta = s->beta,
            .eps = nd->u.norm.eps,
            .lrelu = nd->u.norm.lrelu,
            .slope = nd->slope,
            .ws = gc->norm_ws,
        };
        rc = mms_k_instnorm(&a, cu->stream);
        break;
    }
    case MMS_OP_ADD_LRELU: {
        const struct mms_k_add_lrelu_args a = {
            .x = T(nd->src[0]),
            .y = T(nd->src[1]),
            .count = mms__tdesc_voxels(src) * src->c,
            .n = n,
            .stride = sf,
            .slope = nd->slope,
        };
        rc = mms_k_add_lrelu(&a, cu->stream);
        break;
    }
    case MMS_OP_MIXER: {
        float *taps[MMS_TAP__COUNT];
        bool any = false;
        for (int j = 0; j < MMS_TAP__COUNT; j++) {
            taps[j] = nd->u.mixer.tap[j] >= 0 ? T(nd->u.mixer.tap[j]) : NULL;
            any = any || taps[j] != NULL;
        }
        int64_t l = mms__tdesc_voxels(src);
        if (!any) {
            rc = mms__cuda_mixer_run(cu, nd, s->mixer, l, n, T(nd->src[0]), T(nd->dst), sf, NULL);
        } else { /* taps come from sample 0, alone */
            rc = mms__cuda_mixer_run(cu, nd, s->mixer, l, 1, T(nd->src[0]), T(nd->dst), sf, taps);
            if (rc == 0 && n > 1)
                rc = mms__cuda_mixer_run(cu, nd, s->mixer, l, n - 1, T(nd->src[0]) + sf,
                                         T(nd->dst) + sf, sf, NULL);
        }
        break;
    }
    case MMS_OP_UP_CONCAT: {
        const struct mms_tdesc *lo = src, *skip = &g->tensors[nd->src[1]];
        const struct mms_k_up_concat_args a = {
            .lo = T(nd->src[0]),
            .skip = T(nd->src[1]),
            .dst = T(nd->dst),
            .ld = lo->d,
            .lh = lo->h,
            .lw = lo->w,
            .flo = lo->c,
            .d = skip->d,
            .h = skip->h,
            .w = skip->w,
            .fskip = skip->c,
            .up = {nd->u.up.stride[0], nd->u.up.stride[1], nd->u.up.stride[2]},
            .n = n,
            .stride = sf,
        };
        rc = mms_k_up_concat(&a, cu->stream);
        break;
    }
    case MMS_OP_DECONV: {
        const struct mms_k_deconv_args a = {
            .src = T(nd->src[0]),
            .dst = T(nd->dst),
            .wei = s->dwei,
            .bias = s->dbias,
            .d = src->d,
            .h = src->h,
            .w = src->w,
            .cin = nd->u.conv.cin,
            .cout = nd->u.conv.cout,
            .t = {nd->u.conv.stride[0], nd->u.conv.stride[1], nd->u.conv.stride[2]},
            .n = n,
            .stride = sf,
        };
        rc = mms_k_deconv(&a, cu->stream);
        break;
    }
    case MMS_OP_AVGPOOL: {
        const struct mms_k_avgpool_args a = {
            .src = T(nd->src[0]),
            .dst = T(nd->dst),
            .d = src->d,
            .h = src->h,
            .w = src->w,
            .c = src->c,
            .t = {nd->u.up.stride[0], nd->u.up.stride[1], nd->u.up.stride[2]},
            .n = n,
            .stride = sf,
        };
        rc = mms_k_avgpool(&a, cu->stream);
        break;
    }
    case MMS_OP_TO_NCDHW:
    case MMS_OP_FROM_NCDHW: {
        bool to = nd->op == MMS_OP_TO_NCDHW;
        const struct mms_k_transpose_args a = {
            .src = T(nd->src[0]),
            .dst = T(nd->dst),
            .rows = to ? mms__tdesc_voxels(src) : src->c,
            .cols = to ? src->c : mms__tdesc_voxels(src),
            .n = n,
            .stride = sf,
        };
        rc = mms_k_transpose(&a, cu->stream);
        break;
    }
    default:
        rc = MMS_ENOTSUP;
        break;
    }
#undef T
    return rc;
}

static int
cuda_compute(struct mms_backend *be, const struct mms_graph *g, void *gctx,
             struct mms_buffer *arena, int n)
{
    struct cuda_backend *cb = be->ctx;
    struct mms_cuda *cu = &cb->cu;
    struct graph_ctx *gc = gctx;
    if (n < 1 || n > gc->max_batch || arena->device == NULL ||
        arena->nbytes < (size_t)n * g->arena_bytes || g->arena_bytes % sizeof(float) != 0)
        return MMS_EINVAL;
    int rc = current(cu);
    if (rc < 0)
        return rc;
    for (int i = 0; i < g->n_nodes; i++) {
        double t0 = 0.0;
        if (g->profile != NULL) {
            if ((rc = cuda_sync(cu)) < 0)
                return rc;
            t0 = mms_mono_s();
        }
        rc = run_node(cu, g, gc, i, arena->device, n);
        if (rc == 0 && g->profile != NULL)
            rc = cuda_sync(cu);
        if (rc < 0) {
            note_lost(cu);
            mms_log(MMS_LOG_ERR, "cuda: %s: %s", g->nodes[i].name, mms_strerror(rc));
            return rc;
        }
        if (g->profile != NULL)
            mms__profile_account(g->profile, g, &g->nodes[i], n, mms_mono_s() - t0);
    }
    return 0;
}

static int
cuda_buffer_zero(struct mms_backend *be, struct mms_buffer *buf)
{
    struct cuda_backend *cb = be->ctx;
    int rc = current(&cb->cu);
    if (rc < 0)
        return rc;
    if ((rc = MMS_CUDA_CHECK(cudaMemsetAsync(buf->device, 0, buf->nbytes, cb->cu.stream))) < 0)
        note_lost(&cb->cu);
    return rc;
}

/* The window slots: one launch each on the backend's stream, not waited for. */
static int
cuda_window_gather(struct mms_backend *be, const struct mms_buffer *vol,
                   const struct mms_k_window *w, struct mms_buffer *dst, size_t offset)
{
    struct cuda_backend *cb = be->ctx;
    if (!mms__window_gather_fits(vol, w, dst, offset))
        return MMS_EINVAL;
    int rc = current(&cb->cu);
    if (rc == 0)
        rc = mms_k_window_gather(vol->device, w, (float *)((char *)dst->device + offset),
                                 cb->cu.stream);
    if (rc < 0)
        note_lost(&cb->cu);
    return rc;
}

static int
cuda_window_scatter(struct mms_backend *be, const struct mms_buffer *src, size_t offset,
                    int channels, const struct mms_buffer *gauss, float scale,
                    const struct mms_k_window *w, int64_t pv, struct mms_buffer *acc)
{
    struct cuda_backend *cb = be->ctx;
    if (!mms__window_scatter_fits(src, offset, channels, gauss, w, pv, acc))
        return MMS_EINVAL;
    int rc = current(&cb->cu);
    if (rc == 0)
        rc = mms_k_window_scatter((const float *)((const char *)src->device + offset), channels,
                                  gauss->device, scale, w, pv, acc->device, cb->cu.stream);
    if (rc < 0)
        note_lost(&cb->cu);
    return rc;
}

static int
cuda_memory_info(struct mms_backend *be, size_t *free_bytes, size_t *total_bytes)
{
    struct cuda_backend *cb = be->ctx;
    int rc = current(&cb->cu);
    if (rc == 0 && (rc = MMS_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes))) < 0)
        note_lost(&cb->cu);
    return rc;
}

const struct mms_backend_ops mms__backend_cuda = {
    .api_version = MMS_BACKEND_API_VERSION,
    .name = "cuda",
    .init = cuda_init,
    .free = cuda_free,
    .buffer_alloc = cuda_buffer_alloc,
    .buffer_free = cuda_buffer_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .supports_op = cuda_supports_op,
    .graph_init = cuda_graph_init,
    .graph_fini = cuda_graph_fini,
    .max_batch = cuda_max_batch,
    .compute = cuda_compute,
    .synchronize = cuda_synchronize,
    .buffer_zero = cuda_buffer_zero,
    .window_gather = cuda_window_gather,
    .window_scatter = cuda_window_scatter,
    .memory_info = cuda_memory_info,
};
