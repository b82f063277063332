/* infer: the MM-UNet engine. Model files (mmunet.md section 4), backends (style.md 2.6) and
 * the forward pass of one tile (mmunet.md sections 2 and 3).
 *
 * This header is plain C with no backend type: daemon/ and tests see only these functions.
 * Threads: a model is read-only after mms_model_load() and may be shared; a backend and a
 * network are used by one thread at a time. */
#ifndef MMS_INFER_H
#define MMS_INFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cpus.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MMS_MAX_STAGES 8

/* ----------------------------------------------------------------------------- model card */
enum mms_biscan {
    MMS_BISCAN_SEPARATE,
    MMS_BISCAN_SHARED,
    MMS_BISCAN_VIM_V2,
};

/* The network family (architecture.family). The nnU-Net families are those of nnU-Net v2's
 * dynamic_network_architectures (README, "nnU-Net's standard networks"). */
enum mms_family {
    MMS_FAMILY_MMUNET,
    MMS_FAMILY_PLAIN,  /* PlainConvUNet */
    MMS_FAMILY_RESENC, /* ResidualEncoderUNet */
};

/* The `architecture` object of the card (mmunet.md 2.2, 2.6). */
struct mms_arch {
    enum mms_family family;
    int in_channels;
    int num_classes;
    int n_stages; /* S, 2..8 */
    int features[MMS_MAX_STAGES];
    int kernel[MMS_MAX_STAGES][3];
    int stride[MMS_MAX_STAGES][3];
    /* blocks per encoder stage: n_conv_per_stage (PlainConvUNet), n_blocks_per_stage
       (ResidualEncoderUNet); per decoder level: n_conv_per_stage_decoder for both */
    int n_blocks_encoder[MMS_MAX_STAGES];
    int n_blocks_decoder[MMS_MAX_STAGES - 1];
    int stem_blocks;      /* mmunet only */
    bool conv_bias;       /* nnU-Net families: convolutions have a bias (mmunet: always) */
    float norm_eps;       /* 1e-5 in version 1 */
    float negative_slope; /* 0.01 in version 1 */
    enum mms_biscan biscan;
    float merge_scale;
    bool inner_residual;
    uint32_t mamba_stages; /* bit s set: stage s has MetaBlocks */
    bool mamba_last_only;  /* mamba_blocks = "last" */
    float ln_eps;
    int d_state, d_conv, expand;
    int dt_rank; /* 0 = "auto": ceil(C/16) per stage */
    int n_ignorable;
    char **ignorable_tensors; /* globs with '*' only */
    /* A fold ensemble (optional key "ensemble"): n_members networks of this architecture
       whose logits are averaged; member i's tensors are "ensemble.<i>." + their name.
       1 and no names for a single network. */
    int n_members;
    char **member_names;
};

#define MMS_MAX_MEMBERS 16

struct mms_code {
    char *scheme, *code, *meaning;
};

/* Overrides of a label by PatientSex (mmunet.md 6); NULL/false members fall back. */
struct mms_label_sex {
    bool present;
    char *segment_label;
    bool has_category, has_type, has_rgb;
    struct mms_code category, type;
    uint8_t rgb[3];
};

struct mms_label {
    int id; /* 1..num_classes-1 */
    char *name, *segment_label;
    struct mms_code category, type, modifier;
    bool has_modifier;
    uint8_t rgb[3];
    struct mms_label_sex by_sex[3]; /* M, F, O */
};

enum mms_orientation {
    MMS_ORIENT_RAS,
    MMS_ORIENT_LPS,
};

struct mms_card {
    char *json; /* the card as stored */
    char *name, *version, *description, *license;
    struct mms_arch arch;
    struct {
        enum mms_orientation orientation;
        int transpose_forward[3], transpose_backward[3];
        double target_spacing_mm[3];
        bool crop_to_nonzero;
        double clip_low, clip_high, mean, std;
        int data_order, data_order_z, logits_order, logits_order_z;
        double anisotropy_threshold;
        int force_separate_z; /* -1 null, 0 false, 1 true */
    } pre;
    struct {
        int64_t patch[3];
        double tile_step;
        uint32_t mirror_axes; /* bit d: axis d is mirrored */
        double sigma_scale, peak;
        double pad_value;
    } inf;
    int n_labels;
    struct mms_label *labels; /* sorted by id */
    /* Postprocessing (optional key "postprocessing"), steps applied in order to the labels on
       the original grid: each keeps, of the voxels whose label is in the step's set, only the
       largest 26-connected component (every one of that size on a tie); the others become
       background. nnU-Net's remove_all_but_largest_component_from_segmentation. */
    int n_pp;
    struct mms_pp_step {
        uint64_t labels[4]; /* bit l: label l is in the set */
    } * pp;
    char *trainer, *date; /* provenance */
};

/* dt_rank of a Mamba on `channels` channels under arch (resolves "auto"). */
int mms_arch_dt_rank(const struct mms_arch *a, int channels);

/* ----------------------------------------------------------------------------- model file */
struct mms_model;

/* One tensor of a model or safetensors file, as F32. data points into the read-only mapping
 * (F32, 4-byte aligned) or into memory owned by the file object (converted or copied). */
struct mms_tensor {
    const char *name;
    int rank;
    int64_t shape[5];
    int64_t count;
    const float *data;
};

/* Map the model file at path and check every rule of mmunet.md 4.3.
 * why (why_len bytes, may be NULL) receives a one-line reason naming the file and the tensor
 * or key on failure. Unknown card keys outside `architecture` are logged at WARNING.
 * Ownership: *out is new, free with mms_model_free(). *out is untouched on failure.
 * Returns 0, MMS_EINVAL (NULL path or out), a negative -errno from open/mmap (MMS_ENOENT,
 * MMS_EACCES...), MMS_EMODEL or MMS_ENOMEM. Threads: any. */
int mms_model_load(const char *path, struct mms_model **out, char *why, size_t why_len);

/* Unmap and free; NULL is a no-op. */
void mms_model_free(struct mms_model *m);

/* The parsed card; owned by m. */
const struct mms_card *mms_model_card(const struct mms_model *m);

/* SHA-256 of the whole file, 64 lowercase hex digits; owned by m. */
const char *mms_model_sha256(const struct mms_model *m);

/* The tensor called name, or NULL. Ignorable tensors are not listed. */
const struct mms_tensor *mms_model_tensor(const struct mms_model *m, const char *name);

/* The networks of the file: 1, or the members of a fold ensemble (architecture.ensemble). */
int mms_model_members(const struct mms_model *m);

/* Tensor `name` (the network's name, mmunet.md 2.7) of member `member` (0 for a single
 * network), or NULL. */
const struct mms_tensor *mms_model_member_tensor(const struct mms_model *m, int member,
                                                 const char *name);

/* Number of tensors the network uses, and the number of their parameters. */
int mms_model_tensor_count(const struct mms_model *m);
int64_t mms_model_param_count(const struct mms_model *m);

/* ----------------------------------------------------------------------------- backends */
struct mms_backend;

/* Precision of the convolutions (mmunet.md 3.2): fp32, fp16 and bf16 on CUDA; fp32, and bf16
 * where oneDNN reports AVX512-BF16 or AMX, on the CPU. */
enum mms_precision { MMS_PRECISION_FP32, MMS_PRECISION_FP16, MMS_PRECISION_BF16 };

/* The name of an enum mms_precision value as [infer] precision spells it ("fp32", "fp16",
 * "bf16"), or "?" for another value. */
static inline const char *
mms_precision_name(int precision)
{
    return precision == MMS_PRECISION_FP32   ? "fp32"
           : precision == MMS_PRECISION_FP16 ? "fp16"
           : precision == MMS_PRECISION_BF16 ? "bf16"
                                             : "?";
}

struct mms_backend_params {
    int threads;   /* CPU threads; 0 = one per CPU of cpus, or of the calling thread's */
    int device;    /* GPU ordinal (CUDA) */
    int precision; /* enum mms_precision; 0 = fp32 */
    /* the CPUs the CPU backend computes on ([infer] cpus): the threads of each call run there
       and get the caller's CPUs back after; NULL or empty: wherever the caller may run */
    const struct mms_cpus *cpus;
};

/* NULL when the CPU backend computes in precision on this machine, else why not (a static
 * string). Threads: any. */
const char *mms_cpu_precision_why(int precision);

/* Open a backend by name: "cpu", "cuda", or "auto" (CUDA when built and a device starts,
 * else the CPU with a NOTICE naming the reason).
 * Ownership: *out is new, free with mms_backend_free().
 * Returns 0, MMS_EINVAL (unknown name), MMS_ENOTSUP (not built), MMS_ENODEV, MMS_ECUDA,
 * MMS_ENOMEM. Threads: any; the backend is then used by one thread at a time. */
int mms_backend_open(const char *name, const struct mms_backend_params *p,
                     struct mms_backend **out);
void mms_backend_free(struct mms_backend *be);
const char *mms_backend_name(const struct mms_backend *be);
/* The precision the backend computes in (enum mms_precision). */
int mms_backend_precision(const struct mms_backend *be);

/* The backend's device memory, free and in all, now. Returns 0, MMS_ENOTSUP for a backend on
 * host memory (the CPU), or a backend error. Threads: the backend's. */
int mms_backend_memory(struct mms_backend *be, size_t *free_bytes, size_t *total_bytes);

/* ----------------------------------------------------------------------------- network */
struct mms_net;

enum mms_net_flags {
    MMS_NET_TAPS = 1u << 0, /* keep every block output and the first MetaBlock's internals
                               (LN, mixer, delta, pre-gate y) readable by mms_net_tap() */
};

/* Build the graph of model m for tiles of shape tile (D, H, W), plan its arena, prepare the
 * backend (weights, primitives) and allocate everything a forward pass needs. For a fold
 * ensemble, one graph per member, prepared each with its weights, sharing one arena.
 * Ownership: m and be are borrowed and must outlive *out; free with mms_net_free().
 * Returns 0, MMS_EINVAL (tile not divisible by the strides), MMS_ENOMEM, or a backend error.
 * Threads: the backend's thread. */
int mms_net_new(const struct mms_model *m, struct mms_backend *be, const int64_t tile[3],
                unsigned flags, struct mms_net **out);
void mms_net_free(struct mms_net *n);

/* Bytes of the activation arena (all planned buffers, Mamba workspace included), and the
 * backend's fixed memory beside it (prepared weights, convolution scratchpad). Their sum is
 * what one network holds while it runs. */
size_t mms_net_arena_bytes(const struct mms_net *n);
size_t mms_net_fixed_bytes(const struct mms_net *n);
/* Tiles the backend runs in one pass; mms_net_forward() takes any count and splits it. */
int mms_net_max_batch(const struct mms_net *n);
/* Number of ops and of planned buffers; arena bytes if no buffer were reused. */
int mms_net_op_count(const struct mms_net *n);
size_t mms_net_unplanned_bytes(const struct mms_net *n);

/* The networks it runs: mms_model_members() of its model. */
int mms_net_members(const struct mms_net *n);

/* Run n_tiles tiles: in is (n_tiles, in_channels, D, H, W), logits (n_tiles, num_classes,
 * D, H, W), both float32, row-major; for an ensemble, the members' logits added in member
 * order and divided by their count (nnU-Net's mean). Nothing is allocated.
 * Returns 0, MMS_EINVAL, or a backend error. Threads: the backend's thread. */
int mms_net_forward(struct mms_net *n, const float *in, int n_tiles, float *logits);

/* Time spent per kind of op over the forward passes since profiling was switched on. */
struct mms_net_profile {
    double conv_s, conv_flop; /* convolutions: seconds and floating-point operations */
    double norm_s;            /* instance norm (+ LReLU) */
    double mixer_s;           /* LN + bidirectional Mamba */
    double other_s;           /* residual adds, upsampling, layout changes */
    int passes;
};

/* Switch per-op timing on (resetting the counters) or off; off by default. The counters are
 * written by mms_net_forward() and read here. Threads: the backend's thread. */
void mms_net_profile_enable(struct mms_net *n, bool on);
const struct mms_net_profile *mms_net_profile(const struct mms_net *n);

/* After a forward pass with MMS_NET_TAPS: copy the tensor called name (a block prefix such as
 * "encoder.stages.0.blocks.1", "decoder.levels.0.up", "logits", or "<first MetaBlock>.ln",
 * ".mixer", ".delta", ".y_pregate", ".delta_b", ".y_pregate_b") of the last tile into out,
 * in the layout of the reference: (C, D, H, W) for activations, (L, C) or (L, E) for tokens.
 * *count receives the element count; out may be NULL to query it.
 * Returns 0, MMS_ENOENT (no such tap) or MMS_EINVAL (capacity too small). */
int mms_net_tap(const struct mms_net *n, const char *name, float *out, size_t capacity,
                size_t *count);

#ifdef __cplusplus
}
#endif
#endif
