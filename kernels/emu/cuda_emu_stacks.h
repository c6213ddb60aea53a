// cuda-emu: the fiber stacks that the driver stand-in (cuda_emu_driver.cpp) lends to every
// launch of every module (tk_emu_launch in cuda_emu_runtime.cpp). One pool per process keeps
// the stacks, so each is mapped, and its guard page protected, once: not per launch or module.
#pragma once

#include <cstddef>

// Plain structs and function pointers, as the driver and each module are separate libraries.

// `count` stacks of `stack_bytes` each. Slot i starts at memory + i * slot with a guard page;
// its stack is the top `stack_bytes` of the slot.
struct TkEmuStacks {
    char* memory;
    size_t bytes;
    size_t slot;
    size_t stack_bytes;
    unsigned count;
};

struct TkEmuStackPool {
    // Lends a set of at least `count` stacks; returns 0, or non-zero with a message in `error`.
    int (*take)(unsigned count, TkEmuStacks* stacks, char* error, size_t error_capacity);
    // Returns a set that `take` lent.
    void (*give)(const TkEmuStacks* stacks);
};
