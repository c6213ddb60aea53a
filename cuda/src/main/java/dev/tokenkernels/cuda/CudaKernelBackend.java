package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.Device;
import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.KernelParam;
import dev.tokenkernels.runtime.LaunchConfig;
import dev.tokenkernels.runtime.TokenKernelsException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.ref.Cleaner;
import java.lang.ref.Reference;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A {@link KernelBackend} over the CUDA driver API: {@code cuda} with libcuda and NVRTC, and
 * {@code cuda-emu} with the emulator's stand-in library and host-built modules. Memory, argument
 * marshaling, signature checks and launches are this one class for both; only the
 * {@link ModuleLoader} differs.
 *
 * <p>Every launch is synchronous (it waits for the kernel), so results are visible to the next
 * copy. Calls may come from any thread: each makes the backend's context current first.
 */
public final class CudaKernelBackend implements KernelBackend {
    private static final Cleaner CLEANER = Cleaner.create();

    private final String name;
    private final CudaDriver driver;
    private final MemorySegment context;
    private final MemorySegment stream;
    private final ModuleLoader loader;
    private final String deviceName;
    private final int computeCapability;
    private final DynamicSharedMemory dynamicShared;
    private final Map<String, ModuleLoader.Loaded> modules = new ConcurrentHashMap<>();
    /** Resolved entry points by declaration: each distinct Java signature is checked once. */
    private final Map<Kernel, EntryPoint> entries = new ConcurrentHashMap<>();

    /** A resolved kernel entry point and the parameter sizes it was compiled with. */
    private record EntryPoint(MemorySegment function, int[] parameterSizes) {
    }

    CudaKernelBackend(String name, CudaDriver driver, ModuleLoader loader) {
        this.name = name;
        this.driver = driver;
        this.loader = loader;
        driver.init();
        if (driver.deviceCount() < 1) {
            throw new TokenKernelsException("no CUDA device");
        }
        int device = driver.device(0);
        this.context = driver.retainPrimaryContext(device);
        driver.setCurrentContext(context);
        this.stream = driver.createStream();
        this.deviceName = driver.deviceName(device);
        this.computeCapability = 10 * driver.attribute(device, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
                + driver.attribute(device, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
        this.dynamicShared = new DynamicSharedMemory(
                driver.attribute(device, CudaDriver.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
                driver::setMaxDynamicSharedMemory);
    }

    @Override
    public String name() {
        return name;
    }

    /** The backend's name, as test messages and logs should show it. */
    @Override
    public String toString() {
        return "CudaKernelBackend[" + name + "]";
    }

    @Override
    public Device device() {
        return new Device(name, 0);
    }

    @Override
    public String description() {
        return deviceName + ", sm_" + computeCapability + ", driver " + driver.driverVersion() + ", "
                + loader.describe();
    }

    /** The device's compute capability as major * 10 + minor (90 for sm_90). */
    public int computeCapability() {
        return computeCapability;
    }

    @Override
    public DeviceBuffer allocate(long bytes) {
        Checks.require(bytes > 0, "bytes", "> 0", bytes);
        driver.setCurrentContext(context);
        return new Buffer(this, driver.malloc(bytes), bytes);
    }

    @Override
    public void copyToDevice(MemorySegment source, DeviceBuffer destination) {
        Buffer target = own(destination, "destination");
        Checks.require(source.byteSize() <= target.byteSize(), "source", "at most " + target.byteSize() + " bytes",
                source.byteSize());
        driver.setCurrentContext(context);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment from = source.isNative() ? source : arena.allocate(source.byteSize(), 64).copyFrom(source);
            driver.copyToDevice(target.address(), from, source.byteSize());
        } finally {
            Reference.reachabilityFence(target); // see Buffer
        }
    }

    @Override
    public void copyToHost(DeviceBuffer source, MemorySegment destination) {
        Buffer from = own(source, "source");
        Checks.require(destination.byteSize() <= from.byteSize(), "destination", "at most " + from.byteSize() + " bytes",
                destination.byteSize());
        Checks.require(!destination.isReadOnly(), "destination", "a writable segment", "a read-only segment");
        driver.setCurrentContext(context);
        try {
            if (destination.isNative()) {
                driver.copyToHost(destination, from.address(), destination.byteSize());
            } else {
                try (Arena arena = Arena.ofConfined()) {
                    MemorySegment staging = arena.allocate(destination.byteSize(), 64);
                    driver.copyToHost(staging, from.address(), destination.byteSize());
                    destination.copyFrom(staging);
                }
            }
        } finally {
            Reference.reachabilityFence(from); // see Buffer
        }
    }

    /** Sets every byte of {@code buffer} to {@code value}. */
    public void fill(DeviceBuffer buffer, byte value) {
        Buffer target = own(buffer, "buffer");
        driver.setCurrentContext(context);
        try {
            driver.memset(target.address(), value, target.byteSize());
        } finally {
            Reference.reachabilityFence(target); // see Buffer
        }
    }

    @Override
    public void launch(Kernel kernel, LaunchConfig config, Object... args) {
        kernel.checkArguments(args);
        driver.setCurrentContext(context);
        EntryPoint entry = entries.computeIfAbsent(kernel, this::resolve);
        dynamicShared.prepare(entry.function(), kernel.entry(), config.sharedBytes());
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment params = arena.allocate(ValueLayout.ADDRESS, Math.max(1, args.length));
            for (int i = 0; i < args.length; i++) {
                KernelParam p = kernel.params().get(i);
                MemorySegment value = switch (p.type()) {
                    case POINTER -> arena.allocateFrom(ValueLayout.JAVA_LONG,
                            own((DeviceBuffer) args[i], "kernel " + kernel.entry() + " parameter " + i + " (" + p.name() + ")")
                                    .address());
                    case I32 -> arena.allocateFrom(ValueLayout.JAVA_INT, (Integer) args[i]);
                    case I64 -> arena.allocateFrom(ValueLayout.JAVA_LONG, (Long) args[i]);
                    case F32 -> arena.allocateFrom(ValueLayout.JAVA_FLOAT, (Float) args[i]);
                };
                params.setAtIndex(ValueLayout.ADDRESS, i, value);
            }
            driver.launch(entry.function(), kernel.entry(), config.gridX(), config.gridY(), config.gridZ(),
                    config.blockX(), config.blockY(), config.blockZ(), config.sharedBytes(), stream, params);
            driver.synchronize(stream);
        } finally {
            // The kernel runs until the synchronize; its buffers (see Buffer) must outlive it.
            Reference.reachabilityFence(args);
        }
    }

    /**
     * Cold compile and warm load of one kernel file, in milliseconds: cold compiles into an empty
     * cache; warm takes the compiled module from this user's cache (filling it first if needed)
     * and loads it, as a new process would.
     */
    public record CompileTiming(String source, double coldMillis, double warmMillis) {
    }

    /** The kernel files on the class path, as paths under {@code kernels/} (e.g. "loss/logit_stats.cu"). */
    public static List<String> kernelSources() {
        return KernelSource.list(CudaKernelBackend.class.getClassLoader());
    }

    /** Measures {@link CompileTiming} for {@code source} (a path under {@code kernels/}). */
    public CompileTiming timeCompile(String source) {
        driver.setCurrentContext(context);
        KernelSource kernel = KernelSource.load(source);
        KernelCache scratch = KernelCache.standard();
        Path empty = scratch.temporaryDirectory("cold");
        try {
            ModuleLoader.Loaded cold = loader.withCache(new KernelCache(empty)).load(driver, kernel);
            driver.unloadModule(cold.handle());
            driver.unloadModule(loader.load(driver, kernel).handle()); // fills the cache if empty
            ModuleLoader.Loaded warm = loader.load(driver, kernel);
            driver.unloadModule(warm.handle());
            return new CompileTiming(source, cold.millis(), warm.millis());
        } finally {
            KernelCache.deleteTree(empty);
        }
    }

    /** The parameter sizes of {@code entry} in {@code source} as compiled for this backend. */
    int[] compiledParameterSizes(String source, String entry) {
        driver.setCurrentContext(context);
        ModuleLoader.Loaded module = module(source);
        int[] sizes = module.entryParameterSizes().get(entry);
        return sizes != null ? sizes : driver.parameterSizes(driver.function(module.handle(), entry));
    }

    /** Loads (compiling if needed) the module of {@code source}. */
    ModuleLoader.Loaded module(String source) {
        driver.setCurrentContext(context);
        return modules.computeIfAbsent(source, s -> loader.load(driver, KernelSource.load(s)));
    }

    private EntryPoint resolve(Kernel kernel) {
        ModuleLoader.Loaded module = module(kernel.source());
        MemorySegment function = driver.function(module.handle(), kernel.entry());
        int[] sizes = module.entryParameterSizes().get(kernel.entry());
        if (sizes == null) {
            sizes = driver.parameterSizes(function);
        }
        if (sizes == null) {
            throw new TokenKernelsException("kernel " + kernel.entry() + ": cannot check its parameters (no PTX entry"
                    + " list and no cuFuncGetParamInfo in this driver)");
        }
        checkSignature(kernel, sizes);
        return new EntryPoint(function, sizes);
    }

    /** Compares the Java declaration with the compiled entry's parameter sizes. */
    static void checkSignature(Kernel kernel, int[] compiledSizes) {
        if (compiledSizes.length != kernel.params().size()) {
            throw new TokenKernelsException("kernel " + kernel.entry() + " in " + kernel.source() + ": the compiled entry has "
                    + compiledSizes.length + " parameters " + Arrays.toString(compiledSizes) + " (bytes), the Java signature declares "
                    + kernel.params().size() + " " + kernel.params().stream().map(KernelParam::name).toList());
        }
        for (int i = 0; i < compiledSizes.length; i++) {
            KernelParam p = kernel.params().get(i);
            if (p.type().byteSize() != compiledSizes[i]) {
                throw new TokenKernelsException("kernel " + kernel.entry() + " in " + kernel.source() + " parameter " + i
                        + " (" + p.name() + "): the Java signature declares " + p.type() + " (" + p.type().byteSize()
                        + " bytes), the compiled entry takes " + compiledSizes[i] + " bytes");
            }
        }
    }

    private Buffer own(DeviceBuffer buffer, String what) {
        if (buffer instanceof Buffer b && b.owner == this) {
            return b;
        }
        throw new IllegalArgumentException(what + ": expected a buffer allocated by backend " + name + ", got "
                + (buffer == null ? "null" : buffer.getClass().getSimpleName()));
    }

    /**
     * Device memory; freed by {@link #close()} or, as a safety net, when unreachable. Native calls
     * take only its {@link #address()}, a long, so a caller that keeps no reference of its own (a
     * buffer allocated in the argument list) could let the Cleaner free it during the call: every
     * call that takes an address fences the buffer until the call returns.
     */
    private static final class Buffer implements DeviceBuffer {
        private final CudaKernelBackend owner;
        private final long address;
        private final long bytes;
        private final Release release;
        private final Cleaner.Cleanable cleanable;

        Buffer(CudaKernelBackend owner, long address, long bytes) {
            this.owner = owner;
            this.address = address;
            this.bytes = bytes;
            this.release = new Release(owner.driver, owner.context, address);
            this.cleanable = CLEANER.register(this, release);
        }

        @Override
        public long address() {
            if (release.freed.get()) {
                throw new IllegalStateException("device buffer is closed");
            }
            return address;
        }

        @Override
        public long byteSize() {
            return bytes;
        }

        @Override
        public void close() {
            cleanable.clean();
        }
    }

    private record Release(CudaDriver driver, MemorySegment context, long address, AtomicBoolean freed)
            implements Runnable {
        Release(CudaDriver driver, MemorySegment context, long address) {
            this(driver, context, address, new AtomicBoolean());
        }

        @Override
        public void run() {
            if (freed.compareAndSet(false, true)) {
                driver.setCurrentContext(context);
                driver.free(address);
            }
        }
    }
}
