package dev.tokenkernels.bench;

import dev.tokenkernels.ops.select.EntropyNormalization;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

/**
 * HAPO's per-step entropy normalization over {@code N} tokens (90% counted): the 0.8-quantile
 * pivot, the variance and extremes, and {@code h_hat}. Bytes: entropies and mask read once,
 * {@code h_hat} written once (the terms computed from it are token_terms'). No scalar baseline:
 * its selection's is token_selection's.
 */
final class EntropyNormalizationWorkload extends TokenVectorWorkload {
    private final Tensor entropy;
    private final Tensor mask;

    EntropyNormalizationWorkload(int tokens) {
        super(tokens);
        SplittableRandom random = new SplittableRandom(59);
        float[] h = new float[tokens];
        for (int i = 0; i < tokens; i++) {
            h[i] = (float) Math.exp(random.nextGaussian() * 2 - 2);
        }
        this.entropy = Tensor.of(h, tokens);
        this.mask = Tensor.allocate(DType.U8, tokens);
        for (int i = 0; i < tokens; i++) {
            mask.segment().set(ValueLayout.JAVA_BYTE, i, (byte) (random.nextInt(10) != 0 ? 1 : 0));
        }
    }

    @Override
    public String op() {
        return "entropy_normalization";
    }

    @Override
    public long bytes() {
        return entropy.byteSize() + mask.byteSize() + 4L * tokens;
    }

    @Override
    public void run(Backend backend) {
        try (EntropyNormalization.Result r = EntropyNormalization.compute(entropy, mask,
                EntropyNormalization.Options.defaults().on(backend))) {
            if (r.normalized().dim(0) != tokens) {
                throw new IllegalStateException("unexpected output shape");
            }
        }
    }

    @Override
    public boolean hasScalar() {
        return false;
    }

    @Override
    public void close() {
        entropy.close();
        mask.close();
    }
}
