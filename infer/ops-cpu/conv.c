/* infer/ops-cpu: 3D convolution through oneDNN (mmunet.md 2.3 Conv), and the transposed
 * convolution of nnU-Net's decoders (kernel = stride, no padding) through oneDNN's
 * deconvolution.
 *
 * Activations are ndhwc (channels-last), the layout oneDNN's convolutions pick on x86 when
 * left free (bench/bench-forward reports the check), so no activation is ever reordered.
 * Weights are reordered once, into the layout the primitive chose (a transposed convolution's
 * come as PyTorch stores them, (cin, cout, k...), oneDNN's iodhw). Bias is fused, when there
 * is one; a skip
 * projection also fuses the residual sum and the LReLU as post-ops (dst = LReLU(conv + dst)).
 * In fp32, strict fp32 math: oneDNN's default (no implicit bf16 or tf32 down-conversion) is
 * kept. A convolution in bf16 (mmunet.md 3.2; which ones: backend-cpu.c) has bf16 input and
 * weights (the input rounded to nearest even by a oneDNN reorder just before it) and fp32
 * bias, accumulation and output, so everything around it stays as in fp32. */
#include "infer/ops-cpu/ops-cpu-impl.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

static int
dnnl_err(dnnl_status_t s, const char *call, const struct mms_node *nd)
{
    if (s == dnnl_success)
        return 0;
    mms_log(MMS_LOG_ERR, "%s: %s failed: oneDNN status %d", nd->name, call, (int)s);
    return s == dnnl_out_of_memory ? MMS_ENOMEM : MMS_ENOTSUP;
}

#define DNNL(call)                                                                                 \
    do {                                                                                           \
        if ((rc = dnnl_err((call), #call, nd)) < 0)                                                \
            goto fail;                                                                             \
    } while (0)

bool
mms__cpu_conv_bf16(const struct mms_cpu *cpu, const struct mms_node *nd, bool first)
{
    const int *k = nd->u.conv.k;
    return cpu->bf16 && !first && nd->op == MMS_OP_CONV && k[0] * k[1] * k[2] > 1;
}

int
mms__cpu_conv_init(struct mms_cpu *cpu, const struct mms_graph *g, const struct mms_node *nd,
                   bool bf16, struct mms_cpu_conv *c)
{
    const struct mms_tdesc *s = &g->tensors[nd->src[0]], *d = &g->tensors[nd->dst];
    const int *k = nd->u.conv.k;
    bool deconv = nd->op == MMS_OP_DECONV;
    dnnl_dims_t src_dims = {1, s->c, s->d, s->h, s->w};
    dnnl_dims_t dst_dims = {1, d->c, d->d, d->h, d->w};
    dnnl_dims_t wei_dims = {d->c, s->c, k[0], k[1], k[2]};
    dnnl_dims_t bias_dims = {d->c};
    dnnl_dims_t strides = {nd->u.conv.stride[0], nd->u.conv.stride[1], nd->u.conv.stride[2]};
    dnnl_dims_t pad = {nd->u.conv.pad[0], nd->u.conv.pad[1], nd->u.conv.pad[2]};
    /* right padding that makes oneDNN's output size equal ours (a transposed convolution
     * with kernel = stride has none) */
    dnnl_dims_t pad_r = {0, 0, 0};
    int64_t in[3] = {s->d, s->h, s->w}, out[3] = {d->d, d->h, d->w};
    for (int i = 0; i < 3 && !deconv; i++)
        pad_r[i] = (out[i] - 1) * strides[i] + k[i] - in[i] - pad[i];
    dnnl_memory_desc_t src_md, dst_md, wei_md, bias_md, user_wei_md;
    dnnl_convolution_desc_t cd;
    dnnl_deconvolution_desc_t dd;
    const dnnl_memory_desc_t *bias_p = nd->u.conv.b != NULL ? &bias_md : NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_memory_t user_wei = NULL;
    int rc = 0;

    dnnl_data_type_t in_type = bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t src_f32_md;
    dnnl_primitive_desc_t cpd = NULL;

    memset(c, 0, sizeof *c);
    DNNL(dnnl_memory_desc_init_by_tag(&src_md, 5, src_dims, in_type, dnnl_ndhwc));
    DNNL(dnnl_memory_desc_init_by_tag(&dst_md, 5, dst_dims, dnnl_f32, dnnl_ndhwc));
    DNNL(dnnl_memory_desc_init_by_tag(&wei_md, 5, wei_dims, in_type, dnnl_format_tag_any));
    DNNL(dnnl_memory_desc_init_by_tag(&user_wei_md, 5, wei_dims, dnnl_f32,
                                      deconv ? dnnl_iodhw : dnnl_oidhw));
    DNNL(dnnl_memory_desc_init_by_tag(&bias_md, 1, bias_dims, dnnl_f32, dnnl_x));
    if (deconv)
        DNNL(dnnl_deconvolution_forward_desc_init(&dd, dnnl_forward_inference,
                                                  dnnl_deconvolution_direct, &src_md, &wei_md,
                                                  bias_p, &dst_md, strides, pad, pad_r));
    else
        DNNL(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference,
                                                dnnl_convolution_direct, &src_md, &wei_md, bias_p,
                                                &dst_md, strides, pad, pad_r));
    DNNL(dnnl_primitive_attr_create(&attr));
    DNNL(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    if (nd->u.conv.accumulate) {
        DNNL(dnnl_post_ops_create(&po));
        DNNL(dnnl_post_ops_append_sum(po, 1.0f));
        DNNL(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, nd->slope, 0.0f));
        DNNL(dnnl_primitive_attr_set_post_ops(attr, po));
    }
    DNNL(dnnl_primitive_desc_create(&pd, deconv ? (const void *)&dd : (const void *)&cd, attr,
                                    cpu->engine, NULL));
    DNNL(dnnl_primitive_create(&c->prim, pd));

    const dnnl_memory_desc_t *w_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *sp_md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    c->scratch_bytes = sp_md != NULL ? dnnl_memory_desc_get_size(sp_md) : 0;
    c->wei_bytes = dnnl_memory_desc_get_size(w_md);
    c->wei_data = aligned_alloc(64, (c->wei_bytes + 63) & ~(size_t)63);
    if (c->wei_data == NULL) {
        rc = MMS_ENOMEM;
        goto fail;
    }
    /* the model's weights are read-only; oneDNN only reads a reorder's source */
    DNNL(dnnl_memory_create(&user_wei, &user_wei_md, cpu->engine, (void *)nd->u.conv.w));
    DNNL(dnnl_memory_create(&c->wei, w_md, cpu->engine, c->wei_data));
    DNNL(dnnl_reorder_primitive_desc_create(&rpd, &user_wei_md, cpu->engine, w_md, cpu->engine,
                                            NULL));
    DNNL(dnnl_primitive_create(&reorder, rpd));
    dnnl_exec_arg_t rargs[2] = {{DNNL_ARG_FROM, user_wei}, {DNNL_ARG_TO, c->wei}};
    DNNL(dnnl_primitive_execute(reorder, cpu->stream, 2, rargs));
    DNNL(dnnl_stream_wait(cpu->stream));

    DNNL(dnnl_memory_create(&c->src, &src_md, cpu->engine, DNNL_MEMORY_NONE));
    DNNL(dnnl_memory_create(&c->dst, &dst_md, cpu->engine, DNNL_MEMORY_NONE));
    if (nd->u.conv.b != NULL)
        DNNL(dnnl_memory_create(&c->bias, &bias_md, cpu->engine, (void *)nd->u.conv.b));
    if (c->scratch_bytes > 0)
        DNNL(dnnl_memory_create(&c->scratch, sp_md, cpu->engine, DNNL_MEMORY_NONE));
    if (bf16) {
        DNNL(dnnl_memory_desc_init_by_tag(&src_f32_md, 5, src_dims, dnnl_f32, dnnl_ndhwc));
        DNNL(dnnl_reorder_primitive_desc_create(&cpd, &src_f32_md, cpu->engine, &src_md,
                                                cpu->engine, NULL));
        DNNL(dnnl_primitive_create(&c->cvt, cpd));
        DNNL(dnnl_memory_create(&c->src_f32, &src_f32_md, cpu->engine, DNNL_MEMORY_NONE));
        c->src_bf16_bytes = dnnl_memory_desc_get_size(&src_md);
    }
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    mms_log(MMS_LOG_DEBUG, "%s: oneDNN %s", nd->name, impl != NULL ? impl : "?");

fail:
    dnnl_primitive_desc_destroy(cpd);
    dnnl_primitive_destroy(reorder);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(user_wei);
    dnnl_primitive_desc_destroy(pd);
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    if (rc < 0)
        mms__cpu_conv_fini(c);
    return rc;
}

int
mms__cpu_conv_run(struct mms_cpu *cpu, struct mms_cpu_conv *c, const float *src, float *dst,
                  void *scratch, void *src_bf16)
{
    if (c->cvt != NULL) {
        dnnl_memory_set_data_handle(c->src_f32, (void *)src);
        dnnl_memory_set_data_handle(c->src, src_bf16);
        dnnl_exec_arg_t cargs[2] = {{DNNL_ARG_FROM, c->src_f32}, {DNNL_ARG_TO, c->src}};
        if (dnnl_primitive_execute(c->cvt, cpu->stream, 2, cargs) != dnnl_success)
            return MMS_ENOTSUP;
    } else {
        dnnl_memory_set_data_handle(c->src, (void *)src);
    }
    dnnl_memory_set_data_handle(c->dst, dst);
    dnnl_exec_arg_t args[5] = {
        {DNNL_ARG_SRC, c->src}, {DNNL_ARG_WEIGHTS, c->wei}, {DNNL_ARG_DST, c->dst}};
    int nargs = 3;
    if (c->bias != NULL)
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, c->bias};
    if (c->scratch != NULL) {
        dnnl_memory_set_data_handle(c->scratch, scratch);
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, c->scratch};
    }
    if (dnnl_primitive_execute(c->prim, cpu->stream, nargs, args) != dnnl_success)
        return MMS_ENOTSUP;
    return 0;
}

void
mms__cpu_conv_fini(struct mms_cpu_conv *c)
{
    dnnl_primitive_destroy(c->prim);
    dnnl_primitive_destroy(c->cvt);
    dnnl_memory_destroy(c->src);
    dnnl_memory_destroy(c->src_f32);
    dnnl_memory_destroy(c->wei);
    dnnl_memory_destroy(c->bias);
    dnnl_memory_destroy(c->dst);
    dnnl_memory_destroy(c->scratch);
    free(c->wei_data);
    memset(c, 0, sizeof *c);
}
