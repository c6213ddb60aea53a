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

// fp32 to bfloat16 bits, rounded to nearest even (as DType.floatToBf16 on the Java side): a NaN
// keeps its sign and high payload bits and is made quiet, where the rounding add could carry it
// into an infinity.
__device__ __forceinline__ unsigned short to_bf16_bits(float v) {
    unsigned b = __float_as_uint(v);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((b >> 16) | 0x40u);
    return (unsigned short)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

// fp32 to binary16 bits, rounded to nearest even, bit for bit as Java's Float.floatToFloat16 for
// every number: overflow to infinity from MAX_VALUE + 1/2 ulp up, halves' subnormals by a wider
// shift. A NaN stays a quiet NaN with its sign and high payload bits (as x86's conversion does;
// Java's own NaN bits differ between its interpreter and its compiled code).
__device__ __forceinline__ unsigned short to_f16_bits(float v) {
    unsigned b = __float_as_uint(v);
    unsigned sign = (b & 0x80000000u) >> 16;
    if (is_nan(v)) return (unsigned short)(sign | 0x7e00u | ((b >> 13) & 0x3ffu));
    float magnitude = fabsf(v);
    if (magnitude >= 0x1.ffep15f) return (unsigned short)(sign | 0x7c00u);  // max + 1/2 ulp
    if (magnitude <= 0x1.0p-25f) return (unsigned short)sign;                 // half the least subnormal
    int exponent = (int)((b >> 23) & 0xffu) - 127;
    int excess = 0;  // the extra shift of a binary16 subnormal
    unsigned hidden = 0;
    if (exponent < -14) {
        excess = -14 - exponent;
        exponent = -15;
        hidden = 0x00800000u;
    }
    unsigned significand = (b & 0x007fffffu) | hidden;
    unsigned result = significand >> (13 + excess);
    unsigned lsb = significand & (1u << (13 + excess));
    unsigned round = significand & (1u << (12 + excess));
    unsigned sticky = significand & ((1u << (12 + excess)) - 1u);
    if (round != 0 && (lsb | sticky) != 0) result++;
    return (unsigned short)(sign | (((unsigned)(exponent + 15) << 10) + result));
}

// A row of an output tensor of runtime-chosen dtype (a gradient): values are formed in fp32 and
// rounded once when stored. Empty (false) for a null base.
class FloatRow {
   public:
    __device__ FloatRow(void* base, int dtype, long long offset) : base_(base), dtype_(dtype), offset_(offset) {}
    __device__ explicit operator bool() const { return base_ != nullptr; }
    __device__ float get(long long j) const { return load_float(base_, dtype_, offset_ + j); }
    __device__ void set(long long j, float v) const {
        long long i = offset_ + j;
        switch (dtype_) {
            case kF16: static_cast<f16*>(base_)[i].bits = to_f16_bits(v); break;
            case kBf16: static_cast<bf16*>(base_)[i].bits = to_bf16_bits(v); break;
            case kF32:
            default: static_cast<float*>(base_)[i] = v;
        }
    }

   private:
    void* base_;
    int dtype_;
    long long offset_;
};

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
