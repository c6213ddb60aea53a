package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;

/**
 * Vector API implementation of {@link PolicyLoss}, fused per row ({@link SoftmaxRowCpu}): the
 * row's log-sum-exp and entropy (one read from memory; the entropy from that sweep's block sums),
 * {@code logp}, the token's loss and slope ({@link PolicyLoss#token}), then one sweep from cache
 * that writes the gradient {@code c (onehot - p)} into the caller's buffer.
 */
final class PolicyLossCpu {
    private static final int ELEMENTS_PER_TASK = 1 << 16;

    private PolicyLossCpu() {
    }

    static void run(CpuBackend cpu, PolicyLoss.PolicyRows job) {
        int vocab = job.vocab();
        DType dtype = job.logits().dtype();
        MemorySegment z = job.logits().segment();
        MemorySegment g = job.gradient() == null ? null : job.gradient().segment();
        DType gradType = job.gradient() == null ? null : job.gradient().dtype();
        float invT = job.invT();
        cpu.parallelFor(job.rows(), Math.max(1, ELEMENTS_PER_TASK / vocab), (from, to) -> {
            SoftmaxRowCpu softmax = new SoftmaxRowCpu(vocab, true);
            for (int row = from; row < to; row++) {
                int target = job.targets()[row];
                if (target < 0) { // not counted: not read
                    if (g != null) {
                        HalfFloats.fill(g, gradType, (long) row * vocab, vocab, 0f);
                    }
                    continue;
                }
                softmax.select(z, dtype, row);
                float lse = softmax.logSumExp(invT);
                float logp = Float.isFinite(lse) ? softmax.scaled(target, invT) - lse
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
                        HalfFloats.fill(g, gradType, (long) row * vocab, vocab, Float.NaN);
                    }
                    continue;
                }
                float c = (float) (job.coefficientScale()[row] * token.slope());
                job.entropy()[row] = (float) (0.0 - softmax.sumPLogP()); // +0, not -0, for a one-hot row
                if (g != null) {
                    softmax.gradient(c, target, g, gradType, row, false);
                }
            }
        });
    }
}
