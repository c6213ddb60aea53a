// cuda-emu runtime: runs a grid of CUDA blocks on host threads, one fiber per CUDA thread.
// Compiled into every emulated module (so a module is a self-contained shared library) and
// called through the functions at the bottom, which the driver stand-in (cuda_emu_driver.cpp)
// finds with dlsym.
//
// Scheduling: a block runs on one OS thread. The scheduler sweeps over the block's runnable
// fibers, running each until it reaches a synchronization point or exits. When a sweep leaves
// no fiber runnable, it completes every warp collective whose lanes have all arrived (computing
// every lane's result at once, so lanes never see a half-updated exchange), else the block
// barrier if every live thread waits at it, else it reports a deadlock. Threads that have
// exited count as arrived at barriers, as on current hardware.
#include "cuda_emu.h"
#include "cuda_emu_module.h"
#include "cuda_emu_stacks.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <link.h>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#define TK_EMU_EXPORT extern "C" __attribute__((visibility("default")))

namespace tk_emu {

extern const KernelEntry module_kernels[];
extern const int module_kernel_count;

thread_local ThreadContext* current = nullptr;

// The largest dynamic shared memory a launch may ask for (sm_90's opt-in maximum); the Java
// module builder (EmuModuleBuilder.MAX_DYNAMIC_SHARED) defines it and sizes the `extern __shared__`
// arrays with it.
constexpr unsigned kMaxDynamicShared = TK_EMU_MAX_DYNAMIC_SHARED;
// The most fiber stacks one launch borrows (a worker needs one per thread of the block). Each
// guard page costs two memory mappings, so this keeps a launch well inside the default
// vm.max_map_count of 65530 however many cores the host has.
constexpr unsigned long long kMaxLaunchStacks = 16384;

// ---- Context switch ----
#if defined(__x86_64__)
// Saves the callee-saved registers and the SSE/x87 control words on the current stack, stores
// the stack pointer in *save, and resumes the context whose stack pointer is `next`.
extern "C" void tk_emu_switch(void** save, void* next);
asm(R"(
    .text
    .p2align 4
    .globl tk_emu_switch
    .hidden tk_emu_switch
    .type tk_emu_switch,@function
tk_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size tk_emu_switch, .-tk_emu_switch
)");
#endif

// Failed: stopped by an invalid call; the block ends with the error it recorded.
enum class State { Runnable, AtBarrier, AtWarp, Done, Failed };

struct Fiber {
    ThreadContext ctx;
    State state = State::Done;
    unsigned linear = 0;
#if defined(__x86_64__)
    void* sp = nullptr;
#else
    ucontext_t uc;
#endif
    char* stack = nullptr;
    // Block barrier reductions, and the call site of the barrier the fiber waits at.
    int predicate = 0;
    int site_line = 0;
    const char* site_file = "";
    int barrier_count = 0;    // threads that arrived with a non-zero predicate
    int barrier_arrived = 0;  // threads that arrived (every live thread)
    // The warp collective this fiber waits in, and its result.
    WarpOp op = WARP_SYNC;
    unsigned mask = 0;
    uint64_t bits = 0;
    int arg = 0;
    int width = 32;
    uint64_t result = 0;
};

// One per OS thread that runs blocks: fibers with their stacks, reused block after block. The
// stacks are borrowed from the driver's pool for the launch.
struct Worker {
    const KernelEntry* kernel = nullptr;
    void** args = nullptr;
    dim3 grid, block;
    std::vector<Fiber> fibers;
    const TkEmuStackPool* pool = nullptr;
    TkEmuStacks stacks{};
    Fiber* running = nullptr;
    // TOKENKERNELS_EMU_SCHEDULE=adversarial: run_block's stricter order (see adversarial_schedule).
    bool adversarial = false;
    // Adversarial only: this OS thread's copy of the module's thread-local storage, which holds
    // every __shared__ variable, poisoned before each block.
    unsigned char* shared_block = nullptr;
    size_t shared_bytes = 0;
#if defined(__x86_64__)
    void* scheduler_sp = nullptr;
#else
    ucontext_t scheduler_uc;
#endif
    // Set before `error`, which may be left empty when there is no memory for it.
    bool failed = false;
    bool out_of_memory = false;
    std::string error;

    ~Worker() {
        if (stacks.memory) pool->give(&stacks);
    }
};

thread_local Worker* worker = nullptr;

void record_exception(Worker* w, const Fiber* f) noexcept;

[[noreturn]] void fiber_main() {
    Worker* w = worker;
    Fiber* f = w->running;
    bool threw = false;
    try {
        w->kernel->invoke(w->kernel->function, w->args);
    } catch (...) {
        // Nothing may unwind past the fiber's first frame. The handler ends before the switch
        // below: the exception being handled is per OS thread, not per fiber.
        record_exception(w, f);
        threw = true;
    }
    f->state = threw ? State::Failed : State::Done;
#if defined(__x86_64__)
    tk_emu_switch(&f->sp, w->scheduler_sp);
#else
    swapcontext(&f->uc, &w->scheduler_uc);
#endif
    std::abort();  // a finished fiber is never resumed
}

#if !defined(__x86_64__)
void fiber_entry_ucontext() { fiber_main(); }
#endif

// Runs `f` until it blocks or exits.
void resume(Worker* w, Fiber* f) {
    w->running = f;
    current = &f->ctx;
#if defined(__x86_64__)
    tk_emu_switch(&w->scheduler_sp, f->sp);
#else
    swapcontext(&w->scheduler_uc, &f->uc);
#endif
    current = nullptr;
}

// Suspends the running fiber and returns to the scheduler.
void suspend(Worker* w, Fiber* f) {
#if defined(__x86_64__)
    tk_emu_switch(&f->sp, w->scheduler_sp);
#else
    swapcontext(&f->uc, &w->scheduler_uc);
#endif
    current = &f->ctx;
}

bool prepare_fibers(Worker* w, unsigned count) {
    char message[256];
    if (w->pool->take(count, &w->stacks, message, sizeof message) != 0) {
        w->stacks = TkEmuStacks{};
        w->failed = true;
        w->error = message;
        return false;
    }
    w->fibers.assign(count, Fiber{});
    for (unsigned i = 0; i < count; i++)
        w->fibers[i].stack = w->stacks.memory + i * w->stacks.slot + (w->stacks.slot - w->stacks.stack_bytes);
    return true;
}

void start_fiber(Worker* w, Fiber& f) {
#if defined(__x86_64__)
    uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + w->stacks.stack_bytes) & ~uintptr_t(15);
    uint64_t* sp = reinterpret_cast<uint64_t*>(top);
    *--sp = 0;                                            // fiber_main's return address: never used
    *--sp = reinterpret_cast<uint64_t>(&fiber_main);      // where tk_emu_switch returns to
    for (int i = 0; i < 6; i++) *--sp = 0;               // rbp rbx r12..r15
    --sp;
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    reinterpret_cast<uint32_t*>(sp)[0] = mxcsr;
    reinterpret_cast<uint32_t*>(sp)[1] = fpucw;
    f.sp = sp;
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack;
    f.uc.uc_stack.ss_size = w->stacks.stack_bytes;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, fiber_entry_ucontext, 0);
#endif
    f.state = State::Runnable;
}

// Completes the warp collectives whose lanes have all arrived, in the warps whose first thread is
// in [from, to); returns whether any did.
bool complete_warp_collectives(Worker* w, unsigned count, unsigned from = 0, unsigned to = ~0u) {
    bool released = false;
    for (unsigned base = from; base < count && base < to; base += 32) {
        unsigned lanes = std::min(32u, count - base);
        Fiber* warp = &w->fibers[base];
        for (unsigned l = 0; l < lanes; l++) {
            if (warp[l].state != State::AtWarp) continue;
            unsigned mask = warp[l].mask;
            // The group: lanes of the mask that exist and have not exited.
            unsigned group = 0;
            bool complete = true;
            for (unsigned k = 0; k < lanes; k++) {
                if (!(mask >> k & 1u) || warp[k].state == State::Done) continue;
                group |= 1u << k;
                if (warp[k].state != State::AtWarp || warp[k].mask != mask) complete = false;
            }
            // A group without lane l is not l's to release; releasing an empty one would change
            // nothing and report progress forever.
            if (!complete || !(group >> l & 1u)) continue;
            for (unsigned k = 0; k < lanes; k++) {
                if ((group >> k & 1u) && warp[k].op != warp[l].op) {
                    w->failed = true;
                    w->error = "lanes of warp " + std::to_string(base / 32) +
                               " reached different warp collectives with the same mask";
                    return false;
                }
            }
            unsigned ballot = 0;
            for (unsigned k = 0; k < lanes; k++)
                if ((group >> k & 1u) && warp[k].bits != 0) ballot |= 1u << k;
            for (unsigned k = 0; k < lanes; k++) {
                if (!(group >> k & 1u)) continue;
                Fiber& f = warp[k];
                int width = f.width;
                unsigned segment = k & ~unsigned(width - 1);
                unsigned src = k;
                switch (f.op) {
                    case SHFL_IDX: src = segment + (unsigned(f.arg) & unsigned(width - 1)); break;
                    case SHFL_UP: src = (k - segment) >= unsigned(f.arg) ? k - unsigned(f.arg) : k; break;
                    case SHFL_DOWN: src = (k - segment) + unsigned(f.arg) < unsigned(width) ? k + unsigned(f.arg) : k; break;
                    case SHFL_XOR:
                        src = k ^ unsigned(f.arg);
                        if (src > (k | unsigned(width - 1))) src = k;  // later segments are out of reach
                        break;
                    default: break;
                }
                switch (f.op) {
                    case SHFL_IDX:
                    case SHFL_UP:
                    case SHFL_DOWN:
                    case SHFL_XOR:
                        // A source lane outside the group has no defined value; give the lane its own
                        // (adversarial schedule: a huge value, 0x7f7fdead as a float, as garbage shows on hardware).
                        f.result = (src < lanes && (group >> src & 1u)) ? warp[src].bits
                                   : src == k || !w->adversarial ? f.bits : 0x7f7fdead7f7fdeadull;
                        break;
                    case BALLOT: f.result = ballot; break;
                    case ANY: f.result = ballot != 0; break;
                    case ALL: f.result = ballot == group; break;
                    case MATCH_ANY: {
                        unsigned same = 0;
                        for (unsigned m = 0; m < lanes; m++)
                            if ((group >> m & 1u) && warp[m].bits == f.bits) same |= 1u << m;
                        f.result = same;
                        break;
                    }
                    case WARP_SYNC: f.result = 0; break;
                }
            }
            for (unsigned k = 0; k < lanes; k++)
                if (group >> k & 1u) warp[k].state = State::Runnable;
            released = true;
        }
    }
    return released;
}

std::string describe_deadlock(Worker* w, unsigned count, const dim3& block_idx) {
    unsigned at_barrier = 0, at_warp = 0, done = 0;
    std::string first_warp;
    for (unsigned i = 0; i < count; i++) {
        const Fiber& f = w->fibers[i];
        if (f.state == State::AtBarrier) at_barrier++;
        if (f.state == State::Done) done++;
        if (f.state == State::AtWarp) {
            if (at_warp++ == 0) {
                char buf[96];
                std::snprintf(buf, sizeof buf, " (first: thread %u with mask 0x%08x)", i, f.mask);
                first_warp = buf;
            }
        }
    }
    return "deadlock in block (" + std::to_string(block_idx.x) + "," + std::to_string(block_idx.y) + "," +
           std::to_string(block_idx.z) + "): " + std::to_string(at_barrier) + " threads wait at __syncthreads, " +
           std::to_string(at_warp) + " at warp collectives that cannot complete" + first_warp + ", " +
           std::to_string(done) + " exited";
}

// Finds the calling thread's block of this module's PT_TLS segment: the module is the object
// whose loaded segments contain this function.
int find_module_tls(dl_phdr_info* info, size_t, void* data) {
    Worker* w = static_cast<Worker*>(data);
    uintptr_t self = reinterpret_cast<uintptr_t>(&find_module_tls);
    bool ours = false;
    size_t tls = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr)& h = info->dlpi_phdr[i];
        if (h.p_type == PT_LOAD && self - (info->dlpi_addr + h.p_vaddr) < h.p_memsz) ours = true;
        if (h.p_type == PT_TLS) tls = h.p_memsz;
    }
    if (!ours) return 0;
    w->shared_block = static_cast<unsigned char*>(info->dlpi_tls_data);
    w->shared_bytes = w->shared_block ? tls : 0;
    return 1;
}

// Fills shared memory with 0xff bytes (NaN as floats, -1 as ints), as uninitialized shared memory
// holds garbage on hardware; the runtime's own thread-locals in the same block are kept.
void poison_shared(Worker* w) {
    if (!w->shared_block) {
        dl_iterate_phdr(find_module_tls, w);
        if (!w->shared_block) return;
    }
    ThreadContext* saved_current = current;
    Worker* saved_worker = worker;
    std::memset(w->shared_block, 0xff, w->shared_bytes);
    current = saved_current;
    worker = saved_worker;
}

// Whether every thread waiting at the block barrier waits at the same call site; if not, records
// the divergent __syncthreads as the block's error.
bool same_barrier(Worker* w, unsigned count) {
    const Fiber* first = nullptr;
    for (unsigned i = 0; i < count; i++) {
        const Fiber& f = w->fibers[i];
        if (f.state != State::AtBarrier) continue;
        if (!first) {
            first = &f;
        } else if (f.site_line != first->site_line || std::strcmp(f.site_file, first->site_file) != 0) {
            w->failed = true;
            w->error = "divergent __syncthreads in block (" + std::to_string(f.ctx.block_idx.x) + "," +
                       std::to_string(f.ctx.block_idx.y) + "," + std::to_string(f.ctx.block_idx.z) + "): thread " +
                       std::to_string(first->linear) + " waits at " + first->site_file + ":" +
                       std::to_string(first->site_line) + ", thread " + std::to_string(f.linear) + " at " +
                       f.site_file + ":" + std::to_string(f.site_line);
            return false;
        }
    }
    return true;
}

bool run_block(Worker* w, const dim3& block_idx) {
    unsigned count = w->block.x * w->block.y * w->block.z;
    if (w->adversarial) poison_shared(w);
    const bool reverse = ((block_idx.x + (unsigned long long)w->grid.x * (block_idx.y + (unsigned long long)w->grid.y * block_idx.z)) & 1) == 0;
    for (unsigned i = 0; i < count; i++) {
        Fiber& f = w->fibers[i];
        f.linear = i;
        f.ctx.thread_idx = uint3{i % w->block.x, (i / w->block.x) % w->block.y, i / (w->block.x * w->block.y)};
        f.ctx.block_idx = uint3{block_idx.x, block_idx.y, block_idx.z};
        f.ctx.block_dim = w->block;
        f.ctx.grid_dim = w->grid;
        f.ctx.lane = i % 32;
        start_fiber(w, f);
    }
    for (;;) {
        if (!w->adversarial) {
            for (unsigned i = 0; i < count && !w->failed; i++)
                if (w->fibers[i].state == State::Runnable) resume(w, &w->fibers[i]);
        } else {
            // One warp at a time: each runs through its warp collectives until it waits at the block
            // barrier (or exits) before the next warp starts, so a shared-memory hand-off between
            // warps that lacks a barrier reads poison or a value of the wrong phase. Even blocks run
            // their warps (and lanes) last first, odd blocks first first: a reader that runs ahead of
            // its writer shows in one, a writer that runs ahead of the last reader in the other.
            unsigned warps = (count + 31) / 32;
            for (unsigned k = 0; k < warps && !w->failed; k++) {
                unsigned base = 32 * (reverse ? warps - 1 - k : k);
                unsigned lanes = std::min(32u, count - base);
                do {
                    for (unsigned l = 0; l < lanes && !w->failed; l++) {
                        Fiber& f = w->fibers[base + (reverse ? lanes - 1 - l : l)];
                        if (f.state == State::Runnable) resume(w, &f);
                    }
                } while (!w->failed && complete_warp_collectives(w, count, base, base + 32));
            }
        }
        // Checked before the exit test: a failed thread must fail the launch even if every
        // other thread has finished.
        if (w->failed) return false;
        unsigned live = 0, at_barrier = 0;
        for (unsigned i = 0; i < count; i++) {
            State s = w->fibers[i].state;
            if (s != State::Done) live++;
            if (s == State::AtBarrier) at_barrier++;
        }
        if (live == 0) return true;
        if (complete_warp_collectives(w, count)) continue;
        if (w->failed) return false;
        if (at_barrier == live) {
            if (w->adversarial && !same_barrier(w, count)) return false;
            // Release the barrier; __syncthreads_count/and/or see the predicates of every live thread.
            int n = 0;
            for (unsigned i = 0; i < count; i++)
                if (w->fibers[i].state == State::AtBarrier && w->fibers[i].predicate) n++;
            for (unsigned i = 0; i < count; i++) {
                Fiber& f = w->fibers[i];
                if (f.state != State::AtBarrier) continue;
                f.barrier_count = n;
                f.barrier_arrived = (int)at_barrier;
                f.state = State::Runnable;
            }
            continue;
        }
        w->failed = true;
        w->error = describe_deadlock(w, count, block_idx);
        return false;
    }
}

const char* warp_op_name(WarpOp op) {
    switch (op) {
        case WARP_SYNC: return "__syncwarp";
        case SHFL_IDX: return "__shfl_sync";
        case SHFL_UP: return "__shfl_up_sync";
        case SHFL_DOWN: return "__shfl_down_sync";
        case SHFL_XOR: return "__shfl_xor_sync";
        case BALLOT: return "__ballot_sync";
        case ANY: return "__any_sync";
        case ALL: return "__all_sync";
        case MATCH_ANY: return "__match_any_sync";
    }
    return "warp collective";
}

// Records why the running thread cannot go on, naming the call and the thread; the first error wins.
void record_thread_error(Worker* w, const Fiber* f, const char* call, const std::string& message) {
    if (w->failed) return;
    w->failed = true;
    const uint3& b = f->ctx.block_idx;
    w->error = std::string(call) + " in thread " + std::to_string(f->linear) + " of block (" + std::to_string(b.x) +
               "," + std::to_string(b.y) + "," + std::to_string(b.z) + "): " + message;
}

// Records the exception being handled as the running thread's error; out of memory for the
// message itself, the block still fails, as out of memory.
void record_exception(Worker* w, const Fiber* f) noexcept {
    if (w->failed) return;  // the first failure is the one reported
    try {
        try {
            throw;
        } catch (const std::bad_alloc&) {
            w->out_of_memory = true;
            record_thread_error(w, f, "exception", "out of host memory (std::bad_alloc)");
        } catch (const std::exception& e) {
            record_thread_error(w, f, "exception", e.what());
        } catch (...) {
            record_thread_error(w, f, "exception", "unknown C++ exception");
        }
    } catch (...) {
        w->failed = true;
        w->out_of_memory = true;
    }
}

// Stops the running fiber for good after record_thread_error; the scheduler then fails the block.
// Callers must hold no objects that own memory, as their destructors never run.
[[noreturn]] void stop_thread(Worker* w, Fiber* f) {
    f->state = State::Failed;
    suspend(w, f);
    std::abort();  // a failed fiber is never resumed
}

// ---- Called by kernel code (declared in cuda_emu.h) ----

void sync_block(int line, const char* file) { sync_block_reduce(0, 0, line, file); }

int sync_block_reduce(int predicate, int op, int line, const char* file) {
    Worker* w = worker;
    Fiber* f = w->running;
    f->predicate = predicate != 0;
    f->site_line = line;
    f->site_file = file;
    f->state = State::AtBarrier;
    suspend(w, f);
    switch (op) {
        case 1: return f->barrier_count == f->barrier_arrived ? 1 : 0;
        case 2: return f->barrier_count > 0 ? 1 : 0;
        default: return f->barrier_count;
    }
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t bits, int arg, int width) {
    Worker* w = worker;
    Fiber* f = w->running;
    if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
        record_thread_error(w, f, warp_op_name(op),
                            "width " + std::to_string(width) + " is not a power of two in [1, 32]");
        stop_thread(w, f);
    }
    // CUDA requires the calling lane in the mask; no group could ever release it otherwise.
    if (!(mask >> f->ctx.lane & 1u)) {
        char text[96];
        std::snprintf(text, sizeof text, "mask 0x%08x does not include the calling lane %u", mask, f->ctx.lane);
        record_thread_error(w, f, warp_op_name(op), text);
        stop_thread(w, f);
    }
    f->op = op;
    f->mask = mask;
    f->bits = bits;
    f->arg = arg;
    f->width = width;
    f->state = State::AtWarp;
    suspend(w, f);
    return f->result;
}

unsigned active_mask() {
    Worker* w = worker;
    unsigned count = w->block.x * w->block.y * w->block.z;
    unsigned base = w->running->linear & ~31u;
    unsigned mask = 0;
    for (unsigned k = 0; k < 32 && base + k < count; k++)
        if (w->fibers[base + k].state != State::Done) mask |= 1u << k;
    return mask;
}

// ---- Grid execution ----

struct Launch {
    const KernelEntry* kernel;
    void** args;
    const TkEmuStackPool* stacks;
    dim3 grid, block;
    unsigned long long blocks;
    bool adversarial = false;
    std::atomic<unsigned long long> next{0};
    std::atomic<int> code{0};  // tk_emu_launch's result; the first failure sets it
    std::string error;
    std::atomic_flag error_lock = ATOMIC_FLAG_INIT;

    void fail(int failure, const char* message) noexcept {
        while (error_lock.test_and_set()) {
        }
        if (code.load() == 0) {
            try {
                error = message;
            } catch (...) {
                failure = 3;  // no memory for the message
            }
            code.store(failure);
        }
        error_lock.clear();
    }
};

// Runs blocks until none is left or the launch failed. Nothing may escape: this is a thread's
// entry, and an exception would leave the launch waiting for blocks that never run.
void run_blocks(Launch* launch) noexcept {
    Worker* saved = worker;
    try {
        Worker w;
        w.kernel = launch->kernel;
        w.args = launch->args;
        w.grid = launch->grid;
        w.block = launch->block;
        w.pool = launch->stacks;
        w.adversarial = launch->adversarial;
        worker = &w;
        bool ok = prepare_fibers(&w, w.block.x * w.block.y * w.block.z);
        while (ok && launch->code.load() == 0) {
            unsigned long long b = launch->next.fetch_add(1);
            if (b >= launch->blocks) break;
            dim3 idx(unsigned(b % launch->grid.x), unsigned(b / launch->grid.x % launch->grid.y),
                     unsigned(b / (unsigned long long)launch->grid.x / launch->grid.y));
            ok = run_block(&w, idx);
        }
        if (!ok) launch->fail(w.out_of_memory ? 3 : 1, w.error.c_str());
    } catch (const std::bad_alloc&) {
        launch->fail(3, "out of host memory (std::bad_alloc)");
    } catch (const std::exception& e) {
        launch->fail(1, e.what());
    } catch (...) {
        launch->fail(1, "unknown C++ exception");
    }
    worker = saved;
}

// TOKENKERNELS_EMU_SCHEDULE=adversarial, read at every launch (a test may change it): warps run one
// at a time (last first in even blocks, first first in odd ones), shuffles from lanes outside the
// group return a huge value, shared memory is filled with 0xff bytes before every block, and
// threads that wait at different __syncthreads call sites fail the launch.
// Results of a correct kernel do not change (up to the order of atomics); races that the default
// order hides (a missing __syncthreads between warps) show.
bool adversarial_schedule() noexcept {
    const char* mode = std::getenv("TOKENKERNELS_EMU_SCHEDULE");
    return mode && std::strcmp(mode, "adversarial") == 0;
}

void copy_message(const char* message, char* out, size_t capacity) noexcept {
    if (!out || capacity == 0) return;
    size_t n = strnlen(message, capacity - 1);
    std::memcpy(out, message, n);
    out[n] = '\0';
}

void copy_message(const std::string& message, char* out, size_t capacity) noexcept {
    copy_message(message.c_str(), out, capacity);
}

}  // namespace tk_emu

// ---- The module's exported interface ----

// The accessors only read constant tables, so they cannot throw; noexcept says so.
TK_EMU_EXPORT int tk_emu_kernel_count() noexcept { return tk_emu::module_kernel_count; }

TK_EMU_EXPORT const char* tk_emu_kernel_name(int kernel) noexcept {
    return kernel >= 0 && kernel < tk_emu::module_kernel_count ? tk_emu::module_kernels[kernel].name : nullptr;
}

TK_EMU_EXPORT int tk_emu_kernel_param_count(int kernel) noexcept {
    return kernel >= 0 && kernel < tk_emu::module_kernel_count ? tk_emu::module_kernels[kernel].param_count : -1;
}

TK_EMU_EXPORT int tk_emu_kernel_param_size(int kernel, int param) noexcept {
    if (kernel < 0 || kernel >= tk_emu::module_kernel_count) return -1;
    const tk_emu::KernelEntry& k = tk_emu::module_kernels[kernel];
    return param >= 0 && param < k.param_count ? k.param_sizes[param] : -1;
}

TK_EMU_EXPORT unsigned tk_emu_max_dynamic_shared() noexcept { return tk_emu::kMaxDynamicShared; }

// Runs the whole grid on up to `threads` OS threads (the caller's among them), with fiber stacks
// from `stacks`, and returns 0, or a non-zero code with a message in `error`: 2 for an invalid
// configuration, 1 for a failure while running (deadlock, invalid warp collective, no stacks,
// an exception), 3 for out of host memory. No exception escapes to the caller (the JVM).
TK_EMU_EXPORT int tk_emu_launch(int kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                unsigned bz, unsigned shared_bytes, void** args, int threads,
                                const TkEmuStackPool* stacks, char* error, size_t error_capacity) try {
    using namespace tk_emu;
    if (kernel < 0 || kernel >= module_kernel_count) {
        copy_message("no kernel with index " + std::to_string(kernel), error, error_capacity);
        return 2;
    }
    if (!stacks || !stacks->take || !stacks->give) {
        copy_message("no fiber stack pool", error, error_capacity);
        return 2;
    }
    unsigned long long block_threads = (unsigned long long)bx * by * bz;
    if (gx == 0 || gy == 0 || gz == 0 || block_threads == 0 || block_threads > 1024 || bz > 64 || gy > 65535 ||
        gz > 65535) {
        copy_message("invalid launch configuration: grid " + std::to_string(gx) + "x" + std::to_string(gy) + "x" +
                         std::to_string(gz) + ", block " + std::to_string(bx) + "x" + std::to_string(by) + "x" +
                         std::to_string(bz),
                     error, error_capacity);
        return 2;
    }
    const int bound = module_kernels[kernel].max_threads;
    if (bound > 0 && block_threads > (unsigned long long)bound) {
        // a GPU refuses the launch (too many resources requested): the kernel was built for fewer
        copy_message("block of " + std::to_string(block_threads) + " threads exceeds " +
                         module_kernels[kernel].name + "'s __launch_bounds__(" + std::to_string(bound) + ")",
                     error, error_capacity);
        return 2;
    }
    if (shared_bytes > kMaxDynamicShared) {
        copy_message("dynamic shared memory of " + std::to_string(shared_bytes) + " bytes exceeds the maximum " +
                         std::to_string(kMaxDynamicShared),
                     error, error_capacity);
        return 2;
    }
    Launch launch;
    launch.kernel = &module_kernels[kernel];
    launch.args = args;
    launch.stacks = stacks;
    launch.grid = dim3(gx, gy, gz);
    launch.block = dim3(bx, by, bz);
    launch.blocks = (unsigned long long)gx * gy * gz;
    launch.adversarial = adversarial_schedule();
    unsigned long long helpers =
        std::min({threads > 1 ? (unsigned long long)threads : 1ull, launch.blocks,
                  std::max(1ull, kMaxLaunchStacks / block_threads)}) - 1;
    std::vector<std::thread> pool;
    pool.reserve(helpers);  // may throw, but before any thread uses `launch`
    try {
        for (unsigned long long i = 0; i < helpers; i++) pool.emplace_back(run_blocks, &launch);
    } catch (...) {
        // Fewer threads than asked for: the ones that started (and this one) still run every block.
    }
    run_blocks(&launch);
    for (std::thread& t : pool) t.join();
    int code = launch.code.load();
    if (code != 0)
        copy_message(std::string(launch.kernel->name) + ": " +
                         (launch.error.empty() ? std::string("out of host memory") : launch.error),
                     error, error_capacity);
    return code;
} catch (const std::bad_alloc&) {
    tk_emu::copy_message("out of host memory (std::bad_alloc)", error, error_capacity);
    return 3;
} catch (const std::exception& e) {
    tk_emu::copy_message(e.what(), error, error_capacity);
    return 1;
} catch (...) {
    tk_emu::copy_message("unknown C++ exception", error, error_capacity);
    return 1;
}
