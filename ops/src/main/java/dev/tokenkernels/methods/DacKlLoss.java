package dev.tokenkernels.methods;

import dev.tokenkernels.ops.loss.ClippedKl;
import dev.tokenkernels.ops.loss.LogitStats;
import dev.tokenkernels.ops.loss.Reduction;
import dev.tokenkernels.ops.loss.TargetLogProb;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;

/**
 * DAC-KL distillation (Zhang et al., 2024, "Knowledge Distillation with Distribution-Adaptive
 * Clipping"): the supervised cross-entropy on the labels plus a weighted KL between teacher and
 * student restricted to a band of the teacher's cumulative probability,
 * <pre>  L = mean_t CE(z_s, y_t) + lambda * mean_t KL_band(P_t || P_s; l_t, u_t)</pre>
 * both means over the labelled tokens (labels not {@link LogitStats#DEFAULT_IGNORE_INDEX}). The
 * band and its gate are {@link ClippedKl}'s (the paper's exact rule is not public); the bounds
 * {@code l_t < u_t} come from the caller, e.g. a small network on the teacher's hidden state,
 * which is why the loss returns their gradients too. The cross-entropy is at temperature 1, the
 * KL at the distillation temperature {@code T}.
 *
 * <p>Two fused ops: {@link ClippedKl} writes the KL's gradient, {@link TargetLogProb} adds the
 * cross-entropy's.
 */
public final class DacKlLoss {
    private final float klWeight;
    private final float gamma;
    private final float temperature;
    private final boolean labelAlwaysKept;
    private final Backend backend;

    /**
     * The DAC-KL loss with these settings; {@link #defaults()} has the defaults.
     *
     * @param klWeight lambda, finite and {@code >= 0}
     * @param gamma the band's softness ({@link ClippedKl}); 0 is the hard band
     * @param temperature of the KL, finite and {@code > 0}
     * @param labelAlwaysKept the label keeps gate 1 in the band
     * @param backend where to run, or null for the default backend
     */
    public DacKlLoss(float klWeight, float gamma, float temperature, boolean labelAlwaysKept, Backend backend) {
        Checks.require(Float.isFinite(klWeight) && klWeight >= 0f, "klWeight", "a finite value >= 0", klWeight);
        Checks.require(Float.isFinite(gamma) && gamma >= 0f, "gamma", "a finite value >= 0", gamma);
        Checks.temperature("temperature", temperature);
        this.klWeight = klWeight;
        this.gamma = gamma;
        this.temperature = temperature;
        this.labelAlwaysKept = labelAlwaysKept;
        this.backend = backend;
    }

    /** lambda 1, gamma 0.01, temperature 1, the label kept, the default backend. */
    public static DacKlLoss defaults() {
        return new DacKlLoss(1f, 0.01f, 1f, true, null);
    }

    /**
     * The loss, its two terms, and {@code gradScale} times its gradients w.r.t. the student
     * logits, {@code l} and {@code u}. Closing closes the gradients.
     */
    public record Result(float loss, float crossEntropy, float clippedKl, Tensor gradient, Tensor lowerGradient,
                         Tensor upperGradient) implements AutoCloseable {
        @Override
        public void close() {
            gradient.close();
            lowerGradient.close();
            upperGradient.close();
        }
    }

    /**
     * The loss of one batch and {@code gradScale} times its gradients.
     *
     * @param student logits {@code [N, V]}
     * @param teacher logits {@code [N, V]}
     * @param labels {@code [N]} (I32/I64), the ignore index for prompt and padding tokens
     * @param lower {@code l [N]} F32, {@code 0 <= l < u} on labelled tokens
     * @param upper {@code u [N]} F32, {@code u <= 1} on labelled tokens
     */
    public Result compute(Tensor student, Tensor teacher, Tensor labels, Tensor lower, Tensor upper, float gradScale) {
        Checks.notNull("labels", labels);
        ClippedKl.Options band = ClippedKl.Options.forwardKl(gamma).withTemperature(temperature)
                .withReduction(Reduction.TOKEN_MEAN).withTargets(labels, LogitStats.DEFAULT_IGNORE_INDEX).on(backend);
        if (labelAlwaysKept) {
            band = band.withTargetAlwaysKept();
        }
        Checks.notNull("student", student);
        Checks.rank("student", student, 2, "[N, V]");
        Tensor gradient = Tensor.allocate(DType.F32, student.dim(0), student.dim(1));
        try (ClippedKl.Result kl = ClippedKl.computeWithGradient(student, teacher, lower, upper, band,
                gradScale * klWeight, gradient)) {
            int rows = (int) student.dim(0);
            double labelled = kl.weightSum();
            float[] coefficients = new float[rows];
            for (int i = 0; i < rows; i++) {
                boolean counts = labels.getLong(i) != LogitStats.DEFAULT_IGNORE_INDEX;
                coefficients[i] = counts ? (float) (-gradScale / labelled) : 0f; // d(-mean logp)/d logp_i
            }
            TargetLogProb.Options ce = TargetLogProb.Options.defaults().accumulating().on(backend);
            double sum = 0;
            try (Tensor c = Tensor.of(coefficients, rows);
                 TargetLogProb.Result logp = TargetLogProb.computeWithGradient(student, labels, c, ce, gradient)) {
                for (int i = 0; i < rows; i++) {
                    sum += logp.logProb().getFloat(i); // 0 for ignored tokens
                }
            }
            float crossEntropy = labelled == 0 ? 0f : (float) (-sum / labelled);
            float clipped = kl.value();
            Tensor lowerGradient = copy(kl.lowerGradient());
            try {
                return new Result(crossEntropy + klWeight * clipped, crossEntropy, clipped, gradient, lowerGradient,
                        copy(kl.upperGradient()));
            } catch (RuntimeException | Error e) {
                lowerGradient.close(); // the second copy failed: the first is not the caller's yet
                throw e;
            }
        } catch (RuntimeException | Error e) {
            gradient.close();
            throw e;
        }
    }

    private static Tensor copy(Tensor t) {
        Tensor out = Tensor.allocate(DType.F32, t.dim(0));
        out.segment().copyFrom(t.segment());
        return out;
    }
}
