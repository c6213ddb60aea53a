package dev.tokenkernels.runtime;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.ref.Cleaner;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.Arrays;
import java.util.Objects;

/**
 * A row-major, contiguous tensor of one {@link DType} in host memory.
 *
 * <p>Storage is a native {@link MemorySegment}, so the same bytes are read by the Vector API, by
 * native code and by device copies without conversion. Tensors this class allocates own their
 * memory: {@link #close()} frees it at once, and a {@link Cleaner} frees it if the tensor becomes
 * unreachable first. Tensors that wrap a caller's native segment or direct buffer never free it.
 * Any access after {@link #close()} is an {@link IllegalStateException}.
 *
 * <p>Instances are safe to read from several threads; closing while another thread still uses a
 * tensor is the caller's error and is reported by the FFM runtime as an exception, not a crash.
 */
public final class Tensor implements AutoCloseable {
    /** Alignment of every allocation: one 512-bit vector. */
    static final long ALIGNMENT = 64;
    private static final Cleaner CLEANER = Cleaner.create();
    /** A thread that owns no arena, never started: a segment it may access is not confined. */
    private static final Thread ANY_OTHER_THREAD = Thread.ofPlatform().unstarted(() -> { });

    private final long[] shape;
    private final long count;
    private final DType dtype;
    private final MemorySegment segment;
    private final Cleaner.Cleanable cleanable;
    /**
     * The tensor a {@link #reshape} view shows, held so that its cleaner cannot free the memory
     * while the view is reachable; null for other tensors.
     */
    private final Tensor viewed;
    private volatile boolean closed;

    private Tensor(long[] shape, DType dtype, MemorySegment segment, Arena owner, Tensor viewed) {
        this.shape = shape;
        this.count = elementCount(shape);
        this.dtype = dtype;
        this.segment = segment;
        this.viewed = viewed;
        this.cleanable = owner == null ? null : CLEANER.register(this, new ArenaCloser(owner));
    }

    /** Frees an owned arena; holds no reference to the tensor so the tensor can be collected. */
    private record ArenaCloser(Arena arena) implements Runnable {
        @Override
        public void run() {
            arena.close();
        }
    }

    // ---- creation -------------------------------------------------------------------------

    /**
     * A zero-filled tensor that owns its memory; from 2 MiB up, on Linux with native access, on
     * transparent huge pages (see {@code HostMemory}: faster sweeps over large tensors).
     */
    public static Tensor allocate(DType dtype, long... shape) {
        Objects.requireNonNull(dtype, "dtype");
        long[] dims = checkShape(shape);
        long bytes = Math.multiplyExact(elementCount(dims), (long) dtype.byteSize());
        Arena arena = Arena.ofShared();
        return new Tensor(dims, dtype, HostMemory.allocate(arena, bytes, ALIGNMENT), arena, null);
    }

    /** An F32 tensor holding a copy of {@code values}. */
    public static Tensor of(float[] values, long... shape) {
        Tensor t = allocateFor("values", values.length, DType.F32, shape);
        MemorySegment.copy(values, 0, t.segment, ValueLayout.JAVA_FLOAT, 0, values.length);
        return t;
    }

    /**
     * An F32 tensor over the remaining elements of {@code buffer}: a zero-copy view when the
     * buffer is direct and in native byte order (the buffer must then outlive the tensor), a copy
     * otherwise.
     */
    public static Tensor of(FloatBuffer buffer, long... shape) {
        Objects.requireNonNull(buffer, "buffer");
        if (buffer.isDirect() && buffer.order() == ByteOrder.nativeOrder()) {
            return of(MemorySegment.ofBuffer(buffer), DType.F32, shape);
        }
        float[] copy = new float[buffer.remaining()];
        buffer.duplicate().get(copy);
        return of(copy, shape);
    }

    /**
     * A tensor over {@code segment}, whose bytes are elements of {@code dtype} in native byte
     * order: a zero-copy view of a native segment (which must stay alive as long as the tensor),
     * a copy of a heap segment (kernels need native memory). A native segment must start at a
     * multiple of the element size (as GPU loads and the CPU ops' bulk copies need) and be
     * accessible from any thread (the CPU backend splits work across threads): a segment of
     * {@code Arena.ofConfined()} is refused; use {@code Arena.ofShared()}, {@code ofAuto()} or
     * {@code global()}.
     */
    public static Tensor of(MemorySegment segment, DType dtype, long... shape) {
        Objects.requireNonNull(segment, "segment");
        Objects.requireNonNull(dtype, "dtype");
        long[] dims = checkShape(shape);
        long bytes = Math.multiplyExact(elementCount(dims), (long) dtype.byteSize());
        Checks.require(segment.byteSize() == bytes, "segment",
                bytes + " bytes for " + dtype + " " + Arrays.toString(dims), segment.byteSize() + " bytes");
        if (segment.isNative()) {
            Checks.require(segment.address() % dtype.byteSize() == 0, "segment",
                    "an address aligned to " + dtype.byteSize() + " bytes for " + dtype,
                    "address 0x" + Long.toHexString(segment.address()));
            Checks.require(segment.isAccessibleBy(ANY_OTHER_THREAD), "segment",
                    "a segment every thread may access (Arena.ofShared, ofAuto or global)",
                    "a segment confined to one thread (Arena.ofConfined)");
            return new Tensor(dims, dtype, segment, null, null);
        }
        Tensor t = allocate(dtype, dims);
        t.segment.copyFrom(segment);
        return t;
    }

    /** An I32 tensor holding a copy of {@code values}, e.g. target token ids. */
    public static Tensor ofInts(int[] values, long... shape) {
        Tensor t = allocateFor("values", values.length, DType.I32, shape);
        MemorySegment.copy(values, 0, t.segment, ValueLayout.JAVA_INT, 0, values.length);
        return t;
    }

    /** An I64 tensor holding a copy of {@code values}. */
    public static Tensor ofLongs(long[] values, long... shape) {
        Tensor t = allocateFor("values", values.length, DType.I64, shape);
        MemorySegment.copy(values, 0, t.segment, ValueLayout.JAVA_LONG, 0, values.length);
        return t;
    }

    /**
     * A tensor of {@code dtype} (F32, F16 or BF16) holding {@code values} rounded to that type
     * (round to nearest even).
     */
    public static Tensor ofFloats(float[] values, DType dtype, long... shape) {
        Checks.require(dtype.isFloating(), "dtype", "F32, F16 or BF16", dtype);
        Tensor t = allocateFor("values", values.length, dtype, shape);
        for (int i = 0; i < values.length; i++) {
            t.setFloat(i, values[i]);
        }
        return t;
    }

    private static Tensor allocateFor(String name, int length, DType dtype, long[] shape) {
        long[] dims = checkShape(shape);
        Checks.require(elementCount(dims) == length, name,
                elementCount(dims) + " elements for shape " + Arrays.toString(dims), length + " elements");
        return allocate(dtype, dims);
    }

    private static long[] checkShape(long[] shape) {
        Objects.requireNonNull(shape, "shape");
        long[] dims = shape.clone();
        long count = 1;
        for (long d : dims) {
            Checks.require(d >= 0, "shape", "dimensions >= 0", Arrays.toString(dims));
            count = Math.multiplyExact(count, d);
        }
        return dims;
    }

    private static long elementCount(long[] dims) {
        long count = 1;
        for (long d : dims) {
            count *= d;
        }
        return count;
    }

    // ---- description ----------------------------------------------------------------------

    /** The element type. */
    public DType dtype() {
        return dtype;
    }

    /** A copy of the shape. */
    public long[] shape() {
        return shape.clone();
    }

    /**
     * The same memory under another shape of as many elements, e.g. {@code [B, L, V]} logits as the
     * {@code [B * L, V]} rows an op takes: no copy. The view owns nothing (closing it frees nothing),
     * keeps this tensor from being freed by the GC while the view is in use, and is closed when this
     * one is.
     */
    public Tensor reshape(long... newShape) {
        long[] dims = checkShape(newShape);
        Checks.require(elementCount(dims) == count, "shape", count + " elements like " + Arrays.toString(shape),
                Arrays.toString(dims));
        return new Tensor(dims, dtype, segment(), null, this);
    }

    /** Number of dimensions; 0 for a scalar. */
    public int rank() {
        return shape.length;
    }

    /** Size of dimension {@code i}; negative {@code i} counts from the end. */
    public long dim(int i) {
        int k = i < 0 ? shape.length + i : i;
        if (k < 0 || k >= shape.length) {
            throw new IndexOutOfBoundsException("dim " + i + " of a rank-" + shape.length + " tensor");
        }
        return shape[k];
    }

    /** Number of elements: the product of the shape (1 for a scalar). */
    public long elementCount() {
        return count;
    }

    /** Size of the storage in bytes: {@link #elementCount()} times the dtype's byte size. */
    public long byteSize() {
        return segment.byteSize();
    }

    /** Where the storage lives; tensors of this class are host tensors. */
    public Device device() {
        return Device.CPU;
    }

    /** Whether {@link #close()} has been called. */
    public boolean isClosed() {
        return closed || viewed != null && viewed.isClosed();
    }

    /** The storage, for ops and native code. */
    public MemorySegment segment() {
        ensureOpen();
        return segment;
    }

    // ---- element access (convenient, not fast) ------------------------------------------------

    /** Element {@code index} (flat, row-major) of a floating tensor, decoded to fp32. */
    public float getFloat(long index) {
        ensureOpen();
        checkIndex(index);
        return dtype.getFloat(segment, index);
    }

    /** Sets element {@code index} of a floating tensor, rounding to its dtype. */
    public void setFloat(long index, float value) {
        ensureOpen();
        checkIndex(index);
        if (!dtype.isFloating()) {
            throw new IllegalStateException("setFloat on a " + dtype + " tensor");
        }
        dtype.setFloat(segment, index, value);
    }

    /** Element {@code index} of an integer tensor. */
    public long getLong(long index) {
        ensureOpen();
        checkIndex(index);
        return switch (dtype) {
            case I8 -> segment.get(ValueLayout.JAVA_BYTE, index);
            case U8 -> segment.get(ValueLayout.JAVA_BYTE, index) & 0xFF;
            case I32 -> segment.getAtIndex(ValueLayout.JAVA_INT, index);
            case I64 -> segment.getAtIndex(ValueLayout.JAVA_LONG, index);
            default -> throw new IllegalStateException("getLong on a " + dtype + " tensor");
        };
    }

    /** All elements decoded to fp32 (floating tensors only). */
    public float[] toFloatArray() {
        ensureOpen();
        long n = elementCount();
        Checks.require(n <= Integer.MAX_VALUE - 8, "tensor", "fewer than 2^31 elements", n);
        if (dtype == DType.F32) {
            return segment.toArray(ValueLayout.JAVA_FLOAT);
        }
        float[] out = new float[(int) n];
        for (int i = 0; i < out.length; i++) {
            out[i] = getFloat(i);
        }
        return out;
    }

    // ---- lifetime -----------------------------------------------------------------------------

    /** Frees owned memory now. Idempotent. */
    @Override
    public void close() {
        closed = true;
        if (cleanable != null) {
            cleanable.clean();
        }
    }

    /** Element indices are flat, row-major: out of range is this tensor's error, not a byte offset's. */
    private void checkIndex(long index) {
        if (index < 0 || index >= elementCount()) {
            throw new IndexOutOfBoundsException("index " + index + " outside [0, " + elementCount() + ") of " + this);
        }
    }

    private void ensureOpen() {
        if (isClosed()) {
            throw new IllegalStateException("tensor " + dtype + Arrays.toString(shape) + " is closed");
        }
    }

    @Override
    public String toString() {
        return "Tensor[" + dtype + " " + Arrays.toString(shape) + " on " + device() + (isClosed() ? ", closed" : "") + "]";
    }
}
