// cuda-emu driver: a host stand-in for libcuda. It exports the driver-API functions that the
// Java bindings (dev.tokenkernels.cuda.CudaDriver) call, with the same signatures and CUresult
// codes, so the memory, stream, event and launch code of the `cuda` backend runs unchanged in CI.
// Device memory is host memory; streams are synchronous; a module is a host shared library built
// from a kernel source by the module builder, loaded with cuModuleLoad(path).
//
// Memory is tracked so that copies, memsets and frees of addresses that were never allocated (or
// run past the end of an allocation) fail with CUDA_ERROR_INVALID_VALUE instead of corrupting
// the JVM. The message of the last failure on the calling thread is kept for tkEmuLastError().
// No C++ exception leaves an exported function: each becomes an error code (see caught()).
//
// The driver also keeps the fiber stacks that every module's launches borrow (cuda_emu_stacks.h).
#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "cuda_emu_stacks.h"

#define TK_EXPORT extern "C" __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

namespace {

enum : CUresult {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_FILE_NOT_FOUND = 301,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CUDA_ERROR_UNKNOWN = 999,
};

struct ErrorText {
    CUresult code;
    const char* name;
    const char* text;
};

const ErrorText kErrors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_FILE_NOT_FOUND, "CUDA_ERROR_FILE_NOT_FOUND", "file not found"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

thread_local std::string last_error;

CUresult fail(CUresult code, std::string message) {
    last_error = std::move(message);
    return code;
}

// fail() that cannot throw: with no memory for the message, it is left empty.
CUresult fail_quietly(CUresult code, const char* call, const char* what) noexcept {
    try {
        last_error = std::string(call) + ": " + what;
    } catch (...) {
        last_error.clear();
    }
    return code;
}

// The result for the exception being handled. Every exported function ends in it, as an
// exception escaping to the caller (the JVM, through FFM) is undefined behaviour.
CUresult caught(const char* call) noexcept {
    try {
        throw;
    } catch (const std::bad_alloc&) {
        return fail_quietly(CUDA_ERROR_OUT_OF_MEMORY, call, "out of host memory (std::bad_alloc)");
    } catch (const std::exception& e) {
        return fail_quietly(CUDA_ERROR_UNKNOWN, call, e.what());
    } catch (...) {
        return fail_quietly(CUDA_ERROR_UNKNOWN, call, "unknown C++ exception");
    }
}

bool initialized = false;

// ---- Memory ----
struct Allocation {
    size_t size;
    unsigned copies = 0;  // copies and memsets in progress: the memory must outlive them
    bool freed = false;   // cuMemFree came during a copy; the last copy frees it
};

std::mutex memory_lock;
std::map<uintptr_t, Allocation> allocations;  // by start address

// Holds the live allocation containing [address, address + bytes) while a copy or memset runs
// outside memory_lock, so large copies do not serialize every other call, and a cuMemFree on
// another thread meanwhile cannot pull the memory from under the copy.
class Pin {
  public:
    Pin(CUdeviceptr address, size_t bytes) {
        std::lock_guard<std::mutex> guard(memory_lock);
        auto it = allocations.upper_bound((uintptr_t)address);
        if (it == allocations.begin()) return;
        --it;
        Allocation& a = it->second;
        size_t offset = (uintptr_t)address - it->first;  // upper_bound: it->first <= address
        // Not `offset + bytes <= size`, which can wrap around.
        if (a.freed || bytes > a.size || offset > a.size - bytes) return;
        a.copies++;
        start_ = it->first;
    }

    ~Pin() {
        if (!start_) return;
        void* release = nullptr;
        {
            std::lock_guard<std::mutex> guard(memory_lock);
            auto it = allocations.find(start_);
            if (--it->second.copies == 0 && it->second.freed) {
                allocations.erase(it);
                release = (void*)start_;
            }
        }
        std::free(release);
    }

    Pin(const Pin&) = delete;
    Pin& operator=(const Pin&) = delete;

    bool held() const { return start_ != 0; }

  private:
    uintptr_t start_ = 0;
};

CUresult outside_allocations(const char* call, CUdeviceptr address, size_t bytes) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s: [0x%llx, +%zu bytes) is not inside a live device allocation", call,
                  (unsigned long long)address, bytes);
    return fail(CUDA_ERROR_INVALID_VALUE, buf);
}

int emulator_threads() {
    const char* env = std::getenv("TOKENKERNELS_EMU_THREADS");
    if (env && *env) {
        int n = std::atoi(env);
        if (n > 0) return n;
    }
    unsigned hw = std::thread::hardware_concurrency();
    return hw > 0 ? (int)hw : 1;
}

void copy_message(const char* message, char* out, size_t capacity) {
    if (!out || capacity == 0) return;
    size_t n = strnlen(message, capacity - 1);
    std::memcpy(out, message, n);
    out[n] = '\0';
}

// ---- Fiber stacks ----
// Mapping a stack and protecting its guard page are system calls, and every guard page splits
// the mapping (two entries against vm.max_map_count), so stacks are mapped once and kept here
// for every later launch of every module. Sets grow to the largest block seen.
constexpr size_t kStackBytes = 256u * 1024u;
std::mutex stacks_lock;
std::vector<TkEmuStacks> spare_stacks;
std::atomic<unsigned long long> stacks_mapped{0};

std::string errno_text(int error) { return std::system_category().message(error); }

void unmap_stacks(const TkEmuStacks& stacks) {
    if (stacks.memory) munmap(stacks.memory, stacks.bytes);
}

// Maps `count` stacks, each above a guard page, into `out`; false with `message` on failure.
bool map_stacks(unsigned count, TkEmuStacks* out, std::string& message) {
    long page = sysconf(_SC_PAGESIZE);
    size_t guard = page > 0 ? (size_t)page : 4096;
    size_t slot = guard + kStackBytes;
    size_t bytes = slot * count;
    void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) {
        message = "cannot map " + std::to_string(bytes) + " bytes of fiber stacks: " + errno_text(errno);
        return false;
    }
    char* base = static_cast<char*>(memory);
    for (unsigned i = 0; i < count; i++) {
        // An overflow then faults instead of silently overwriting the neighbouring fiber's stack.
        if (mprotect(base + i * slot, guard, PROT_NONE) != 0) {
            int error = errno;
            munmap(memory, bytes);
            message = "cannot protect the guard page of fiber stack " + std::to_string(i + 1) + " of " +
                      std::to_string(count) + ": " + errno_text(error);
            if (error == ENOMEM) message += " (each guard page is a memory mapping; see vm.max_map_count)";
            return false;
        }
    }
    *out = TkEmuStacks{base, bytes, slot, kStackBytes, count};
    stacks_mapped += count;
    return true;
}

// The pool's functions are called by module code: they report failures, they never throw.
int take_stacks(unsigned count, TkEmuStacks* out, char* error, size_t error_capacity) noexcept try {
    TkEmuStacks found{};
    {
        std::lock_guard<std::mutex> guard(stacks_lock);
        auto largest = std::max_element(spare_stacks.begin(), spare_stacks.end(),
                                        [](const TkEmuStacks& a, const TkEmuStacks& b) { return a.count < b.count; });
        if (largest != spare_stacks.end()) {
            found = *largest;
            spare_stacks.erase(largest);
        }
    }
    if (found.count >= count) {
        *out = found;
        return 0;
    }
    unmap_stacks(found);  // too small for this block: replaced by a set of its size
    std::string message;
    if (map_stacks(count, out, message)) return 0;
    // Short of memory or mappings: unmap the spare sets and try once more.
    std::vector<TkEmuStacks> spare;
    {
        std::lock_guard<std::mutex> guard(stacks_lock);
        spare.swap(spare_stacks);
    }
    for (const TkEmuStacks& s : spare) unmap_stacks(s);
    if (!spare.empty() && map_stacks(count, out, message)) return 0;
    copy_message(message.c_str(), error, error_capacity);
    return 1;
} catch (...) {
    copy_message("out of host memory while lending fiber stacks", error, error_capacity);
    return 1;
}

void give_stacks(const TkEmuStacks* stacks) noexcept {
    try {
        std::lock_guard<std::mutex> guard(stacks_lock);
        spare_stacks.push_back(*stacks);
    } catch (...) {
        unmap_stacks(*stacks);  // cannot keep it
    }
}

const TkEmuStackPool stack_pool = {take_stacks, give_stacks};

// ---- Modules and functions ----
struct Module {
    void* handle;
    int (*kernel_count)();
    const char* (*kernel_name)(int);
    int (*param_count)(int);
    int (*param_size)(int, int);
    int (*launch)(int, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void**, int,
                  const TkEmuStackPool*, char*, size_t);
};

struct Function {
    Module* module;
    int index;
};

struct Event {
    std::chrono::steady_clock::time_point time;
    bool recorded = false;
};

int context_token;  // the primary context's handle points here
int stream_token;

}  // namespace

// The message of the last failure on the calling thread. This and tkEmuStacksMapped only read
// state, so they cannot throw.
TK_EXPORT const char* tkEmuLastError() noexcept { return last_error.c_str(); }

// How many fiber stacks the process has mapped so far; tests check that launches reuse them.
TK_EXPORT unsigned long long tkEmuStacksMapped() noexcept { return stacks_mapped.load(); }

// The entry of kErrors for `error`, or null.
static const ErrorText* error_text(CUresult error) {
    for (const ErrorText& e : kErrors)
        if (e.code == error) return &e;
    return nullptr;
}

TK_EXPORT CUresult cuGetErrorName(CUresult error, const char** name) try {
    if (!name) return CUDA_ERROR_INVALID_VALUE;
    const ErrorText* e = error_text(error);
    *name = e ? e->name : nullptr;
    return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuGetErrorString(CUresult error, const char** text) try {
    if (!text) return CUDA_ERROR_INVALID_VALUE;
    const ErrorText* e = error_text(error);
    *text = e ? e->text : nullptr;
    return e ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuInit(unsigned flags) try {
    if (flags != 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuInit: flags must be 0");
    initialized = true;
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuDriverGetVersion(int* version) try {
    if (!version) return fail(CUDA_ERROR_INVALID_VALUE, __func__);
    *version = 13000;
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuDeviceGetCount(int* count) try {
    if (!initialized) return fail(CUDA_ERROR_NOT_INITIALIZED, "cuInit was not called");
    if (!count) return fail(CUDA_ERROR_INVALID_VALUE, __func__);
    *count = 1;
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuDeviceGet(CUdevice* device, int ordinal) try {
    if (!initialized) return fail(CUDA_ERROR_NOT_INITIALIZED, "cuInit was not called");
    if (!device) return fail(CUDA_ERROR_INVALID_VALUE, __func__);
    if (ordinal != 0) return fail(CUDA_ERROR_INVALID_DEVICE, "cuda-emu has one device, ordinal 0");
    *device = 0;
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuDeviceGetName(char* name, int length, CUdevice device) try {
    if (device != 0) return fail(CUDA_ERROR_INVALID_DEVICE, __func__);
    if (!name || length <= 0) return fail(CUDA_ERROR_INVALID_VALUE, __func__);
    std::snprintf(name, (size_t)length, "cuda-emu (host CPU, %d threads)", emulator_threads());
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuDeviceGetAttribute(int* value, int attribute, CUdevice device) try {
    if (device != 0) return fail(CUDA_ERROR_INVALID_DEVICE, __func__);
    if (!value) return fail(CUDA_ERROR_INVALID_VALUE, __func__);
    switch (attribute) {
        case 1: *value = 1024; return CUDA_SUCCESS;                 // max threads per block
        case 2: *value = 1024; return CUDA_SUCCESS;                 // max block dim x
        case 3: *value = 1024; return CUDA_SUCCESS;                 // max block dim y
        case 4: *value = 64; return CUDA_SUCCESS;                   // max block dim z
        case 5: *value = 2147483647; return CUDA_SUCCESS;           // max grid dim x
        case 6: *value = 65535; return CUDA_SUCCESS;                // max grid dim y
        case 7: *value = 65535; return CUDA_SUCCESS;                // max grid dim z
        case 8: *value = 48 * 1024; return CUDA_SUCCESS;            // shared memory per block
        case 10: *value = 32; return CUDA_SUCCESS;                  // warp size
        case 16: *value = emulator_threads(); return CUDA_SUCCESS;  // multiprocessors: one per host thread
        case 75: *value = 9; return CUDA_SUCCESS;                   // compute capability major
        case 76: *value = 0; return CUDA_SUCCESS;                   // compute capability minor
        case 97: *value = TK_EMU_MAX_DYNAMIC_SHARED; return CUDA_SUCCESS;         // shared memory per block (opt-in)
        default: return fail(CUDA_ERROR_NOT_SUPPORTED, "cuDeviceGetAttribute: attribute " + std::to_string(attribute) +
                                                           " is not emulated");
    }
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice device) try {
    if (device != 0) return fail(CUDA_ERROR_INVALID_DEVICE, __func__);
    if (!bytes) return fail(CUDA_ERROR_INVALID_VALUE, __func__);
    *bytes = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuDevicePrimaryCtxRetain(void** context, CUdevice device) try {
    if (!initialized) return fail(CUDA_ERROR_NOT_INITIALIZED, "cuInit was not called");
    if (device != 0) return fail(CUDA_ERROR_INVALID_DEVICE, __func__);
    if (!context) return fail(CUDA_ERROR_INVALID_VALUE, __func__);
    *context = &context_token;
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice device) try {
    return device == 0 ? CUDA_SUCCESS : fail(CUDA_ERROR_INVALID_DEVICE, __func__);
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuCtxSetCurrent(void* context) try {
    if (context != nullptr && context != &context_token) return fail(CUDA_ERROR_INVALID_CONTEXT, __func__);
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuCtxSynchronize() try {
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* address, size_t bytes) try {
    if (!address || bytes == 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemAlloc: size must be > 0");
    // 256-byte alignment, as cudaMalloc guarantees; sizes that would wrap when rounded up cannot exist.
    void* p = bytes <= SIZE_MAX - 255 ? std::aligned_alloc(256, (bytes + 255) / 256 * 256) : nullptr;
    if (!p) return fail(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc: cannot allocate " + std::to_string(bytes) + " bytes");
    // Device memory starts undefined on a GPU; the adversarial schedule (cuda_emu_runtime.cpp) makes
    // it 0xff bytes (NaN, -1), so a kernel that reads a buffer nobody wrote shows it.
    const char* schedule = std::getenv("TOKENKERNELS_EMU_SCHEDULE");
    if (schedule && std::strcmp(schedule, "adversarial") == 0) std::memset(p, 0xff, bytes);
    try {
        std::lock_guard<std::mutex> guard(memory_lock);
        allocations[(uintptr_t)p] = Allocation{bytes};
    } catch (...) {
        std::free(p);
        throw;
    }
    *address = (CUdeviceptr)(uintptr_t)p;
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuMemFree_v2(CUdeviceptr address) try {
    void* release = nullptr;
    {
        std::lock_guard<std::mutex> guard(memory_lock);
        auto it = allocations.find((uintptr_t)address);
        if (it == allocations.end() || it->second.freed)
            return fail(CUDA_ERROR_INVALID_VALUE, "cuMemFree: not a live device allocation");
        if (it->second.copies > 0) {
            it->second.freed = true;  // the last copy frees it
        } else {
            allocations.erase(it);
            release = (void*)(uintptr_t)address;
        }
    }
    std::free(release);
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr destination, const void* source, size_t bytes) try {
    Pin pin(destination, bytes);
    if (!pin.held()) return outside_allocations("cuMemcpyHtoD", destination, bytes);
    std::memcpy((void*)(uintptr_t)destination, source, bytes);
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuMemcpyDtoH_v2(void* destination, CUdeviceptr source, size_t bytes) try {
    Pin pin(source, bytes);
    if (!pin.held()) return outside_allocations("cuMemcpyDtoH", source, bytes);
    std::memcpy(destination, (const void*)(uintptr_t)source, bytes);
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuMemsetD8_v2(CUdeviceptr destination, unsigned char value, size_t count) try {
    Pin pin(destination, count);
    if (!pin.held()) return outside_allocations("cuMemsetD8", destination, count);
    std::memset((void*)(uintptr_t)destination, value, count);
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuMemsetD32_v2(CUdeviceptr destination, unsigned value, size_t count) try {
    if (destination % 4 != 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemsetD32: address not 4-byte aligned");
    if (count > SIZE_MAX / 4)
        return fail(CUDA_ERROR_INVALID_VALUE, "cuMemsetD32: " + std::to_string(count) + " words exceed the address space");
    Pin pin(destination, count * 4);
    if (!pin.held()) return outside_allocations("cuMemsetD32", destination, count * 4);
    unsigned* p = (unsigned*)(uintptr_t)destination;
    for (size_t i = 0; i < count; i++) p[i] = value;
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuStreamCreate(void** stream, unsigned flags) try {
    (void)flags;
    if (!stream) return fail(CUDA_ERROR_INVALID_VALUE, __func__);
    *stream = &stream_token;  // work runs synchronously, so every stream is the same
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuStreamSynchronize(void* stream) try {
    (void)stream;
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuStreamDestroy_v2(void* stream) try {
    return stream == &stream_token ? CUDA_SUCCESS : fail(CUDA_ERROR_INVALID_HANDLE, __func__);
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuEventCreate(void** event, unsigned flags) try {
    (void)flags;
    if (!event) return fail(CUDA_ERROR_INVALID_VALUE, __func__);
    *event = new Event();
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuEventRecord(void* event, void* stream) try {
    (void)stream;
    if (!event) return fail(CUDA_ERROR_INVALID_HANDLE, __func__);
    Event* e = static_cast<Event*>(event);
    e->time = std::chrono::steady_clock::now();
    e->recorded = true;
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuEventSynchronize(void* event) try {
    return event ? CUDA_SUCCESS : fail(CUDA_ERROR_INVALID_HANDLE, __func__);
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuEventElapsedTime(float* milliseconds, void* start, void* end) try {
    if (!milliseconds || !start || !end) return fail(CUDA_ERROR_INVALID_VALUE, __func__);
    Event* s = static_cast<Event*>(start);
    Event* e = static_cast<Event*>(end);
    if (!s->recorded || !e->recorded) return fail(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime: event not recorded");
    *milliseconds = std::chrono::duration<float, std::milli>(e->time - s->time).count();
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuEventDestroy_v2(void* event) try {
    if (!event) return fail(CUDA_ERROR_INVALID_HANDLE, __func__);
    delete static_cast<Event*>(event);
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuModuleLoad(void** module, const char* path) try {
    if (!module || !path) return fail(CUDA_ERROR_INVALID_VALUE, __func__);
    auto m = std::make_unique<Module>();  // before dlopen, so that its failure cannot leak the handle
    void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) return fail(CUDA_ERROR_FILE_NOT_FOUND, std::string("cuModuleLoad: ") + dlerror());
    m->handle = handle;
    m->kernel_count = (int (*)())dlsym(handle, "tk_emu_kernel_count");
    m->kernel_name = (const char* (*)(int))dlsym(handle, "tk_emu_kernel_name");
    m->param_count = (int (*)(int))dlsym(handle, "tk_emu_kernel_param_count");
    m->param_size = (int (*)(int, int))dlsym(handle, "tk_emu_kernel_param_size");
    m->launch = (decltype(m->launch))dlsym(handle, "tk_emu_launch");
    if (!m->kernel_count || !m->kernel_name || !m->param_count || !m->param_size || !m->launch) {
        dlclose(handle);
        return fail(CUDA_ERROR_INVALID_IMAGE, std::string("cuModuleLoad: ") + path + " is not a cuda-emu module");
    }
    *module = m.release();
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuModuleLoadData(void** module, const void* image) try {
    (void)module;
    (void)image;
    return fail(CUDA_ERROR_NOT_SUPPORTED,
                "cuModuleLoadData: cuda-emu cannot run CUBIN or PTX; load a host module with cuModuleLoad(path)");
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuModuleUnload(void* module) try {
    if (!module) return fail(CUDA_ERROR_INVALID_HANDLE, __func__);
    Module* m = static_cast<Module*>(module);
    dlclose(m->handle);
    delete m;
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuModuleGetFunction(void** function, void* module, const char* name) try {
    if (!function || !module || !name) return fail(CUDA_ERROR_INVALID_VALUE, __func__);
    Module* m = static_cast<Module*>(module);
    for (int i = 0, n = m->kernel_count(); i < n; i++) {
        if (std::strcmp(m->kernel_name(i), name) == 0) {
            // Functions live as long as their module, as in the real driver; they are small and
            // few, so they are not freed on unload.
            *function = new Function{m, i};
            return CUDA_SUCCESS;
        }
    }
    return fail(CUDA_ERROR_NOT_FOUND, std::string("cuModuleGetFunction: no kernel named ") + name);
} catch (...) {
    return caught(__func__);
}

// Parameter layout in the kernel's argument buffer: naturally aligned, in declaration order.
TK_EXPORT CUresult cuFuncGetParamInfo(void* function, size_t index, size_t* offset, size_t* size) try {
    if (!function) return fail(CUDA_ERROR_INVALID_HANDLE, __func__);
    Function* f = static_cast<Function*>(function);
    int count = f->module->param_count(f->index);
    if (index >= (size_t)count) return fail(CUDA_ERROR_INVALID_VALUE, __func__);
    size_t at = 0;
    for (size_t i = 0;; i++) {
        size_t s = (size_t)f->module->param_size(f->index, (int)i);
        size_t align = s >= 8 ? 8 : s;
        at = (at + align - 1) / align * align;
        if (i == index) {
            if (offset) *offset = at;
            if (size) *size = s;
            return CUDA_SUCCESS;
        }
        at += s;
    }
} catch (...) {
    return caught(__func__);
}

TK_EXPORT CUresult cuLaunchKernel(void* function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                  unsigned bz, unsigned shared_bytes, void* stream, void** params, void** extra) try {
    (void)stream;
    if (!function) return fail(CUDA_ERROR_INVALID_HANDLE, __func__);
    if (extra != nullptr) return fail(CUDA_ERROR_NOT_SUPPORTED, "cuLaunchKernel: `extra` is not emulated");
    Function* f = static_cast<Function*>(function);
    if (f->module->param_count(f->index) > 0 && params == nullptr)
        return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel: kernelParams is null");
    char message[1024];
    int rc = f->module->launch(f->index, gx, gy, gz, bx, by, bz, shared_bytes, params, emulator_threads(),
                               &stack_pool, message, sizeof message);
    if (rc == 2) return fail(CUDA_ERROR_INVALID_VALUE, std::string("cuLaunchKernel: ") + message);
    if (rc == 3) return fail(CUDA_ERROR_OUT_OF_MEMORY, message);
    if (rc != 0) return fail(CUDA_ERROR_LAUNCH_FAILED, message);
    return CUDA_SUCCESS;
} catch (...) {
    return caught(__func__);
}
