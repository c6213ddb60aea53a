package dev.tokenkernels.bench;

import dev.tokenkernels.ops.select.TokenTerms;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;

/**
 * HAPO's and D^3S's element-wise token terms over {@code N} tokens, all three of a training step:
 * the adaptive temperature from {@code h_hat}, the adaptive clip ranges with the zone advantages,
 * and the {@code |A| H} score. Bytes: {@code h_hat} read twice, advantages twice, entropies once,
 * and the six F32 outputs written once. No scalar baseline: each term is a few flops a token.
 */
final class TokenTermsWorkload extends TokenVectorWorkload {
    private final Tensor normalized;
    private final Tensor entropy;
    private final Tensor advantages;

    TokenTermsWorkload(int tokens) {
        super(tokens);
        SplittableRandom random = new SplittableRandom(61);
        float[] hHat = new float[tokens];
        float[] h = new float[tokens];
        float[] a = new float[tokens];
        for (int i = 0; i < tokens; i++) {
            hHat[i] = (float) random.nextDouble(-1, 1);
            h[i] = (float) Math.exp(random.nextGaussian() * 2 - 2);
            a[i] = (float) random.nextGaussian();
        }
        this.normalized = Tensor.of(hHat, tokens);
        this.entropy = Tensor.of(h, tokens);
        this.advantages = Tensor.of(a, tokens);
    }

    @Override
    public String op() {
        return "token_terms";
    }

    @Override
    public long bytes() {
        return 2 * normalized.byteSize() + 2 * advantages.byteSize() + entropy.byteSize() + 6L * 4 * tokens;
    }

    @Override
    public void run(Backend backend) {
        TokenTerms.Options options = TokenTerms.Options.defaults().on(backend);
        try (Tensor temperature = TokenTerms.adaptiveTemperature(normalized, 1f, 0.5f, options);
             TokenTerms.Clipping clipping = TokenTerms.adaptiveClipping(normalized, advantages, 0.2f, 0.28f, 1f, 1f,
                     options);
             Tensor score = TokenTerms.advantageEntropyScore(advantages, entropy, options)) {
            if (temperature.dim(0) != tokens || clipping.epsLow().dim(0) != tokens || score.dim(0) != tokens) {
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
        normalized.close();
        entropy.close();
        advantages.close();
    }
}
