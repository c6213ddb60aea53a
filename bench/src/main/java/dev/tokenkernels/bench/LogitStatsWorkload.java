package dev.tokenkernels.bench;

import dev.tokenkernels.ops.loss.LogitStats;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;

/** LogitStats on random logits with targets, as the report and the JMH benchmark run it. */
final class LogitStatsWorkload extends LogitsWorkload {
    private final Tensor logits;
    private final Tensor targets;
    private final float[] max;
    private final float[] lse;
    private final float[] entropy;

    LogitStatsWorkload(int rows, int vocab, DType dtype) {
        super(rows, vocab, dtype);
        this.logits = randomLogits(rows, vocab, dtype, 42);
        int[] y = new int[rows];
        SplittableRandom random = new SplittableRandom(7);
        for (int i = 0; i < rows; i++) {
            y[i] = random.nextInt(vocab);
        }
        this.targets = Tensor.ofInts(y, rows);
        this.max = new float[rows];
        this.lse = new float[rows];
        this.entropy = new float[rows];
    }

    /** Logits like a language model's: mostly small, with a few large ones per row. */
    static Tensor randomLogits(int rows, int vocab, DType dtype, long seed) {
        Tensor t = Tensor.allocate(dtype, rows, vocab);
        SplittableRandom random = new SplittableRandom(seed);
        long n = (long) rows * vocab;
        for (long i = 0; i < n; i++) {
            float v = (float) (random.nextDouble() * 8 - 4);
            if (random.nextInt(1000) == 0) {
                v += 12;
            }
            t.setFloat(i, v);
        }
        return t;
    }

    @Override
    public String op() {
        return "logit_stats";
    }

    @Override
    public long bytes() {
        return logits.byteSize() + targets.byteSize() + 4L * 4 * rows;
    }

    @Override
    public void run(Backend backend) {
        var options = LogitStats.Options.defaults().on(backend);
        LogitStats.compute(logits, targets, options).close();
    }

    @Override
    public void runScalar() {
        ScalarBaselines.logitStats(logits.segment(), dtype, rows, vocab, 1f, max, lse, entropy);
    }

    @Override
    public void close() {
        logits.close();
        targets.close();
    }
}
