/* infer: the backend boundary (style.md 2.6). A backend is a versioned table of function
 * pointers plus a context; slots are only appended, and MMS_BACKEND_API_VERSION rises with
 * them. The mms__backend_*() wrappers check the optional slots.
 *
 * Memory: the arena (activations and workspaces of a planned graph) lives where the backend
 * computes: host memory for the CPU, device memory for CUDA. Weights stay in the model's
 * read-only mapping; graph_init() prepares what the backend needs from them (reordered
 * convolution weights, device copies) and owns it until graph_fini().
 *
 * Batches: compute() runs n samples; the arena holds max_batch() samples side by side at a
 * stride of the graph's arena size. compute() may return before the work is done when the
 * backend has synchronize(); the caller synchronizes before download().
 *
 * The sliding window (API 2, optional, all three or none): the pipeline keeps the padded
 * volume, the Gaussian and the accumulator in backend buffers, fills the network's input from
 * the volume and adds its output to the accumulator without a host round trip
 * (kernels/window-math.h defines the map; mmunet.md 5.6, 5.7). They may be asynchronous like
 * compute(). */
#ifndef MMS_INFER_BACKEND_IMPL_H
#define MMS_INFER_BACKEND_IMPL_H

#include "infer/graph-impl.h"
#include "kernels/window-math.h"

#define MMS_BACKEND_API_VERSION 2

struct mms_backend;

/* A block of backend memory. host is set when the CPU can address it directly. */
struct mms_buffer {
    void *host;
    void *device;
    size_t nbytes;
};

struct mms_backend_ops {
    int api_version; /* MMS_BACKEND_API_VERSION the table was written for */
    const char *name;
    /* Start the backend; sets be->ctx. Returns 0, MMS_ENODEV, MMS_ECUDA, MMS_ENOMEM. */
    int (*init)(struct mms_backend *be, const struct mms_backend_params *p);
    /* Release everything init() made. */
    void (*free)(struct mms_backend *be);
    /* Allocate nbytes of arena memory (64-byte aligned). Returns 0 or MMS_ENOMEM. */
    int (*buffer_alloc)(struct mms_backend *be, size_t nbytes, struct mms_buffer *out);
    void (*buffer_free)(struct mms_backend *be, struct mms_buffer *buf);
    /* Copy host memory into buf at offset, or out of it. Returns 0 or a backend error. */
    int (*upload)(struct mms_backend *be, struct mms_buffer *buf, size_t offset, const void *src,
                  size_t nbytes);
    int (*download)(struct mms_backend *be, void *dst, const struct mms_buffer *buf, size_t offset,
                    size_t nbytes);
    /* Whether the backend can run this node (shapes and parameters included). */
    bool (*supports_op)(struct mms_backend *be, const struct mms_node *nd);
    /* Prepare the graph: per-node state (primitives, prepared weights), into *gctx.
     * *fixed_bytes receives the memory this holds beside the arena. */
    int (*graph_init)(struct mms_backend *be, const struct mms_graph *g, void **gctx,
                      size_t *fixed_bytes);
    void (*graph_fini)(struct mms_backend *be, void *gctx);
    /* Most samples one compute() call takes (the arena holds that many). */
    int (*max_batch)(struct mms_backend *be, const struct mms_graph *g);
    /* Run the graph on n samples in arena; may be asynchronous. */
    int (*compute)(struct mms_backend *be, const struct mms_graph *g, void *gctx,
                   struct mms_buffer *arena, int n);
    /* Optional: wait for the work compute() queued. */
    int (*synchronize)(struct mms_backend *be);
    /* API 2. Optional: set buf to zero bytes. */
    int (*buffer_zero)(struct mms_backend *be, struct mms_buffer *buf);
    /* Optional: dst at offset (w->p voxels) = the tile w of the volume vol, mirrored. */
    int (*window_gather)(struct mms_backend *be, const struct mms_buffer *vol,
                         const struct mms_k_window *w, struct mms_buffer *dst, size_t offset);
    /* Optional: for ch < channels and every network voxel i of the tile w,
     * acc[ch * pv + volume offset] += term(gauss[tile voxel], src[offset / 4 + ch * patch + i],
     * scale): the logits at offset (channel-first) back into a channels x pv accumulator. */
    int (*window_scatter)(struct mms_backend *be, const struct mms_buffer *src, size_t offset,
                          int channels, const struct mms_buffer *gauss, float scale,
                          const struct mms_k_window *w, int64_t pv, struct mms_buffer *acc);
    /* Optional: the device memory free and in all, now (a backend on host memory has none). */
    int (*memory_info)(struct mms_backend *be, size_t *free_bytes, size_t *total_bytes);
};

struct mms_backend {
    const struct mms_backend_ops *ops;
    void *ctx;
    int precision; /* enum mms_precision, as opened */
};

/* The registry (infer/backend-reg.c): the built backends, "cpu" first, NULL-terminated. */
extern const struct mms_backend_ops *const mms__backends[];

/* CPU backend (infer/backend-cpu.c). */
extern const struct mms_backend_ops mms__backend_cpu;

/* CUDA backend (infer/backend-cuda.c), in CUDA builds only. */
extern const struct mms_backend_ops mms__backend_cuda;

/* Add s seconds of node nd, run on n samples, to the profile p: its kind's time, and for a
 * convolution its floating-point operations. */
void mms__profile_account(struct mms_net_profile *p, const struct mms_graph *g,
                          const struct mms_node *nd, int n, double s);

/* Whether the window slots' arguments lie inside their buffers (a well-formed tile whose
 * voxels are in vol, or in the first pv floats of acc's channels; dst, src and gauss large
 * enough at float-aligned offsets). The backends check them before they touch memory. */
bool mms__window_gather_fits(const struct mms_buffer *vol, const struct mms_k_window *w,
                             const struct mms_buffer *dst, size_t offset);
bool mms__window_scatter_fits(const struct mms_buffer *src, size_t offset, int channels,
                              const struct mms_buffer *gauss, const struct mms_k_window *w,
                              int64_t pv, const struct mms_buffer *acc);

/* Wrappers that check optional slots. */
int mms__backend_synchronize(struct mms_backend *be);

#endif
