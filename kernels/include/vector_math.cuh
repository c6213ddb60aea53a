// Bit-exact twins of dev.tokenkernels.ops.cpu.VectorMath, for results that must be identical on
// every backend (e.g. the exponential race of gumbel_max.cuh). Every float operation is an explicit
// round-to-nearest intrinsic, in the order the Java code performs them, so NVRTC's default
// contraction of a * b + c into an fma (or a fast division) cannot change a bit; Java's lane-wise
// fma is the exactly rounded fused operation, as __fmaf_rn is.
#pragma once
#include "tk_numeric.cuh"

namespace tk {

// VectorMath.log: log x for x >= 0 (within 3 ulp), -inf for 0, +inf for +inf, NaN for NaN.
__device__ __forceinline__ float twin_log(float x) {
    const bool subnormal = x < 0x1.0p-126f;
    const float scaled = subnormal ? __fmul_rn(x, 8388608.0f) : x;
    const unsigned bits = __float_as_uint(scaled);
    const int exponent = (int)(bits >> 23) - 127;
    float m = __uint_as_float((bits & 0x007fffffu) | 0x3f800000u);  // [1, 2)
    const bool high = m >= 0x1.6a09e6p0f;                               // the float nearest sqrt(2), as Java rounds it
    if (high) m = __fmul_rn(m, 0.5f);
    float e = __int2float_rn(exponent);
    if (high) e = __fadd_rn(e, 1.0f);
    if (subnormal) e = __fsub_rn(e, 23.0f);
    const float s = __fdiv_rn(__fsub_rn(m, 1.0f), __fadd_rn(m, 1.0f));
    const float s2 = __fmul_rn(s, s);
    float series = __fmaf_rn(s2, 0x1.c71c72p-3f, 0x1.24924ap-2f);  // 2/9, 2/7 as Java rounds 2f / 9 ...
    series = __fmaf_rn(series, s2, 0x1.99999ap-2f);                 // 2/5
    series = __fmaf_rn(series, s2, 0x1.555556p-1f);                 // 2/3
    series = __fmaf_rn(series, s2, 2.0f);
    series = __fmul_rn(series, s);
    float result = __fmaf_rn(e, 0x1.62e43p-1f, series);  // + e ln 2
    if (x == 0.0f) result = negative_infinity();
    if (x == positive_infinity() || is_nan(x)) result = x;
    return result;
}

// VectorMath.expNonPositive: e^x for x <= 0 (within about 1 ulp for x >= -86), 0 below -86, NaN for
// NaN: n = round(x log2 e) by the 1.5 * 2^23 trick, r = x - n ln 2 (Cody-Waite), e^r by Horner
// (VectorMath's degree-6 fit, the same floats), then n added to the exponent bits. Positive x are
// outside the contract, as in Java.
__device__ __forceinline__ float twin_exp_nonpositive(float x) {
    const float round = 12582912.0f;                             // 1.5 * 2^23
    const float shifted = __fmaf_rn(x, 0x1.715476p+0f, round);   // log2 e
    const float n = __fsub_rn(shifted, round);
    float r = __fmaf_rn(n, -0x1.63p-1f, x);                      // -LN2_HIGH
    r = __fmaf_rn(n, 0x1.bd0106p-13f, r);                        // -LN2_LOW
    float p = __fmaf_rn(r, 0x1.687c24p-10f, 0x1.123b94p-7f);
    p = __fmaf_rn(p, r, 0x1.555b58p-5f);
    p = __fmaf_rn(p, r, 0x1.55548ep-3f);
    p = __fmaf_rn(p, r, 0x1.fffff8p-2f);
    p = __fmaf_rn(p, r, 1.0f);
    p = __fmaf_rn(p, r, 1.0f);
    // shifted's low bits hold n: shifted << 23 is n << 23, which added to p's bits scales p by 2^n.
    const float scaled = __uint_as_float(__float_as_uint(p) + (__float_as_uint(shifted) << 23));
    return x < -86.0f ? 0.0f : scaled;
}

}  // namespace tk
