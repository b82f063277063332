/* infer: what the pipeline's sliding window on the backend needs of a network: its backend,
 * its arena, where each sample's input and output lie in it, and a compute without copies. */
#ifndef MMS_INFER_NET_IMPL_H
#define MMS_INFER_NET_IMPL_H

#include "infer/backend-impl.h"

struct mms_backend *mms__net_backend(struct mms_net *n);
struct mms_buffer *mms__net_arena(struct mms_net *n);

/* Whether the backend has the window slots, and whether the arena is device memory. */
bool mms__net_has_window(const struct mms_net *n);
bool mms__net_on_device(const struct mms_net *n);

/* Byte offsets in the arena of sample s's input (one channel of the tile) and output (the
 * classes' logits, channel-first). */
size_t mms__net_input_offset(const struct mms_net *n, int s);
size_t mms__net_output_offset(const struct mms_net *n, int s);

/* Run member `member`'s graph (0 for a single network) on the first nb samples of the arena
 * and wait for it. The samples' inputs may be overwritten. Returns 0 or a backend error. */
int mms__net_compute(struct mms_net *n, int member, int nb);

#endif
