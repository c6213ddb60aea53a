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
 * Vector API implementation of {@link PolicyLoss}, fused per row: {@code x = z * (1/T)} into a
 * scratch row (the row's one read from memory), its log-sum-exp, {@code logp}, the token's loss
 * and slope ({@link PolicyLoss#token}), then one sweep from cache that writes the gradient
 * {@code c (onehot - p)} and sums {@code p x} for the entropy.
 */
final class PolicyLossCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final int ELEMENTS_PER_TASK = 1 << 16;

    private PolicyLossCpu() {
    }

    static void run(CpuBackend cpu, PolicyLoss.PolicyRows job) {
        int vocab = job.vocab();
        int padded = (vocab + F.length() - 1) / F.length() * F.length();
        DType dtype = job.logits().dtype();
        MemorySegment z = job.logits().segment();
        MemorySegment g = job.gradient() == null ? null : job.gradient().segment();
        cpu.parallelFor(job.rows(), Math.max(1, ELEMENTS_PER_TASK / vocab), (from, to) -> {
            float[] x = new float[padded];
            Arrays.fill(x, vocab, padded, Float.NEGATIVE_INFINITY);
            float[] grad = new float[padded];
            for (int row = from; row < to; row++) {
                int target = job.targets()[row];
                long rowOffset = (long) row * vocab;
                if (target < 0) { // not counted: not read
                    if (g != null) {
                        g.asSlice(4 * rowOffset, 4L * vocab).fill((byte) 0);
                    }
                    continue;
                }
                if (dtype == DType.F32) {
                    MemorySegment.copy(z, ValueLayout.JAVA_FLOAT, 4 * rowOffset, x, 0, vocab);
                } else {
                    HalfFloats.decode(z, rowOffset * dtype.byteSize(), dtype, MemorySegment.ofArray(x), vocab);
                }
                float lse = TargetLogProbCpu.scaleAndLogSumExp(x, job.invT());
                float logp = Float.isFinite(lse) ? x[target] - lse
                        : lse == Float.NEGATIVE_INFINITY ? Float.NEGATIVE_INFINITY : Float.NaN;
                PolicyLoss.Token token = job.token(row, logp);
                job.logProb()[row] = logp;
                job.tokenLoss()[row] = token.loss();
                job.ratio()[row] = token.ratio();
                if (!Float.isFinite(lse)) { // no distribution: NaN loss, statistics and gradient
                    job.tokenLoss()[row] = Double.NaN;
                    job.ratio()[row] = Double.NaN;
                    job.entropy()[row] = Float.NaN;
                    if (g != null) {
                        Arrays.fill(grad, Float.NaN);
                        MemorySegment.copy(grad, 0, g, ValueLayout.JAVA_FLOAT, 4 * rowOffset, vocab);
                    }
                    continue;
                }
                float c = (float) (job.coefficientScale()[row] * token.slope());
                job.entropy()[row] = (float) -gradientAndLogSum(x, lse, c, g == null ? null : grad);
                if (g != null) {
                    grad[target] += c;
                    MemorySegment.copy(grad, 0, g, ValueLayout.JAVA_FLOAT, 4 * rowOffset, vocab);
                }
            }
        });
    }

    /**
     * {@code sum p log p} over the row ({@code log p = x - lse}, terms of probability 0 add
     * nothing; relative to lse, so large logits do not cancel) and, if {@code grad} is not null,
     * {@code grad = -c p}.
     */
    private static double gradientAndLogSum(float[] x, float lse, float c, float[] grad) {
        FloatVector minusC = FloatVector.broadcast(F, -c);
        FloatVector sum = FloatVector.zero(F);
        for (int i = 0; i < x.length; i += F.length()) {
            FloatVector d = FloatVector.fromArray(F, x, i).sub(lse).min(0f);
            FloatVector p = VectorMath.expNonPositive(d);
            sum = sum.add(p.mul(d).blend(0f, p.eq(0f))); // 0 * -inf = 0 for masked classes
            if (grad != null) {
                p.mul(minusC).intoArray(grad, i);
            }
        }
        return sum.reduceLanes(VectorOperators.ADD);
    }
}
