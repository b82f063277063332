/* infer: the registry of built backends, "cpu" first. This is the only file that may test
 * HAVE_CUDA (style.md 2.6); the CUDA backend joins the list here, under that macro. */
#include "infer/backend-impl.h"

const struct mms_backend_ops *const mms__backends[] = {
    &mms__backend_cpu,
#ifdef HAVE_CUDA
    &mms__backend_cuda,
#endif
    NULL,
};
