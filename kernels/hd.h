/* MMS_HD marks per-element math that compiles for both the host and the device. */
#ifndef MMS_KERNELS_HD_H
#define MMS_KERNELS_HD_H

#ifdef __CUDACC__
#define MMS_HD __host__ __device__
#else
#define MMS_HD
#endif

#endif
