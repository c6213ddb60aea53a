package dev.tokenkernels.bench;

import dev.tokenkernels.methods.AlignDistilLoss;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;

/**
 * AlignDistil's loss with its gradient (into a reused F32 buffer, as the divergence workload): policy,
 * DPO and reverse-DPO logits of one dtype, sequences of 512 tokens, every token labelled. Bytes: the three logits tensors read once and the F32
 * gradient written once (the TVD pass reads the two teachers a second time).
 */
final class AlignDistilWorkload extends LogitsWorkload {
    private static final int SEQUENCE = 512;
    private final Tensor policy;
    private final Tensor dpo;
    private final Tensor reverse;
    private final Tensor labels;
    private final Tensor gradient;
    private final int[] starts;

    AlignDistilWorkload(int rows, int vocab, DType dtype) {
        super(rows, vocab, dtype);
        this.dpo = LogitStatsWorkload.randomLogits(rows, vocab, dtype, 45);
        this.policy = Tensor.allocate(dtype, rows, vocab);
        this.reverse = Tensor.allocate(dtype, rows, vocab);
        SplittableRandom random = new SplittableRandom(46);
        long n = (long) rows * vocab;
        for (long i = 0; i < n; i++) {
            float d = dpo.getFloat(i);
            policy.setFloat(i, d + (float) (random.nextDouble() - 0.5));
            reverse.setFloat(i, d + (float) (random.nextDouble() - 0.5) * 0.5f);
        }
        int[] y = new int[rows];
        for (int i = 0; i < rows; i++) {
            y[i] = random.nextInt(vocab);
        }
        this.labels = Tensor.ofInts(y, rows);
        this.gradient = Tensor.allocate(DType.F32, rows, vocab);
        int sequences = (rows + SEQUENCE - 1) / SEQUENCE;
        this.starts = new int[sequences + 1];
        for (int b = 0; b <= sequences; b++) {
            starts[b] = Math.min(rows, b * SEQUENCE);
        }
    }

    @Override
    public String op() {
        return "align_distil";
    }

    @Override
    public long bytes() {
        return policy.byteSize() + dpo.byteSize() + reverse.byteSize() + 4L * rows * vocab;
    }

    @Override
    public void run(Backend backend) {
        AlignDistilLoss.adaptive(0.1f, 10f, 1f, backend).compute(policy, dpo, reverse, labels, starts, 1f, gradient)
                .close();
    }

    @Override
    public boolean hasScalar() {
        return false;
    }

    @Override
    public void close() {
        policy.close();
        dpo.close();
        reverse.close();
        labels.close();
        gradient.close();
    }
}
