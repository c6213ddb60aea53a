// The emulator's half and bfloat16 types and conversions (CudaEmuTest), against Java's. This
// file uses the toolkit headers, so its NVRTC check needs a CUDA toolkit's include folder.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// Conversions: float -> half and bfloat16 bits (round to nearest even), and back.
extern "C" __global__ void half_conversions(const float* in, unsigned short* half_bits, unsigned short* bf16_bits,
                                           float* half_back, float* bf16_back, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half h = __float2half(in[i]);
    __nv_bfloat16 b = __float2bfloat16(in[i]);
    half_bits[i] = __half_as_ushort(h);
    bf16_bits[i] = __bfloat16_as_ushort(b);
    half_back[i] = __half2float(h);
    bf16_back[i] = __bfloat162float(b);
}
