// Kernels with __launch_bounds__ for CudaEmuLaunchBoundsTest: a launch with more threads per block
// than a kernel's bound fails on a GPU, and cuda-emu must refuse it too. The bound is written as a
// constant and as a literal with a second argument, the two forms the module builder reads.

namespace {

constexpr int kThreads = 64;

}  // namespace

// out[t] = 2 in[t]
extern "C" __global__ void __launch_bounds__(kThreads) doubled_named_bound(const float* in, float* out) {
    out[threadIdx.x] = 2.0f * in[threadIdx.x];
}

// out[t] = 3 in[t]
extern "C" __global__ void __launch_bounds__(128, 2) tripled_literal_bound(const float* in, float* out) {
    out[threadIdx.x] = 3.0f * in[threadIdx.x];
}
