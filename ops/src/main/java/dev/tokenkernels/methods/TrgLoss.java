package dev.tokenkernels.methods;

import dev.tokenkernels.ops.loss.Reduction;
import dev.tokenkernels.ops.loss.RelationGraphKl;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;

/**
 * The token relationship graph term of TRG distillation (Zhang et al., 2023, "Knowledge
 * Distillation via Token-level Relationship Graph"): the student's token features should relate
 * to each other as the teacher's do. Per sequence, each token's softmax over its cosine
 * similarities to the other tokens at temperature {@code tau}, student against teacher by KL,
 * averaged over the valid tokens of the batch and weighted by {@code lambda}:
 * <pre>  L = lambda * mean_{valid i} KL(P_t(i, .) || P_s(i, .))</pre>
 * ({@link RelationGraphKl} states the graphs exactly). It is the relational term only: add the
 * task loss and any logit distillation ({@link dev.tokenkernels.ops.loss.Divergence}) to it.
 */
public final class TrgLoss {
    private final float weight;
    private final float temperature;
    private final boolean selfLoops;
    private final Backend backend;

    /**
     * The TRG term with these settings; {@link #defaults()} has the defaults.
     *
     * @param weight lambda, finite and {@code >= 0}
     * @param temperature tau of the similarity graphs, finite and {@code > 0}
     * @param selfLoops whether a token's row includes itself
     * @param backend where to run, or null for the default backend
     */
    public TrgLoss(float weight, float temperature, boolean selfLoops, Backend backend) {
        Checks.require(Float.isFinite(weight) && weight >= 0f, "weight", "a finite value >= 0", weight);
        Checks.temperature("temperature", temperature);
        this.weight = weight;
        this.temperature = temperature;
        this.selfLoops = selfLoops;
        this.backend = backend;
    }

    /** lambda 1, tau 0.1 (sharp graphs: cosine similarities lie in [-1, 1]), no self-loops, the default backend. */
    public static TrgLoss defaults() {
        return new TrgLoss(1f, 0.1f, false, null);
    }

    /** The weighted loss and {@code gradScale} times its gradient w.r.t. the student features; closing closes the gradient. */
    public record Result(float loss, Tensor gradient, long validTokens) implements AutoCloseable {
        @Override
        public void close() {
            gradient.close();
        }
    }

    /**
     * The loss over {@code student [B, L, d_s]} and {@code teacher [B, L, d_t]} features and
     * {@code gradScale} times its gradient w.r.t. the student features.
     *
     * @param lengths {@code [B]} (I32/I64) valid tokens per sequence, or null when all are valid
     */
    public Result compute(Tensor student, Tensor teacher, Tensor lengths, float gradScale) {
        Checks.notNull("student", student);
        Checks.rank("student", student, 3, "[B, L, d_s]");
        RelationGraphKl.Options options = RelationGraphKl.Options.defaults().withTemperature(temperature)
                .withReduction(Reduction.TOKEN_MEAN).on(backend);
        if (lengths != null) {
            options = options.withLengths(lengths);
        }
        if (selfLoops) {
            options = options.withSelfLoops();
        }
        Tensor gradient = Tensor.allocate(DType.F32, student.dim(0), student.dim(1), student.dim(2));
        try (RelationGraphKl.Result graph = RelationGraphKl.computeWithGradient(student, teacher, options,
                gradScale * weight, gradient)) {
            return new Result(weight * graph.value(), gradient, graph.validTokens());
        } catch (RuntimeException | Error e) {
            gradient.close();
            throw e;
        }
    }
}
