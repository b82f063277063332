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
 * backend has synchronize(); the caller synchronizes before download(). */
#ifndef MMS_INFER_BACKEND_IMPL_H
#define MMS_INFER_BACKEND_IMPL_H

#include "infer/graph-impl.h"

#define MMS_BACKEND_API_VERSION 1

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
};

struct mms_backend {
    const struct mms_backend_ops *ops;
    void *ctx;
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

/* Wrappers that check optional slots. */
int mms__backend_synchronize(struct mms_backend *be);

#endif
