package dev.tokenkernels.ops.loss;

/**
 * How a token-level loss turns per-token values {@code l_i} with weights {@code w_i} (0 = ignored)
 * into what it returns. The gradient is always that of the returned value (for {@link #NONE}: of
 * the sum of the returned per-token values).
 */
public enum Reduction {
    /** Per token: {@code w_i l_i}, shape {@code [N]}. */
    NONE,
    /** {@code sum_i w_i l_i}. */
    SUM,
    /** {@code sum_i w_i l_i / sum_i w_i}: the mean over the tokens that count; 0 when none does. */
    TOKEN_MEAN,
    /** {@code sum_i w_i l_i / N}, N the number of rows, ignored or not (PyTorch's "batchmean"). */
    BATCH_MEAN;

    /** The factor that turns {@code sum_i w_i l_i} into this reduction's value. */
    double factor(long rows, double weightSum) {
        return switch (this) {
            case NONE, SUM -> 1;
            case TOKEN_MEAN -> weightSum == 0 ? 0 : 1 / weightSum;
            case BATCH_MEAN -> rows == 0 ? 0 : 1.0 / rows;
        };
    }
}
