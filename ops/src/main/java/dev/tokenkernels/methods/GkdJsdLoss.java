package dev.tokenkernels.methods;

import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.ops.loss.LogitStats;
import dev.tokenkernels.ops.loss.Reduction;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.Tensor;

/**
 * The generalized Jensen-Shannon distillation loss of GKD (Agarwal et al., 2024, "On-Policy
 * Distillation of Language Models: Learning from Self-Generated Mistakes"): per token,
 * {@code beta KL(P_t || M) + (1 - beta) KL(P_s || M)} with {@code M = beta P_t + (1 - beta) P_s},
 * both distributions at temperature {@code T}, averaged over the tokens whose label is not the
 * ignore index (prompt and padding positions are left out). {@code beta = 0} and {@code 1} are
 * forward and reverse KL. The gradient w.r.t. the student logits comes from the same pass.
 *
 * <p>A composition of {@link Divergence}: {@code Options.jsd(beta)} with token-mean reduction
 * over the labelled tokens.
 */
public final class GkdJsdLoss {
    private final float beta;
    private final float temperature;
    private final Backend backend;

    /**
     * The generalized JSD loss with these settings; {@link #defaults()} gives the symmetric JSD.
     *
     * @param beta the teacher's weight in the mixture, in [0, 1]
     * @param temperature finite and {@code > 0}
     * @param backend where to run, or null for the default backend
     */
    public GkdJsdLoss(float beta, float temperature, Backend backend) {
        Checks.require(beta >= 0f && beta <= 1f, "beta", "a value in [0, 1]", beta);
        Checks.temperature("temperature", temperature);
        this.beta = beta;
        this.temperature = temperature;
        this.backend = backend;
    }

    /** beta 0.5 (the symmetric JSD), temperature 1, the default backend. */
    public static GkdJsdLoss defaults() {
        return new GkdJsdLoss(0.5f, 1f, null);
    }

    /**
     * The loss over {@code student [N, V]} and {@code teacher [N, V']} logits (a larger teacher
     * vocabulary is compared over the student's), averaged over the tokens whose {@code labels [N]}
     * are not {@link LogitStats#DEFAULT_IGNORE_INDEX}, and {@code gradScale} times its gradient
     * w.r.t. the student logits. The caller closes the result.
     */
    public Divergence.Result compute(Tensor student, Tensor teacher, Tensor labels, float gradScale) {
        return run(student, teacher, labels, gradScale, null);
    }

    /**
     * As {@link #compute(Tensor, Tensor, Tensor, float)}, with the gradient written into
     * {@code gradient} ({@code [N, V]}, F32, F16 or BF16, e.g. reused from step to step), which may
     * be {@code student} itself: in place.
     */
    public Divergence.Result compute(Tensor student, Tensor teacher, Tensor labels, float gradScale, Tensor gradient) {
        Checks.notNull("gradient", gradient);
        return run(student, teacher, labels, gradScale, gradient);
    }

    private Divergence.Result run(Tensor student, Tensor teacher, Tensor labels, float gradScale, Tensor gradient) {
        Checks.notNull("teacher", teacher);
        Checks.notNull("student", student);
        Checks.notNull("labels", labels); // the mean is over labelled tokens: null would silently count every row
        Divergence.Options options = Divergence.Options.jsd(beta).withTemperature(temperature)
                .withReduction(Reduction.TOKEN_MEAN).withTargets(labels, LogitStats.DEFAULT_IGNORE_INDEX).on(backend);
        if (teacher.rank() == 2 && student.rank() == 2 && teacher.dim(1) > student.dim(1)) {
            options = options.withSharedPrefix();
        }
        return GradientOut.divergence(student, teacher, options, gradScale, gradient);
    }
}
