// cuda-emu: the device-side CUDA C++ surface, for compiling the unmodified kernels/*.cu with a
// host C++17 compiler. Force-included (-include cuda_emu.h) before every kernel source.
//
// Execution model (see cuda_emu_runtime.cpp): one OS thread runs one block at a time, with one
// fiber per CUDA thread. Fibers switch only at synchronization points (__syncthreads, warp
// shuffles and votes, __syncwarp), so a block-level barrier is a real barrier and a warp
// collective sees the values of every lane that takes part, as on hardware. (Between those points
// every thread runs in index order, so all warps move in step and a missing barrier often goes
// unseen: TOKENKERNELS_EMU_SCHEDULE=adversarial, see cuda_emu_runtime.cpp, is stricter.) Static
// __shared__ variables become thread_local: every fiber of a block shares them, and blocks that
// run at the same time on other OS threads get their own copies.
#pragma once

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define __CUDA_EMU__ 1

#define __global__
#define __device__
#define __host__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// Block-scope thread_local implies static storage: one copy per OS thread, i.e. per running block.
// `extern __shared__ T name[]` (dynamic shared memory) becomes an extern thread_local array whose
// definition the module builder generates in a separate translation unit.
#define __shared__ thread_local
#define __constant__ const

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

namespace tk_emu {

// What the runtime keeps for the fiber that is running on this OS thread.
struct ThreadContext {
    uint3 thread_idx;
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
    unsigned lane;
};

extern thread_local ThreadContext* current;

// Synchronization points; each suspends the calling fiber until the group completes.
// `line` and `file` name the barrier's call site, which the adversarial schedule checks is the
// same for every thread (a divergent __syncthreads is undefined).
void sync_block(int line, const char* file);
int sync_block_reduce(int predicate, int op, int line, const char* file);  // op: 0 count, 1 and, 2 or
enum WarpOp : int { WARP_SYNC, SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR, BALLOT, ANY, ALL, MATCH_ANY };
// Exchanges 8 bytes with the lanes of `mask`; returns the bits the lane receives (for votes:
// the ballot or the predicate result).
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t bits, int arg, int width);
unsigned active_mask();

template <typename T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffled values must be <= 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}

template <typename T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

}  // namespace tk_emu

#define threadIdx (tk_emu::current->thread_idx)
#define blockIdx (tk_emu::current->block_idx)
#define blockDim (tk_emu::current->block_dim)
#define gridDim (tk_emu::current->grid_dim)
#define warpSize 32

// Macros, so that each barrier knows its call site.
#define __syncthreads() tk_emu::sync_block(__LINE__, __FILE__)
#define __syncthreads_count(p) tk_emu::sync_block_reduce((p), 0, __LINE__, __FILE__)
#define __syncthreads_and(p) tk_emu::sync_block_reduce((p), 1, __LINE__, __FILE__)
#define __syncthreads_or(p) tk_emu::sync_block_reduce((p), 2, __LINE__, __FILE__)
inline void __syncwarp(unsigned mask = 0xffffffffu) { tk_emu::warp_collective(tk_emu::WARP_SYNC, mask, 0, 0, 32); }
inline unsigned __activemask() { return tk_emu::active_mask(); }

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize) {
    return tk_emu::from_bits<T>(tk_emu::warp_collective(tk_emu::SHFL_IDX, mask, tk_emu::to_bits(v), src_lane, width));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
    return tk_emu::from_bits<T>(tk_emu::warp_collective(tk_emu::SHFL_UP, mask, tk_emu::to_bits(v), (int)delta, width));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
    return tk_emu::from_bits<T>(tk_emu::warp_collective(tk_emu::SHFL_DOWN, mask, tk_emu::to_bits(v), (int)delta, width));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
    return tk_emu::from_bits<T>(tk_emu::warp_collective(tk_emu::SHFL_XOR, mask, tk_emu::to_bits(v), lane_mask, width));
}
inline unsigned __ballot_sync(unsigned mask, int p) {
    return (unsigned)tk_emu::warp_collective(tk_emu::BALLOT, mask, p != 0, 0, 32);
}
// The lanes of `mask` whose value has the same bits as the caller's (sm_70 and later).
template <typename T>
inline unsigned __match_any_sync(unsigned mask, T v) {
    static_assert(std::is_integral<T>::value || std::is_same<T, float>::value || std::is_same<T, double>::value,
                  "__match_any_sync takes a 32- or 64-bit integer, float or double");
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "__match_any_sync takes a 32- or 64-bit value");
    return (unsigned)tk_emu::warp_collective(tk_emu::MATCH_ANY, mask, tk_emu::to_bits(v), 0, 32);
}
inline int __any_sync(unsigned mask, int p) { return (int)tk_emu::warp_collective(tk_emu::ANY, mask, p != 0, 0, 32); }
inline int __all_sync(unsigned mask, int p) { return (int)tk_emu::warp_collective(tk_emu::ALL, mask, p != 0, 0, 32); }

// ---- Memory fences and cached loads. Blocks on other OS threads see memory through these. ----
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
template <typename T>
inline T __ldg(const T* p) { return *p; }

// ---- Atomics: real atomics, because blocks run in parallel on several OS threads. ----
template <typename T>
inline T tk_emu_atomic_add(T* p, T v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
template <typename T>
inline T tk_emu_atomic_update(T* p, T v, bool take_max) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    for (;;) {
        T next = take_max ? (v > old ? v : old) : (v < old ? v : old);
        if (next == old) return old;
        if (__atomic_compare_exchange_n(p, &old, next, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return old;
    }
}
inline int atomicAdd(int* p, int v) { return tk_emu_atomic_add(p, v); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return tk_emu_atomic_add(p, v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return tk_emu_atomic_add(p, v); }
// Floating-point adds by compare-and-swap: there is no fetch-add for float on the host.
template <typename T>
inline T tk_emu_atomic_add_float(T* p, T v) {
    T old;
    __atomic_load(p, &old, __ATOMIC_RELAXED);
    T next;
    do {
        next = old + v;
    } while (!__atomic_compare_exchange(p, &old, &next, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    return old;
}
inline float atomicAdd(float* p, float v) { return tk_emu_atomic_add_float(p, v); }
inline double atomicAdd(double* p, double v) { return tk_emu_atomic_add_float(p, v); }
inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicSub(unsigned* p, unsigned v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
inline int atomicMax(int* p, int v) { return tk_emu_atomic_update(p, v, true); }
inline unsigned atomicMax(unsigned* p, unsigned v) { return tk_emu_atomic_update(p, v, true); }
inline long long atomicMax(long long* p, long long v) { return tk_emu_atomic_update(p, v, true); }
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) { return tk_emu_atomic_update(p, v, true); }
inline int atomicMin(int* p, int v) { return tk_emu_atomic_update(p, v, false); }
inline unsigned atomicMin(unsigned* p, unsigned v) { return tk_emu_atomic_update(p, v, false); }
inline long long atomicMin(long long* p, long long v) { return tk_emu_atomic_update(p, v, false); }
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) { return tk_emu_atomic_update(p, v, false); }
template <typename T>
inline T tk_emu_atomic_cas(T* p, T expected, T desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;  // on failure the builtin stores the current value here; on success it is unchanged
}
inline int atomicCAS(int* p, int e, int d) { return tk_emu_atomic_cas(p, e, d); }
inline unsigned atomicCAS(unsigned* p, unsigned e, unsigned d) { return tk_emu_atomic_cas(p, e, d); }
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long e, unsigned long long d) {
    return tk_emu_atomic_cas(p, e, d);
}
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicExch(unsigned* p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicExch(unsigned long long* p, unsigned long long v) {
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
inline float atomicExch(float* p, float v) {
    float old;
    __atomic_exchange(p, &v, &old, __ATOMIC_SEQ_CST);
    return old;
}

// ---- Integer and bit intrinsics ----
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    return __builtin_bswap32(x);
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}

// ---- Float intrinsics. The fast variants (__expf, __logf, ...) are computed exactly here; the
// kernels' tolerances must hold for the hardware approximations too. ----
inline float __int_as_float(int x) { return tk_emu::from_bits<float>((uint32_t)x); }
inline int __float_as_int(float x) { return (int)(uint32_t)tk_emu::to_bits(x); }
inline float __uint_as_float(unsigned x) { return tk_emu::from_bits<float>(x); }
inline unsigned __float_as_uint(float x) { return (uint32_t)tk_emu::to_bits(x); }
inline double __longlong_as_double(long long x) { return tk_emu::from_bits<double>((uint64_t)x); }
inline long long __double_as_longlong(double x) { return (long long)tk_emu::to_bits(x); }
inline float __expf(float x) { return expf(x); }
inline float __exp2f(float x) { return exp2f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return x != x ? 0.0f : fminf(fmaxf(x, 0.0f), 1.0f); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)floorf(x); }
inline int __float2int_ru(float x) { return (int)ceilf(x); }
inline float __int2float_rn(int x) { return (float)x; }
using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;

#ifndef CUDART_INF_F
#define CUDART_INF_F __int_as_float(0x7f800000)
#endif
#ifndef CUDART_NAN_F
#define CUDART_NAN_F __int_as_float(0x7fffffff)
#endif

// ---- half and bfloat16 (storage types with the CUDA conversion functions, round to nearest even) ----
struct __half {
    unsigned short x;
};
struct __nv_bfloat16 {
    unsigned short x;
};
typedef __half half;
typedef __nv_bfloat16 nv_bfloat16;

inline float __half2float(__half h) {
    uint32_t sign = (uint32_t)(h.x & 0x8000u) << 16;
    uint32_t exp = (h.x >> 10) & 0x1fu;
    uint32_t man = h.x & 0x3ffu;
    if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000u | (man << 13));  // inf, NaN
    if (exp == 0) {
        float f = (float)man * 5.9604644775390625e-8f;  // subnormal: man * 2^-24
        return sign ? -f : f;
    }
    return __uint_as_float(sign | ((exp + 112) << 23) | (man << 13));
}
inline __half __float2half(float f) {
    uint32_t u = __float_as_uint(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    __half h;
    if (a >= 0x7f800000u) {  // inf or NaN (keep NaN quiet and non-zero)
        h.x = (unsigned short)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0));
        return h;
    }
    if (a >= 0x477ff000u) {  // rounds to >= 65520: overflow to inf
        h.x = (unsigned short)(sign | 0x7c00u);
        return h;
    }
    if (a < 0x38800000u) {  // below the smallest normal half: round to a subnormal (or zero)
        float mag = __uint_as_float(a);
        uint32_t q = (uint32_t)nearbyintf(mag * 16777216.0f);  // units of 2^-24, ties to even
        h.x = (unsigned short)(sign | q);
        return h;
    }
    uint32_t mant_rounded = a + 0xfffu + ((a >> 13) & 1u);  // round to nearest even on bit 13
    h.x = (unsigned short)(sign | ((mant_rounded - 0x38000000u) >> 13));
    return h;
}
inline float __bfloat162float(__nv_bfloat16 b) { return __uint_as_float((uint32_t)b.x << 16); }
inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u = __float_as_uint(f);
    __nv_bfloat16 b;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        b.x = (unsigned short)((u >> 16) | 0x40u);  // NaN stays NaN
        return b;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    b.x = (unsigned short)(u >> 16);
    return b;
}
inline float __low2float(__half h) { return __half2float(h); }
inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.x; }
inline __half __ushort_as_half(unsigned short x) { return __half{x}; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short x) { return __nv_bfloat16{x}; }

// ---- vector types used for wide loads ----
struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) int2 {
    int x, y;
};
struct alignas(16) int4 {
    int x, y, z, w;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
