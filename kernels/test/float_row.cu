// tk::FloatRow's stores, the gradients' rounding to F16 and BF16 (FloatRowTest), against Java's
// Float.floatToFloat16 and DType.floatToBf16.
#include "tk_numeric.cuh"

extern "C" __global__ void float_row_stores(const float* in, void* out, int dtype, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    tk::FloatRow(out, dtype, 0).set(i, in[i]);
}
