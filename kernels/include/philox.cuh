// Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011): 128 random bits as a pure function of a 128-bit counter and a 64-bit key, so any
// thread can draw any number without state. The twin of dev.tokenkernels.ops.cpu.Philox: integer
// arithmetic only, bit-identical on every backend (Java tests it against Random123's known answers).
#pragma once

namespace tk {

struct Philox4 {
    unsigned v[4];
};

__device__ __forceinline__ Philox4 philox4x32_10(unsigned c0, unsigned c1, unsigned c2, unsigned c3, unsigned k0,
                                                 unsigned k1) {
    const unsigned m0 = 0xD2511F53u, m1 = 0xCD9E8D57u, w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
#pragma unroll
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 += w0;
            k1 += w1;
        }
        unsigned hi0 = __umulhi(m0, c0), lo0 = m0 * c0;
        unsigned hi1 = __umulhi(m1, c2), lo1 = m1 * c2;
        unsigned n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    return Philox4{{c0, c1, c2, c3}};
}

// A uniform float in (0, 1) from 23 of the bits: (2 m + 1) 2^-24, exact (Philox.uniform).
__device__ __forceinline__ float philox_uniform(unsigned bits) {
    return __fmul_rn(__int2float_rn((int)(((bits >> 9) << 1) | 1u)), 0x1p-24f);
}

}  // namespace tk
