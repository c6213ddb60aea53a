package dev.tokenkernels.bench;

import dev.tokenkernels.ops.select.EntropyNormalization;
import dev.tokenkernels.ops.select.TokenTerms;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

/**
 * HAPO's per-step token statistics over {@code N} tokens (90% counted): the normalized entropy
 * (the 0.8-quantile pivot, the variance and extremes, {@code h_hat}) and from it the adaptive clip
 * ranges and zone advantages. Bytes: entropies, mask and advantages read once, five F32 outputs
 * written once. No scalar baseline: its selection's is token_selection's.
 */
final class EntropyNormalizationWorkload extends TokenVectorWorkload {
    private final Tensor entropy;
    private final Tensor mask;
    private final Tensor advantages;

    EntropyNormalizationWorkload(int tokens) {
        super(tokens);
        SplittableRandom random = new SplittableRandom(59);
        float[] h = new float[tokens];
        float[] a = new float[tokens];
        for (int i = 0; i < tokens; i++) {
            h[i] = (float) Math.exp(random.nextGaussian() * 2 - 2);
            a[i] = (float) random.nextGaussian();
        }
        this.entropy = Tensor.of(h, tokens);
        this.advantages = Tensor.of(a, tokens);
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
        return entropy.byteSize() + mask.byteSize() + advantages.byteSize() + 5L * 4 * tokens;
    }

    @Override
    public void run(Backend backend) {
        try (EntropyNormalization.Result r = EntropyNormalization.compute(entropy, mask,
                EntropyNormalization.Options.defaults().on(backend));
             TokenTerms.Clipping c = TokenTerms.adaptiveClipping(r.normalized(), advantages, 0.2f, 0.2f, 1f, 1f,
                     TokenTerms.Options.defaults().on(backend))) {
            if (c.epsLow().dim(0) != tokens) {
                throw new IllegalStateException("unexpected output shape");
            }
        }
    }

    @Override
    public boolean hasScalar() {
        return false;
    }

    @Override
    public void runScalar() {
        throw new UnsupportedOperationException("no scalar baseline for HAPO's statistics (see the class doc)");
    }

    @Override
    public void close() {
        entropy.close();
        mask.close();
        advantages.close();
    }
}
