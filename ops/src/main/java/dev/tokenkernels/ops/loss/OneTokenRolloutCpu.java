package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API implementation of {@link OneTokenRollout}: per counted row the scaled row, its
 * log-sum-exp and its draws ({@link TokenSamplerCpu}, the same draws as {@link TokenSampler}),
 * then from cache the gradient {@code c (sum_k r_k) softmax(x)} with {@code c r_k} taken off at
 * each draw.
 */
final class OneTokenRolloutCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final int ELEMENTS_PER_TASK = 1 << 16;

    private OneTokenRolloutCpu() {
    }

    static void run(CpuBackend cpu, OneTokenRollout.RolloutRows job) {
        TokenSampler.Draw draw = job.draw();
        int vocab = job.vocab();
        int k = draw.samples();
        MemorySegment g = job.gradient() == null ? null : job.gradient().segment();
        DType gradType = job.gradient() == null ? null : job.gradient().dtype();
        cpu.parallelFor(job.rows(), Math.max(1, ELEMENTS_PER_TASK / vocab), (from, to) -> {
            TokenSamplerCpu.Scratch s = new TokenSamplerCpu.Scratch(vocab);
            float[] grad = g == null ? null : new float[s.x.length];
            short[] bits = g == null ? null : new short[s.x.length];
            for (int row = from; row < to; row++) {
                long rowOffset = (long) row * vocab;
                if (!draw.drawn(row)) { // does not count: not read
                    Arrays.fill(draw.sample(), row * k, row * k + k, -1);
                    Arrays.fill(draw.logProb(), row * k, row * k + k, 0f);
                    if (g != null) {
                        HalfFloats.fill(g, gradType, (long) row * vocab, vocab, 0f);
                    }
                    continue;
                }
                float lse = s.load(draw.logits(), row, draw.invT());
                TokenSamplerCpu.sampleRow(s, vocab, lse, draw, row);
                if (g == null) {
                    continue;
                }
                if (!Float.isFinite(lse)) { // no distribution: nothing to differentiate
                    Arrays.fill(grad, Float.NaN);
                } else {
                    float c = job.coefficient()[row];
                    float rewardSum = 0f;
                    for (int j = 0; j < k; j++) {
                        rewardSum += OneTokenRollout.reward(draw.sample()[row * k + j], job.targets()[row], job.beta());
                    }
                    FloatVector scale = FloatVector.broadcast(F, c * rewardSum);
                    for (int i = 0; i < s.x.length; i += F.length()) {
                        // x - lse <= 0 up to rounding: softmax never exceeds 1 by more than an ulp.
                        VectorMath.expNonPositive(FloatVector.fromArray(F, s.x, i).sub(lse).min(0f)).mul(scale)
                                .intoArray(grad, i);
                    }
                    for (int j = 0; j < k; j++) {
                        int a = draw.sample()[row * k + j];
                        grad[a] -= c * OneTokenRollout.reward(a, job.targets()[row], job.beta());
                    }
                }
                HalfFloats.store(grad, vocab, gradType, bits, g, rowOffset * gradType.byteSize());
            }
        });
    }
}
