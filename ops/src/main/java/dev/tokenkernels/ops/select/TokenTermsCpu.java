package dev.tokenkernels.ops.select;

import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/** Vector API loops of {@link TokenTerms}: chunks of tokens in parallel, masked vectors for the tail. */
final class TokenTermsCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final int CHUNK = 1 << 16;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();

    private TokenTermsCpu() {
    }

    static void requireNonNegative(String name, Tensor t) {
        MemorySegment s = t.segment();
        for (long i = 0; i < t.dim(0); i++) {
            float v = s.getAtIndex(ValueLayout.JAVA_FLOAT, i);
            if (v < 0f) {
                throw new IllegalArgumentException(name + "[" + i + "]: expected a value >= 0, got " + v);
            }
        }
    }

    static void run(CpuBackend cpu, TokenTerms.Job job) {
        int n = job.n();
        MemorySegment x = job.first().segment();
        MemorySegment y = job.second() == null ? null : job.second().segment();
        MemorySegment[] out = new MemorySegment[job.outputs().length];
        for (int k = 0; k < out.length; k++) {
            out[k] = job.outputs()[k].segment();
        }
        float[] c = job.scalars();
        cpu.parallelFor(TokenVectors.chunks(n, CHUNK), 1, (from, to) -> {
            for (int chunk = from; chunk < to; chunk++) {
                int end = TokenVectors.chunkEnd(chunk, n, CHUNK);
                for (int i = chunk * CHUNK; i < end; i += F.length()) {
                    VectorMask<Float> m = F.indexInRange(i, end);
                    long at = 4L * i;
                    FloatVector a = FloatVector.fromMemorySegment(F, x, at, NATIVE, m);
                    switch (job.kind()) {
                        case TEMPERATURE -> a.max(-1f).min(1f).mul(c[1]).add(1f).mul(c[0])
                                .intoMemorySegment(out[0], at, NATIVE, m);
                        case SCORE -> a.abs().mul(FloatVector.fromMemorySegment(F, y, at, NATIVE, m))
                                .intoMemorySegment(out[0], at, NATIVE, m);
                        case CLIPPING -> clipping(a, FloatVector.fromMemorySegment(F, y, at, NATIVE, m), c, out, at, m);
                    }
                }
            }
        });
    }

    /** {@code h} and {@code a} of a vector of tokens; scalars {eps_low, eps_high, alpha, beta}. */
    private static void clipping(FloatVector h, FloatVector a, float[] c, MemorySegment[] out, long at,
                                 VectorMask<Float> m) {
        VectorMask<Float> positive = h.compare(VectorOperators.GT, 0f);
        FloatVector alphaH = h.mul(c[2]);
        FloatVector aEnt = a.mul(h.mul(c[3]).add(1f));
        FloatVector low = FloatVector.broadcast(F, c[0]);
        FloatVector high = FloatVector.broadcast(F, c[1]);
        low.mul(alphaH.neg().add(1f)).blend(low, positive).intoMemorySegment(out[0], at, NATIVE, m);
        high.blend(high.mul(alphaH.add(1f)), positive).intoMemorySegment(out[1], at, NATIVE, m);
        aEnt.blend(a, positive).intoMemorySegment(out[2], at, NATIVE, m);
        a.blend(aEnt, positive).intoMemorySegment(out[3], at, NATIVE, m);
    }
}
