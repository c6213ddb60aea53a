package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.lang.foreign.AddressLayout;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.file.Path;

/**
 * FFM bindings to the part of the CUDA driver API the backends use; no JNI. The same bindings
 * drive a real {@code libcuda.so.1} ({@code cuda}) and the host emulator's stand-in library
 * ({@code cuda-emu}), which exports the same symbols, so the emulator exercises this code too.
 *
 * <p>Every call checks its {@code CUresult}; a failure is a {@link TokenKernelsException} naming the
 * call and the driver's error name and text.
 */
@SuppressWarnings("restricted") // FFM downcalls are this class's purpose; the JVM runs with --enable-native-access
final class CudaDriver {
    static final int CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1;
    static final int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK = 8;
    static final int CU_DEVICE_ATTRIBUTE_WARP_SIZE = 10;
    static final int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
    static final int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
    static final int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
    static final int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
    static final int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

    private static final Linker LINKER = Linker.nativeLinker();
    private static final ValueLayout.OfInt INT = ValueLayout.JAVA_INT;
    private static final ValueLayout.OfLong LONG = ValueLayout.JAVA_LONG;
    private static final AddressLayout ADDRESS = ValueLayout.ADDRESS;

    private final Path library;
    private final MethodHandle cuInit;
    private final MethodHandle cuDriverGetVersion;
    private final MethodHandle cuDeviceGetCount;
    private final MethodHandle cuDeviceGet;
    private final MethodHandle cuDeviceGetName;
    private final MethodHandle cuDeviceGetAttribute;
    private final MethodHandle cuDeviceTotalMem;
    private final MethodHandle cuDevicePrimaryCtxRetain;
    private final MethodHandle cuCtxSetCurrent;
    private final MethodHandle cuCtxSynchronize;
    private final MethodHandle cuMemAlloc;
    private final MethodHandle cuMemFree;
    private final MethodHandle cuMemcpyHtoD;
    private final MethodHandle cuMemcpyDtoH;
    private final MethodHandle cuModuleLoadData;
    private final MethodHandle cuModuleLoad;
    private final MethodHandle cuModuleUnload;
    private final MethodHandle cuModuleGetFunction;
    private final MethodHandle cuLaunchKernel;
    private final MethodHandle cuEventCreate;
    private final MethodHandle cuEventRecord;
    private final MethodHandle cuEventSynchronize;
    private final MethodHandle cuEventElapsedTime;
    private final MethodHandle cuEventDestroy;
    private final MethodHandle cuGetErrorName;
    private final MethodHandle cuGetErrorString;
    private final MethodHandle cuDevicePrimaryCtxRelease;
    private final MethodHandle cuMemsetD8;
    private final MethodHandle cuStreamCreate;
    private final MethodHandle cuStreamSynchronize;
    private final MethodHandle cuStreamDestroy;
    /** cuFuncGetParamInfo exists in drivers since CUDA 12.4; null on older ones. */
    private final MethodHandle cuFuncGetParamInfo;
    /** Null on the emulator: its kernels may use its whole limit without opting in. */
    private final MethodHandle cuFuncSetAttribute;
    /** The emulator's detail message for the last failure on this thread; null on real drivers. */
    private final MethodHandle tkEmuLastError;

    /** Binds every function of {@code lookup}, a loaded libcuda or its emulator. */
    CudaDriver(Path library, SymbolLookup lookup) {
        this.library = library;
        cuInit = bind(lookup, "cuInit", INT);
        cuDriverGetVersion = bind(lookup, "cuDriverGetVersion", ADDRESS);
        cuDeviceGetCount = bind(lookup, "cuDeviceGetCount", ADDRESS);
        cuDeviceGet = bind(lookup, "cuDeviceGet", ADDRESS, INT);
        cuDeviceGetName = bind(lookup, "cuDeviceGetName", ADDRESS, INT, INT);
        cuDeviceGetAttribute = bind(lookup, "cuDeviceGetAttribute", ADDRESS, INT, INT);
        cuDeviceTotalMem = bind(lookup, "cuDeviceTotalMem_v2", ADDRESS, INT);
        cuDevicePrimaryCtxRetain = bind(lookup, "cuDevicePrimaryCtxRetain", ADDRESS, INT);
        cuCtxSetCurrent = bind(lookup, "cuCtxSetCurrent", ADDRESS);
        cuCtxSynchronize = bind(lookup, "cuCtxSynchronize");
        cuMemAlloc = bind(lookup, "cuMemAlloc_v2", ADDRESS, LONG);
        cuMemFree = bind(lookup, "cuMemFree_v2", LONG);
        cuMemcpyHtoD = bind(lookup, "cuMemcpyHtoD_v2", LONG, ADDRESS, LONG);
        cuMemcpyDtoH = bind(lookup, "cuMemcpyDtoH_v2", ADDRESS, LONG, LONG);
        cuModuleLoadData = bind(lookup, "cuModuleLoadData", ADDRESS, ADDRESS);
        cuModuleLoad = bind(lookup, "cuModuleLoad", ADDRESS, ADDRESS);
        cuModuleUnload = bind(lookup, "cuModuleUnload", ADDRESS);
        cuModuleGetFunction = bind(lookup, "cuModuleGetFunction", ADDRESS, ADDRESS, ADDRESS);
        cuLaunchKernel = bind(lookup, "cuLaunchKernel", ADDRESS, INT, INT, INT, INT, INT, INT, INT, ADDRESS,
                ADDRESS, ADDRESS);
        cuEventCreate = bind(lookup, "cuEventCreate", ADDRESS, INT);
        cuEventRecord = bind(lookup, "cuEventRecord", ADDRESS, ADDRESS);
        cuEventSynchronize = bind(lookup, "cuEventSynchronize", ADDRESS);
        cuEventElapsedTime = bind(lookup, "cuEventElapsedTime", ADDRESS, ADDRESS, ADDRESS);
        cuEventDestroy = bind(lookup, "cuEventDestroy_v2", ADDRESS);
        cuGetErrorName = bind(lookup, "cuGetErrorName", INT, ADDRESS);
        cuGetErrorString = bind(lookup, "cuGetErrorString", INT, ADDRESS);
        cuDevicePrimaryCtxRelease = bind(lookup, "cuDevicePrimaryCtxRelease_v2", INT);
        cuMemsetD8 = bind(lookup, "cuMemsetD8_v2", LONG, ValueLayout.JAVA_BYTE, LONG);
        cuStreamCreate = bind(lookup, "cuStreamCreate", ADDRESS, INT);
        cuStreamSynchronize = bind(lookup, "cuStreamSynchronize", ADDRESS);
        cuStreamDestroy = bind(lookup, "cuStreamDestroy_v2", ADDRESS);
        cuFuncGetParamInfo = lookup.find("cuFuncGetParamInfo")
                .map(symbol -> LINKER.downcallHandle(symbol, FunctionDescriptor.of(INT, ADDRESS, LONG, ADDRESS, ADDRESS)))
                .orElse(null);
        cuFuncSetAttribute = lookup.find("cuFuncSetAttribute")
                .map(symbol -> LINKER.downcallHandle(symbol, FunctionDescriptor.of(INT, ADDRESS, INT, INT)))
                .orElse(null);
        tkEmuLastError = lookup.find("tkEmuLastError")
                .map(symbol -> LINKER.downcallHandle(symbol, FunctionDescriptor.of(ADDRESS)))
                .orElse(null);
    }

    private static MethodHandle bind(SymbolLookup lookup, String name, java.lang.foreign.MemoryLayout... args) {
        MemorySegment symbol = lookup.find(name)
                .orElseThrow(() -> new TokenKernelsException("the CUDA driver library has no symbol " + name));
        return LINKER.downcallHandle(symbol, FunctionDescriptor.of(INT, args));
    }

    Path library() {
        return library;
    }

    // ---- calls ------------------------------------------------------------------------------

    void init() {
        check("cuInit", call(cuInit, 0));
    }

    int driverVersion() {
        return outInt("cuDriverGetVersion", cuDriverGetVersion);
    }

    int deviceCount() {
        return outInt("cuDeviceGetCount", cuDeviceGetCount);
    }

    int device(int ordinal) {
        return outInt("cuDeviceGet", cuDeviceGet, ordinal);
    }

    String deviceName(int device) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(256);
            check("cuDeviceGetName", call(cuDeviceGetName, out, 256, device));
            return out.getString(0);
        }
    }

    int attribute(int device, int attribute) {
        return outInt("cuDeviceGetAttribute(" + attribute + ")", cuDeviceGetAttribute, attribute, device);
    }

    long totalMemory(int device) {
        return outLong("cuDeviceTotalMem", cuDeviceTotalMem, device);
    }

    MemorySegment retainPrimaryContext(int device) {
        return outAddress("cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRetain, device);
    }

    void releasePrimaryContext(int device) {
        check("cuDevicePrimaryCtxRelease", call(cuDevicePrimaryCtxRelease, device));
    }

    void setCurrentContext(MemorySegment context) {
        check("cuCtxSetCurrent", call(cuCtxSetCurrent, context));
    }

    void synchronize() {
        check("cuCtxSynchronize", call(cuCtxSynchronize));
    }

    long malloc(long bytes) {
        return outLong("cuMemAlloc(" + bytes + " bytes)", cuMemAlloc, bytes);
    }

    void free(long pointer) {
        check("cuMemFree", call(cuMemFree, pointer));
    }

    void copyToDevice(long destination, MemorySegment source, long bytes) {
        check("cuMemcpyHtoD", call(cuMemcpyHtoD, destination, source, bytes));
    }

    void copyToHost(MemorySegment destination, long source, long bytes) {
        check("cuMemcpyDtoH", call(cuMemcpyDtoH, destination, source, bytes));
    }

    void memset(long destination, byte value, long bytes) {
        check("cuMemsetD8", call(cuMemsetD8, destination, value, bytes));
    }

    MemorySegment createStream() {
        return outAddress("cuStreamCreate", cuStreamCreate, 0);
    }

    void synchronize(MemorySegment stream) {
        check("cuStreamSynchronize", call(cuStreamSynchronize, stream));
    }

    void destroyStream(MemorySegment stream) {
        check("cuStreamDestroy", call(cuStreamDestroy, stream));
    }

    /**
     * The byte sizes of {@code function}'s parameters as the driver reports them, or null when
     * the driver predates cuFuncGetParamInfo (then the PTX {@code .entry} list is the source).
     */
    int[] parameterSizes(MemorySegment function) {
        if (cuFuncGetParamInfo == null) {
            return null;
        }
        java.util.List<Integer> sizes = new java.util.ArrayList<>();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment offset = arena.allocate(LONG);
            MemorySegment size = arena.allocate(LONG);
            // The driver answers CUDA_ERROR_INVALID_VALUE for the first index past the last parameter.
            while (call(cuFuncGetParamInfo, function, (long) sizes.size(), offset, size) == 0) {
                sizes.add((int) size.get(LONG, 0));
            }
        }
        return sizes.stream().mapToInt(Integer::intValue).toArray();
    }

    /**
     * Lets {@code function} launch with up to {@code bytes} of dynamic shared memory; a no-op on
     * the emulator, which has no such attribute.
     */
    void setMaxDynamicSharedMemory(MemorySegment function, String name, int bytes) {
        if (cuFuncSetAttribute != null) {
            check("cuFuncSetAttribute(" + name + ", MAX_DYNAMIC_SHARED_SIZE_BYTES, " + bytes + ")",
                    call(cuFuncSetAttribute, function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes));
        }
    }

    /** Loads a CUBIN or PTX image (real devices). */
    MemorySegment loadModuleData(MemorySegment image) {
        return outAddress("cuModuleLoadData", cuModuleLoadData, image);
    }

    /** Loads a module from a file (the emulator: a host library built from the kernel source). */
    MemorySegment loadModuleFile(Path file) {
        try (Arena arena = Arena.ofConfined()) {
            return outAddress("cuModuleLoad(" + file + ")", cuModuleLoad, arena.allocateFrom(file.toString()));
        }
    }

    void unloadModule(MemorySegment module) {
        check("cuModuleUnload", call(cuModuleUnload, module));
    }

    MemorySegment function(MemorySegment module, String name) {
        try (Arena arena = Arena.ofConfined()) {
            return outAddress("cuModuleGetFunction(" + name + ")", cuModuleGetFunction, module, arena.allocateFrom(name));
        }
    }

    void launch(MemorySegment function, String name, int gx, int gy, int gz, int bx, int by, int bz,
                int sharedBytes, MemorySegment stream, MemorySegment params) {
        check("cuLaunchKernel(" + name + ")", call(cuLaunchKernel, function, gx, gy, gz, bx, by, bz, sharedBytes,
                stream, params, MemorySegment.NULL));
    }

    MemorySegment createEvent() {
        return outAddress("cuEventCreate", cuEventCreate, 0);
    }

    void recordEvent(MemorySegment event, MemorySegment stream) {
        check("cuEventRecord", call(cuEventRecord, event, stream));
    }

    /** Milliseconds between two recorded events, after waiting for the second. */
    float elapsedMillis(MemorySegment start, MemorySegment end) {
        check("cuEventSynchronize", call(cuEventSynchronize, end));
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(ValueLayout.JAVA_FLOAT);
            check("cuEventElapsedTime", call(cuEventElapsedTime, out, start, end));
            return out.get(ValueLayout.JAVA_FLOAT, 0);
        }
    }

    void destroyEvent(MemorySegment event) {
        check("cuEventDestroy", call(cuEventDestroy, event));
    }

    // ---- out-parameters -----------------------------------------------------------------------

    /** Calls {@code handle} with a fresh int out-parameter before {@code args}; checks; returns it. */
    private int outInt(String what, MethodHandle handle, Object... args) {
        return (int) out(what, INT, handle, args);
    }

    private long outLong(String what, MethodHandle handle, Object... args) {
        return (long) out(what, LONG, handle, args);
    }

    private MemorySegment outAddress(String what, MethodHandle handle, Object... args) {
        return (MemorySegment) out(what, ADDRESS, handle, args);
    }

    private Object out(String what, ValueLayout layout, MethodHandle handle, Object... args) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(layout);
            Object[] all = new Object[args.length + 1];
            all[0] = out;
            System.arraycopy(args, 0, all, 1, args.length);
            check(what, call(handle, all));
            return switch (layout) {
                case ValueLayout.OfInt i -> out.get(i, 0);
                case ValueLayout.OfLong l -> out.get(l, 0);
                case AddressLayout a -> out.get(a, 0);
                default -> throw new IllegalArgumentException("no out-parameter of layout " + layout);
            };
        }
    }

    // ---- errors -------------------------------------------------------------------------------

    /** Throws unless {@code result} is CUDA_SUCCESS, with the driver's name and text for it. */
    void check(String what, int result) {
        if (result != 0) {
            throw new TokenKernelsException(what + " failed: " + describe(result));
        }
    }

    /** "CUDA_ERROR_NAME (code): text", as far as the driver can say. */
    String describe(int result) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment name = arena.allocate(ADDRESS);
            MemorySegment text = arena.allocate(ADDRESS);
            String n = call(cuGetErrorName, result, name) == 0 ? cString(name) : "CUresult";
            String t = call(cuGetErrorString, result, text) == 0 ? cString(text) : "unknown error";
            String detail = emulatorDetail();
            return n + " (" + result + "): " + t + (detail.isEmpty() ? "" : ": " + detail);
        }
    }

    private String emulatorDetail() {
        if (tkEmuLastError == null) {
            return "";
        }
        try {
            MemorySegment text = (MemorySegment) tkEmuLastError.invokeExact();
            return text.equals(MemorySegment.NULL) ? "" : text.reinterpret(4096).getString(0);
        } catch (Throwable t) {
            return "";
        }
    }

    private static String cString(MemorySegment holder) {
        MemorySegment p = holder.get(ADDRESS, 0);
        return p.equals(MemorySegment.NULL) ? "?" : p.reinterpret(4096).getString(0);
    }

    private static int call(MethodHandle handle, Object... args) {
        try {
            return (int) handle.invokeWithArguments(args);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new TokenKernelsException("native call failed", t);
        }
    }
}
