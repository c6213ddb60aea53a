package dev.tokenkernels.runtime;

import java.util.Arrays;

/**
 * Argument checks shared by every op. Each failure is an {@link IllegalArgumentException} that
 * names the argument and gives the expected and the actual value, so a caller can fix the call
 * without reading our sources.
 */
public final class Checks {
    /** {@code log2 e} as the CPU sweeps round it. */
    private static final float LOG2_E = 1.44269504088896341f;

    private Checks() {
    }

    /** Throws unless {@code condition}: "{@code name}: expected {@code expected}, got {@code actual}". */
    public static void require(boolean condition, String name, String expected, Object actual) {
        if (!condition) {
            throw new IllegalArgumentException(name + ": expected " + expected + ", got " + actual);
        }
    }

    /**
     * Sequence offsets {@code [B + 1]} over {@code rows} tokens, checked in full before any is used
     * (an offset past the end must fail here, not index out of bounds in a loop): at least two,
     * from 0 to {@code rows}, non-decreasing. Returns a copy the caller's later edits cannot change.
     */
    public static int[] offsets(String name, int[] starts, long rows) {
        if (starts == null || starts.length < 2) {
            throw new IllegalArgumentException(name + ": expected B + 1 >= 2 offsets, got "
                    + (starts == null ? "null" : starts.length));
        }
        int[] copy = starts.clone();
        require(copy[0] == 0 && copy[copy.length - 1] == rows, name, "offsets from 0 to N = " + rows,
                Arrays.toString(copy));
        for (int b = 0; b + 1 < copy.length; b++) {
            require(copy[b] <= copy[b + 1], name, "non-decreasing offsets", copy[b] + " > " + copy[b + 1]);
        }
        return copy;
    }

    /**
     * Requires that the output {@code buffer} shares no memory with the input {@code input}, or,
     * with {@code inPlace}, is {@code input} itself: an op that writes a row's output after reading
     * that row can update in place, but a buffer overlapping the input otherwise (a view of other
     * rows, or of another dtype's rows) would overwrite input another row has not read yet.
     */
    public static void apart(String name, Tensor buffer, String inputName, Tensor input, boolean inPlace) {
        if (inPlace && buffer == input) {
            return;
        }
        require(buffer.segment().asOverlappingSlice(input.segment()).isEmpty(), name,
                (inPlace ? inputName + " itself or " : "") + "a buffer that does not overlap " + inputName,
                buffer == input ? inputName : "an overlapping buffer");
    }

    /** Returns {@code tensor}, or throws if it is null. */
    public static Tensor notNull(String name, Tensor tensor) {
        if (tensor == null) {
            throw new IllegalArgumentException(name + ": expected a tensor, got null");
        }
        return tensor;
    }

    /** The tensor has {@code rank} dimensions; {@code layout} names them, e.g. "[N, V]". */
    public static void rank(String name, Tensor tensor, int rank, String layout) {
        require(tensor.rank() == rank, name, "rank " + rank + " " + layout,
                "shape " + Arrays.toString(tensor.shape()));
    }

    /** Dimension {@code dim} of the tensor equals {@code expected}. */
    public static void dim(String name, Tensor tensor, int dim, long expected, String what) {
        require(tensor.dim(dim) == expected, name, "dimension " + dim + " = " + expected + " (" + what + ")",
                "shape " + Arrays.toString(tensor.shape()));
    }

    /** The tensor's dtype is one of {@code allowed}. */
    public static void dtype(String name, Tensor tensor, DType... allowed) {
        for (DType d : allowed) {
            if (tensor.dtype() == d) {
                return;
            }
        }
        String expected = allowed.length == 1 ? allowed[0].toString() : "one of " + Arrays.toString(allowed);
        throw new IllegalArgumentException(name + ": expected dtype " + expected + ", got " + tensor.dtype());
    }

    /**
     * A temperature {@code T}: finite, positive, and with a finite reciprocal, since the ops scale
     * logits by {@code 1/T} (a subnormal T would make every scaled logit infinite or NaN); the CPU
     * softmax sweeps scale by {@code log2(e) / T}, which must be finite too.
     */
    public static float temperature(String name, float value) {
        require(value > 0 && Float.isFinite(value) && Float.isFinite(1f / value * LOG2_E), name,
                "a finite value > 0 whose reciprocal 1/T is finite, log2(e)/T too (T > about 4.2e-39)", value);
        return value;
    }

    /** A finite value greater than zero (a temperature: {@link #temperature}). */
    public static float positiveFinite(String name, float value) {
        require(value > 0 && Float.isFinite(value), name, "a finite value > 0", value);
        return value;
    }
}
