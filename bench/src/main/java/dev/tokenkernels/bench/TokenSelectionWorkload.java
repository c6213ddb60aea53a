package dev.tokenkernels.bench;

import dev.tokenkernels.ops.select.TokenSelection;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

/**
 * The exact top 20% of {@code N} token scores under a mask that counts 90% of them (D^3S's token
 * level at K = 0.2, entropy-quantile selection at rho = 0.2), as a U8 mask. Bytes are the scores
 * and the mask read once and the output mask written once; the selection reads them a few more
 * times (see TokenSelection's cost), so this is below the probe by design. The scalar baseline is
 * what a JVM user would write: sort the masked (score, index) pairs, take the k-th, mark the first k.
 */
final class TokenSelectionWorkload extends TokenVectorWorkload {
    private final Tensor scores;
    private final Tensor mask;
    private final long k;

    TokenSelectionWorkload(int tokens) {
        super(tokens);
        SplittableRandom random = new SplittableRandom(53);
        float[] s = new float[tokens];
        for (int i = 0; i < tokens; i++) {
            s[i] = (float) Math.abs(random.nextGaussian()) * (float) Math.exp(random.nextGaussian()); // |A| H-like
        }
        this.scores = Tensor.of(s, tokens);
        this.mask = Tensor.allocate(DType.U8, tokens);
        long counted = 0;
        for (int i = 0; i < tokens; i++) {
            boolean in = random.nextInt(10) != 0;
            mask.segment().set(ValueLayout.JAVA_BYTE, i, (byte) (in ? 1 : 0));
            counted += in ? 1 : 0;
        }
        this.k = (long) Math.ceil(0.2 * counted);
    }

    @Override
    public String op() {
        return "token_selection";
    }

    @Override
    public long bytes() {
        return scores.byteSize() + 2L * tokens;
    }

    @Override
    public void run(Backend backend) {
        TokenSelection.topK(scores, mask, k, TokenSelection.Options.defaults().on(backend)).close();
    }

    @Override
    public void runScalar() {
        try (Tensor out = Tensor.allocate(DType.U8, tokens)) {
            ScalarBaselines.topKBySort(scores.segment(), mask.segment(), tokens, k, out.segment());
        }
    }

    @Override
    public void close() {
        scores.close();
        mask.close();
    }
}
