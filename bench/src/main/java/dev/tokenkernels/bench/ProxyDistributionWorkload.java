package dev.tokenkernels.bench;

import dev.tokenkernels.ops.loss.ProxyDistribution;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;

/** Lp-Reg's min-p proxy (kappa = 0.02) with target log-probabilities, as the report and JMH run it. */
final class ProxyDistributionWorkload extends LogitsWorkload {
    static final float KAPPA = 0.02f;
    private final Tensor logits;
    private final Tensor targets;
    private final long[] targetIndex;
    private final float[] logProb;

    ProxyDistributionWorkload(int rows, int vocab, DType dtype) {
        super(rows, vocab, dtype);
        this.logits = LogitStatsWorkload.randomLogits(rows, vocab, dtype, 44);
        int[] y = new int[rows];
        targetIndex = new long[rows];
        SplittableRandom random = new SplittableRandom(9);
        for (int i = 0; i < rows; i++) {
            y[i] = random.nextInt(vocab);
            targetIndex[i] = y[i];
        }
        this.targets = Tensor.ofInts(y, rows);
        this.logProb = new float[rows];
    }

    @Override
    public String op() {
        return "proxy_distribution";
    }

    @Override
    public long bytes() {
        return logits.byteSize() + targets.byteSize() + 3L * 4 * rows;
    }

    @Override
    public void run(Backend backend) {
        ProxyDistribution.compute(logits, targets, ProxyDistribution.Options.minP(KAPPA).on(backend)).close();
    }

    @Override
    public void runScalar() {
        ScalarBaselines.minPProxy(logits.segment(), dtype, rows, vocab, KAPPA, targetIndex, logProb);
    }

    @Override
    public void close() {
        logits.close();
        targets.close();
    }
}
