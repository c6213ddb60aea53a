package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;

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
        DType gradType = job.gradient() == null ? null : job.gradient().dtype();
        float invT = job.invT();
        cpu.parallelFor(job.rows(), Math.max(1, ELEMENTS_PER_TASK / vocab), (from, to) -> {
            SoftmaxRowCpu softmax = new SoftmaxRowCpu(vocab, false);
            for (int row = from; row < to; row++) {
                int target = job.targets()[row];
                if (target < 0) { // ignored: not read
                    job.logProb()[row] = 0f;
                    if (g != null && !job.accumulate()) {
                        HalfFloats.fill(g, gradType, (long) row * vocab, vocab, 0f);
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
                        HalfFloats.fill(g, gradType, (long) row * vocab, vocab, 0f);
                    }
                    continue;
                }
                if (!Float.isFinite(lse)) { // no distribution: nothing to differentiate
                    HalfFloats.fill(g, gradType, (long) row * vocab, vocab, Float.NaN);
                    continue;
                }
                softmax.gradient(c, target, g, gradType, row, job.accumulate());
            }
        });
    }
}
