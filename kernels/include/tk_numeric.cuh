// Small numeric helpers shared by the kernels: special float values and fp32 views of the input
// dtypes. 16-bit inputs are decoded from their bits here rather than with the toolkit's
// cuda_fp16.h / cuda_bf16.h, which NVRTC does not ship: kernels compile with NVRTC alone.
#pragma once

namespace tk {

__device__ __forceinline__ float positive_infinity() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float negative_infinity() { return __int_as_float(0xff800000); }
__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fffffff); }
__device__ __forceinline__ bool is_nan(float x) { return x != x; }

// IEEE binary16 and bfloat16 values, as the bits Java and PyTorch store.
struct f16 {
    unsigned short bits;
};
struct bf16 {
    unsigned short bits;
};

__device__ __forceinline__ float to_float(float v) { return v; }

// Exact: normal and subnormal halves become floats by moving the bits into place and scaling by
// 2^112 (the exponent bias difference); infinities and NaNs keep their payload.
__device__ __forceinline__ float to_float(f16 v) {
    unsigned sign = (unsigned)(v.bits & 0x8000u) << 16;
    unsigned magnitude = v.bits & 0x7fffu;
    if (magnitude >= 0x7c00u) return __uint_as_float(sign | 0x7f800000u | ((magnitude & 0x3ffu) << 13));
    return __uint_as_float(sign | __float_as_uint(__uint_as_float(magnitude << 13) * 0x1p112f));
}

__device__ __forceinline__ float to_float(bf16 v) { return __uint_as_float((unsigned)v.bits << 16); }

// The dtype codes the Java side passes for a logits tensor of runtime-chosen dtype.
constexpr int kF32 = 0, kF16 = 1, kBf16 = 2;

// Element i of a tensor of dtype code `dtype`, as fp32.
__device__ __forceinline__ float load_float(const void* base, int dtype, long long i) {
    switch (dtype) {
        case kF16: return to_float(static_cast<const f16*>(base)[i]);
        case kBf16: return to_float(static_cast<const bf16*>(base)[i]);
        case kF32:
        default: return static_cast<const float*>(base)[i];
    }
}

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
