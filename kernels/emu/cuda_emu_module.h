// cuda-emu: what a generated module registration file needs to describe its kernels to the
// runtime. The module builder writes, per kernel source,
//
//   #include "kernel.cu"
//   #include "cuda_emu_module.h"
//   TK_EMU_KERNELS(TK_EMU_KERNEL(name_a, 256), TK_EMU_KERNEL(name_b, 0))
//
// Each entry records the parameter sizes (checked by the launcher against the Java signature),
// the first argument of the kernel's __launch_bounds__ (0 without one: a launch with more threads
// per block fails, as on a GPU) and a trampoline that calls the kernel with cuLaunchKernel's
// `void** kernelParams`.
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

namespace tk_emu {

struct KernelEntry {
    const char* name;
    void* function;
    void (*invoke)(void* function, void** args);
    int param_count;
    const int* param_sizes;
    int max_threads;  // __launch_bounds__'s maxThreadsPerBlock, 0 for none
};

template <typename... A, std::size_t... I>
void invoke_with(void* function, void** args, std::index_sequence<I...>) {
    auto kernel = reinterpret_cast<void (*)(A...)>(function);
    kernel(*static_cast<std::decay_t<A>*>(args[I])...);
    (void)args;
}

template <typename... A>
void invoke(void* function, void** args) {
    invoke_with<A...>(function, args, std::index_sequence_for<A...>{});
}

template <typename... A>
struct ParamSizes {
    static constexpr int value[sizeof...(A) + 1] = {(int)sizeof(std::decay_t<A>)..., 0};
};

template <typename... A>
KernelEntry entry(const char* name, void (*kernel)(A...), int max_threads) {
    return KernelEntry{name, reinterpret_cast<void*>(kernel), &invoke<A...>, (int)sizeof...(A), ParamSizes<A...>::value,
                       max_threads};
}

}  // namespace tk_emu

#define TK_EMU_KERNEL(name, max_threads) tk_emu::entry(#name, &name, (int)(max_threads))
#define TK_EMU_KERNELS(...)                                                  \
    namespace tk_emu {                                                       \
    extern const KernelEntry module_kernels[] = {__VA_ARGS__};               \
    extern const int module_kernel_count =                                   \
        (int)(sizeof(module_kernels) / sizeof(module_kernels[0]));          \
    }
