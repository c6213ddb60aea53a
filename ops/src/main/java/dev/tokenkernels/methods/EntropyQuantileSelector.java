package dev.tokenkernels.methods;

import dev.tokenkernels.ops.select.TokenSelection;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.ValueLayout;
import java.math.BigDecimal;

/**
 * Entropy-quantile token selection: train only on the tokens whose entropy is at or above the
 * {@code (1 - rho)}-quantile of the batch's entropies, the "forking" tokens (Wang et al., 2025,
 * "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective Reinforcement Learning for
 * LLM Reasoning", arXiv:2506.01939, keep the top 20%: rho = 0.2).
 *
 * <p>{@code keep_t = H_t >= quantile(H over the mask, 1 - rho)} with the quantile as the paper's
 * {@code torch.quantile} takes it by default (linear interpolation between order statistics):
 * the tokens at or above the entry of rank {@code 1 + ceil((1 - rho)(n - 1))}
 * ({@link TokenSelection.Rank#LINEAR_CEILING}, {@link TokenSelection#atLeastQuantile}), which are
 * exactly those at or above the interpolated value. Without ties that keeps
 * {@code floor(1 + rho (n - 1))} tokens (2 of 10 at rho = 0.2, 3 of 11); tokens tied with the
 * quantile are all kept ({@code -0.0} is the entropy 0, tied with {@code +0.0}). Exact on every
 * backend. Apply the mask to a loss with
 * {@link TokenSelection#ignoreUnselected}.
 */
public final class EntropyQuantileSelector {
    private static final int NEGATIVE_ZERO = Float.floatToRawIntBits(-0f);
    private final double rho;
    private final TokenSelection.Rank rank;
    private final Backend backend;

    /**
     * A selector keeping the fraction {@code rho} of highest-entropy tokens; {@link #defaults()} keeps the paper's 20%.
     *
     * @param rho the fraction to keep, in (0, 1]
     * @param backend where to run, or null for the default backend
     */
    public EntropyQuantileSelector(double rho, Backend backend) {
        Checks.require(rho > 0 && rho <= 1, "rho", "a fraction in (0, 1]", rho);
        this.rho = rho;
        this.rank = TokenSelection.Rank.LINEAR_CEILING;
        this.backend = backend;
    }

    /** rho = 0.2, the default backend. */
    public static EntropyQuantileSelector defaults() {
        return new EntropyQuantileSelector(0.2, null);
    }

    /**
     * U8 {@code [N]}: 1 for the kept tokens of {@code entropy} (F32 {@code [N]}, no NaN where the
     * mask counts) among {@code mask} (U8 {@code [N]}, null: all); nothing kept without masked tokens.
     */
    public Tensor keep(Tensor entropy, Tensor mask) {
        // checked here so that errors name entropy, not the selection op's "scores"
        Checks.notNull("entropy", entropy);
        Checks.rank("entropy", entropy, 1, "[N]");
        Checks.dtype("entropy", entropy, DType.F32);
        long n = entropy.dim(0);
        if (mask != null) {
            Checks.rank("mask", mask, 1, "[N]");
            Checks.dtype("mask", mask, DType.U8);
            Checks.dim("mask", mask, 0, n, "N, the entries of entropy");
        }
        boolean negativeZero = false;
        for (long t = 0; t < n; t++) {
            boolean counted = mask == null || mask.segment().get(ValueLayout.JAVA_BYTE, t) != 0;
            float h = entropy.getFloat(t);
            Checks.require(!counted || !Float.isNaN(h), "entropy[" + t + "]",
                    "a number at a counted token (NaN has no rank)", "NaN");
            negativeZero |= Float.floatToRawIntBits(h) == NEGATIVE_ZERO;
        }
        // 1 - rho in decimal: 1 - 0.7 is 0.3, not float64's 0.30000000000000004 (a rank too far at n = 11)
        double q = BigDecimal.ONE.subtract(BigDecimal.valueOf(rho)).doubleValue();
        TokenSelection.Options options = TokenSelection.Options.defaults().on(backend);
        if (!negativeZero) {
            return TokenSelection.atLeastQuantile(entropy, mask, q, rank, options);
        }
        // The selection orders -0 below +0; as entropies they are one value, tied with a quantile of 0.
        try (Tensor zeroed = Tensor.allocate(DType.F32, n)) {
            for (long t = 0; t < n; t++) {
                zeroed.setFloat(t, entropy.getFloat(t) + 0f); // -0 + 0 = +0
            }
            return TokenSelection.atLeastQuantile(zeroed, mask, q, rank, options);
        }
    }
}
