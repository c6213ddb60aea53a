// Small numeric helpers shared by the kernels: special float values and fp32 views of the input
// dtypes. Kernels include toolkit headers only through here, so cuda-emu and NVRTC see the same.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace tk {

__device__ __forceinline__ float positive_infinity() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float negative_infinity() { return __int_as_float(0xff800000); }
__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fffffff); }
__device__ __forceinline__ bool is_nan(float x) { return x != x; }

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Elements of T in one 16-byte load: the widest load a thread issues (LDG.128).
template <typename T>
struct Pack16 {
    static constexpr int kCount = 16 / sizeof(T);
};

// Whether p may be read with 16-byte loads.
template <typename T>
__device__ __forceinline__ bool aligned16(const T* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

}  // namespace tk
