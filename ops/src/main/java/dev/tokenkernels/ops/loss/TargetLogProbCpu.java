package dev.tokenkernels.ops.loss;

import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Vector API implementation of {@link TargetLogProb}, per row with {@link SoftmaxRowCpu}: the
 * log-sum-exp of {@code x = z / T} (the row's one read from memory), then the gradient sweep
 * {@code -c exp(x - lse)} (plus what the buffer holds when accumulating) and {@code c} added at
 * the target.
 */
final class TargetLogProbCpu {
    private static final int ELEMENTS_PER_TASK = 1 << 16;

    private TargetLogProbCpu() {
    }

    static void run(CpuBackend cpu, TargetLogProb.Rows job) {
        int vocab = job.vocab();
        DType dtype = job.logits().dtype();
        MemorySegment z = job.logits().segment();
        MemorySegment g = job.gradient() == null ? null : job.gradient().segment();
        float invT = job.invT();
        cpu.parallelFor(job.rows(), Math.max(1, ELEMENTS_PER_TASK / vocab), (from, to) -> {
            SoftmaxRowCpu softmax = new SoftmaxRowCpu(vocab, false);
            for (int row = from; row < to; row++) {
                int target = job.targets()[row];
                long gradOffset = 4L * row * vocab;
                if (target < 0) { // ignored: not read
                    job.logProb()[row] = 0f;
                    if (g != null && !job.accumulate()) {
                        g.asSlice(gradOffset, 4L * vocab).fill((byte) 0);
                    }
                    continue;
                }
                softmax.select(z, dtype, row);
                float lse = softmax.logSumExp(invT);
                job.logProb()[row] = Float.isFinite(lse) ? softmax.scaled(target, invT) - lse
                        : lse == Float.NEGATIVE_INFINITY ? Float.NEGATIVE_INFINITY : Float.NaN;
                if (g == null) {
                    continue;
                }
                float c = job.coefficients()[row];
                if (c == 0f) { // the row does not count: a zero gradient, even if special
                    if (!job.accumulate()) {
                        g.asSlice(gradOffset, 4L * vocab).fill((byte) 0);
                    }
                    continue;
                }
                if (!Float.isFinite(lse)) { // no distribution: nothing to differentiate
                    for (int i = 0; i < vocab; i++) {
                        g.set(ValueLayout.JAVA_FLOAT_UNALIGNED, gradOffset + 4L * i, Float.NaN);
                    }
                    continue;
                }
                softmax.gradient(c, g, gradOffset, job.accumulate());
                long at = gradOffset + 4L * target;
                g.set(ValueLayout.JAVA_FLOAT_UNALIGNED, at, g.get(ValueLayout.JAVA_FLOAT_UNALIGNED, at) + c);
            }
        });
    }
}
