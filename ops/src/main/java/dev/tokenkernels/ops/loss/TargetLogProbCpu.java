package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API implementation of {@link TargetLogProb}: per row {@code x = z * (1/T)} into a scratch
 * row padded with {@code -inf} to whole vectors, its max and {@code sum exp(x - max)}, then the
 * gradient sweep {@code -(c/T) exp(x - lse)} (plus what the buffer holds when accumulating) and
 * {@code c/T} added at the target.
 */
final class TargetLogProbCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final int ELEMENTS_PER_TASK = 1 << 16;

    private TargetLogProbCpu() {
    }

    static void run(CpuBackend cpu, TargetLogProb.Rows job) {
        int vocab = job.vocab();
        int padded = (vocab + F.length() - 1) / F.length() * F.length();
        DType dtype = job.logits().dtype();
        MemorySegment z = job.logits().segment();
        MemorySegment g = job.gradient() == null ? null : job.gradient().segment();
        cpu.parallelFor(job.rows(), Math.max(1, ELEMENTS_PER_TASK / vocab), (from, to) -> {
            float[] x = new float[padded];
            Arrays.fill(x, vocab, padded, Float.NEGATIVE_INFINITY);
            float[] grad = g == null ? null : new float[padded];
            for (int row = from; row < to; row++) {
                int target = job.targets()[row];
                long rowOffset = (long) row * vocab;
                if (target < 0) { // ignored: not read
                    job.logProb()[row] = 0f;
                    if (g != null && !job.accumulate()) {
                        g.asSlice(4 * rowOffset, 4L * vocab).fill((byte) 0);
                    }
                    continue;
                }
                if (dtype == DType.F32) {
                    MemorySegment.copy(z, ValueLayout.JAVA_FLOAT, 4 * rowOffset, x, 0, vocab);
                } else {
                    HalfFloats.decode(z, rowOffset * dtype.byteSize(), dtype, MemorySegment.ofArray(x), vocab);
                }
                float lse = scaleAndLogSumExp(x, job.invT());
                job.logProb()[row] = Float.isFinite(lse) ? x[target] - lse : lse == Float.NEGATIVE_INFINITY
                        ? Float.NEGATIVE_INFINITY : Float.NaN;
                if (g == null) {
                    continue;
                }
                if (job.coefficients()[row] == 0f) { // the row does not count: a zero gradient, even if special
                    if (!job.accumulate()) {
                        g.asSlice(4 * rowOffset, 4L * vocab).fill((byte) 0);
                    }
                    continue;
                }
                if (!Float.isFinite(lse)) { // no distribution: nothing to differentiate
                    Arrays.fill(grad, Float.NaN);
                } else {
                    if (job.accumulate()) {
                        MemorySegment.copy(g, ValueLayout.JAVA_FLOAT, 4 * rowOffset, grad, 0, vocab);
                    }
                    gradient(x, lse, job.coefficients()[row], job.accumulate(), grad);
                    grad[target] += job.coefficients()[row];
                }
                MemorySegment.copy(grad, 0, g, ValueLayout.JAVA_FLOAT, 4 * rowOffset, vocab);
            }
        });
    }

    /**
     * Scales the row by {@code invT} in place and returns its log-sum-exp: NaN if any element is
     * NaN or the max is {@code +inf}, {@code -inf} if all are {@code -inf}.
     */
    static float scaleAndLogSumExp(float[] x, float invT) {
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        boolean nan = false;
        for (int i = 0; i < x.length; i += F.length()) {
            FloatVector v = FloatVector.fromArray(F, x, i).mul(invT);
            v.intoArray(x, i);
            nan |= v.test(VectorOperators.IS_NAN).anyTrue();
            m = m.max(v);
        }
        float max = m.reduceLanes(VectorOperators.MAX);
        if (nan || max == Float.POSITIVE_INFINITY) {
            return Float.NaN;
        }
        if (max == Float.NEGATIVE_INFINITY) {
            return max;
        }
        FloatVector sum = FloatVector.zero(F);
        for (int i = 0; i < x.length; i += F.length()) {
            sum = sum.add(VectorMath.expNonPositive(FloatVector.fromArray(F, x, i).sub(max)));
        }
        return max + (float) Math.log(sum.reduceLanes(VectorOperators.ADD));
    }

    /** {@code grad = (accumulate ? grad : 0) - c exp(x - lse)}. */
    private static void gradient(float[] x, float lse, float c, boolean accumulate, float[] grad) {
        FloatVector minusC = FloatVector.broadcast(F, -c);
        for (int i = 0; i < x.length; i += F.length()) {
            // x - lse <= 0 up to rounding: softmax never exceeds 1 by more than an ulp.
            FloatVector p = VectorMath.expNonPositive(FloatVector.fromArray(F, x, i).sub(lse).min(0f));
            FloatVector base = accumulate ? FloatVector.fromArray(F, grad, i) : FloatVector.zero(F);
            p.fma(minusC, base).intoArray(grad, i);
        }
    }
}
