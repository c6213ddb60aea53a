// Exact selection over the masked entries of a score vector [N] (ops:
// dev.tokenkernels.ops.select.TokenSelection; CPU twin: TokenSelectionCpu).
//
// Radix select on order-preserving uint32 keys, 8 bits per pass. state (uint32 [5]) holds the
// key prefix and its mask, the index prefix and its mask, and the rank still to find among the
// entries matching both prefixes. Each pass is select_histogram (a grid-stride sweep: shared
// 256-bin histograms, one global atomic add per block and nonzero bin) and select_pick (one block:
// an inclusive scan of the 256 bins picks the digit and the residual rank, then clears the
// histogram). 4 passes over the key digits, high to low, then passes over the index digits of
// the entries with that key, so equal scores resolve to the lower index: the element is the one
// of that rank in (key, index) order, the same one the CPU finds. select_mask writes the masks.
#include "tk_numeric.cuh"

namespace {

// The float's bits as an unsigned key in the IEEE total order (-inf < -0 < +0 < +inf);
// complemented, the order is reversed (largest first).
__device__ __forceinline__ unsigned order_key(float x, int largest) {
    unsigned b = __float_as_uint(x);
    unsigned u = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return largest ? ~u : u;
}

constexpr int kKeyPrefix = 0, kKeyMask = 1, kIndexPrefix = 2, kIndexMask = 3, kRank = 4;

}  // namespace

extern "C" __global__ void __launch_bounds__(256)
    select_histogram(const float* scores, const unsigned char* mask, int has_mask, long long n, int largest,
                     int index_pass, int shift, const unsigned* state, unsigned* histogram) {
    __shared__ unsigned local[256];
    for (int b = threadIdx.x; b < 256; b += blockDim.x) local[b] = 0u;
    __syncthreads();
    const unsigned key_prefix = state[kKeyPrefix], key_mask = state[kKeyMask];
    const unsigned index_prefix = state[kIndexPrefix], index_mask = state[kIndexMask];
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        if (has_mask && !mask[i]) continue;  // before the key: an excluded entry may be NaN
        const unsigned key = order_key(scores[i], largest);
        if ((key & key_mask) != key_prefix || ((unsigned)i & index_mask) != index_prefix) continue;
        const unsigned digit = ((index_pass ? (unsigned)i : key) >> shift) & 255u;
        atomicAdd(&local[digit], 1u);
    }
    __syncthreads();
    for (int b = threadIdx.x; b < 256; b += blockDim.x)
        if (local[b]) atomicAdd(&histogram[b], local[b]);
}

// One block of 256 threads, thread t owning bin t.
extern "C" __global__ void __launch_bounds__(256)
    select_pick(unsigned* state, unsigned* histogram, int index_pass, int shift) {
    __shared__ unsigned scan[256];
    const unsigned t = threadIdx.x;
    const unsigned count = histogram[t];
    scan[t] = count;
    __syncthreads();
    for (unsigned offset = 1; offset < 256; offset <<= 1) {  // Hillis-Steele inclusive scan
        const unsigned add = t >= offset ? scan[t - offset] : 0u;
        __syncthreads();
        scan[t] += add;
        __syncthreads();
    }
    const unsigned rank = state[kRank];
    const unsigned inclusive = scan[t], exclusive = inclusive - count;
    __syncthreads();  // every thread has read the rank before the owner of the digit rewrites it
    if (exclusive < rank && rank <= inclusive) {  // exactly one bin: the rank is within the counted entries
        if (index_pass) {
            state[kIndexPrefix] |= t << shift;
            state[kIndexMask] |= 255u << shift;
        } else {
            state[kKeyPrefix] |= t << shift;
            state[kKeyMask] |= 255u << shift;
        }
        state[kRank] = rank - exclusive;
    }
    histogram[t] = 0u;
}

// mode 0: keep (key, i) <= (key_selected, selected), the first k in the order; mode 1: keep
// key >= key_selected (ascending keys), every entry at or above the quantile.
extern "C" __global__ void __launch_bounds__(256)
    select_mask(const float* scores, const unsigned char* mask, int has_mask, long long n, int largest, int mode,
                unsigned key_selected, long long selected, unsigned char* out) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        bool keep = false;
        if (!has_mask || mask[i]) {
            const unsigned key = order_key(scores[i], largest);
            keep = mode == 0 ? (key < key_selected || (key == key_selected && i <= selected)) : key >= key_selected;
        }
        out[i] = keep ? 1 : 0;
    }
}
