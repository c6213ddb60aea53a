package dev.tokenkernels.ops.select;

import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** Argument checks the per-token ops of this package share. */
final class TokenVectors {
    private TokenVectors() {
    }

    /** An F32 {@code [N]} tensor (N of {@code reference}'s length when given); its length. */
    static int vector(String name, Tensor t, Tensor reference, String referenceName) {
        Checks.notNull(name, t);
        Checks.rank(name, t, 1, "[N]");
        Checks.dtype(name, t, DType.F32);
        if (reference != null) {
            Checks.dim(name, t, 0, reference.dim(0), "N, the entries of " + referenceName);
        }
        Checks.require(t.dim(0) <= Integer.MAX_VALUE - 64, name, "N < 2^31 - 64 entries", t.dim(0));
        t.segment(); // closed tensors fail here, before any work
        return (int) t.dim(0);
    }

    /** A U8 {@code [N]} mask or null. */
    static void mask(Tensor mask, long n, String referenceName) {
        if (mask == null) {
            return;
        }
        Checks.rank("mask", mask, 1, "[N]");
        Checks.dtype("mask", mask, DType.U8);
        Checks.dim("mask", mask, 0, n, "N, the entries of " + referenceName);
        mask.segment();
    }

    /** Throws unless every (masked, when a mask is given) entry is finite; returns the masked count. */
    static int finite(String name, Tensor t, Tensor mask, String what) {
        long[] countAndBad = TokenSelectionCpu.countAndFirstBad(t, mask, true);
        if (countAndBad[1] >= 0) {
            throw new IllegalArgumentException(name + "[" + countAndBad[1] + "]: expected " + what + ", got "
                    + t.getFloat(countAndBad[1]));
        }
        return (int) countAndBad[0];
    }

    /** How many chunks of {@code chunk} entries cover {@code n} (no int overflow near 2^31). */
    static int chunks(int n, int chunk) {
        return (int) ((n + (long) chunk - 1) / chunk);
    }

    /** The end of chunk {@code c}: {@code min(n, (c + 1) chunk)} without int overflow. */
    static int chunkEnd(int c, int n, int chunk) {
        return (int) Math.min(n, (c + 1L) * chunk);
    }

    /** The largest {@code |x|} of an F32 vector (0 for none). */
    static float maxAbs(Tensor t) {
        MemorySegment x = t.segment();
        float max = 0f;
        for (long i = 0, n = t.dim(0); i < n; i++) {
            max = Math.max(max, Math.abs(x.getAtIndex(ValueLayout.JAVA_FLOAT, i)));
        }
        return max;
    }

    static void options(Object options) {
        if (options == null) {
            throw new IllegalArgumentException("options: expected Options (e.g. Options.defaults()), got null");
        }
    }
}
