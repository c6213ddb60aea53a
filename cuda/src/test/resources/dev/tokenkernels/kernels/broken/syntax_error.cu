// A kernel that does not compile, for the compile-error tests.
extern "C" __global__ void syntax_error(float* out) {
    out[threadIdx.x] = undeclared_name * 2.0f;
}
