/* Error codes: the tables generated from MMS_ERR_MAP. Threads: any. */
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *
mms_strerror(int err)
{
    switch (err) {
#define MMS_ERR_GEN(name, value, msg)                                                              \
    case MMS_##name:                                                                               \
        return msg;
        MMS_ERR_MAP(MMS_ERR_GEN)
#undef MMS_ERR_GEN
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        /* strerror() is not thread-safe; strerrordesc_np() returns a constant or NULL. */
        const char *s = strerrordesc_np(-err);
        if (s != NULL)
            return s;
    }
    return "unknown error";
}

const char *
mms_err_name(int err)
{
    switch (err) {
#define MMS_ERR_GEN(name, value, msg)                                                              \
    case MMS_##name:                                                                               \
        return #name;
        MMS_ERR_MAP(MMS_ERR_GEN)
#undef MMS_ERR_GEN
    default:
        return NULL;
    }
}

int
mms_err_errno(void)
{
    return errno > 0 ? -errno : MMS_EIO;
}

int
mms_why(char *why, size_t why_len, int rc, const char *fmt, ...)
{
    if (why != NULL && why_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return rc;
}
