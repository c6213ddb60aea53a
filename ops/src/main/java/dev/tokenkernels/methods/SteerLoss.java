package dev.tokenkernels.methods;

import dev.tokenkernels.ops.loss.LogitStats;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;

/**
 * STEER's token-reweighted policy loss (Hao et al., 2025, arXiv:2510.10150): each token's
 * dual-clip PPO loss is weighted down the more its update moves the policy's entropy,
 * <pre>
 *   x_t     = clamp(pi_theta(y_t), 1e-8, 1 - 1e-8)
 *   f_t     = x_t (1 - x_t) (log x_t + H_t)                 H_t the policy's entropy at token t
 *   Omega_t = | A_t / max(pi_old(y_t), 1e-8) * f_t |,   0 where that is not finite
 *   w_t     = w_max - (Omega_t - Omega_min) s,   s = (w_max - w_min) / (Omega_max - Omega_min)   (LINEAR)
 *   w_t     = clamp(exp(-k Omega_t), w_min, 1),   k = -ln(w_min) / max(Omega_max, 0.02)        (EXPONENTIAL)
 * </pre>
 * Omega_min and Omega_max over the batch's counted tokens. The linear map runs downward: the token
 * that moves entropy most gets {@code w_min}, the least {@code w_max}; when every Omega is equal
 * (no range, s undefined) every token gets the midpoint {@code (w_min + w_max) / 2}: no token is
 * told apart, so none is weighted up or down against the others (1 for the defaults). The
 * exponential map starts at 1 for Omega = 0 and reaches {@code w_min} at Omega_max (or at 0.02
 * when Omega_max is smaller); it does not use {@code w_max}. As in the paper's reference, the old
 * probability is floored at 1e-8 and a non-finite Omega (NaN logits, a NaN advantage) becomes 0
 * rather than an error; {@link PolicyLoss} then refuses non-finite old log-probabilities and
 * advantages and gives NaN on NaN rows. The weights go to {@link PolicyLoss.Options#withTokenWeights},
 * which scales the clipped and dual-clipped policy term (not a KL term).
 *
 * <p>Two passes over the logits: {@link LogitStats} gives {@code pi_theta(y)} and {@code H} of the
 * current policy, the weights are computed on the host over N floats, then {@link PolicyLoss}
 * writes the loss and gradient. The weights are treated as constants: no gradient flows through
 * them. Defaults (ours): {@code [w_min, w_max] = [0.8, 1.2]} with the linear map, a symmetric clip
 * 0.2, the dual clip {@code c = 3} (Ye et al., 2020), token mean.
 */
public final class SteerLoss {

    /** How Omega becomes a weight: linear in {@code [w_min, w_max]}, or exponential in {@code [w_min, 1]}. */
    public enum Mapping {
        /** {@code w_max} down to {@code w_min} as Omega goes from Omega_min to Omega_max. */
        LINEAR,
        /** {@code exp(-k Omega)}, clamped to {@code [w_min, 1]}. */
        EXPONENTIAL
    }

    static final double PROBABILITY_FLOOR = 1e-8;
    /** The exponential map's floor of Omega_max in its rate {@code k}. */
    static final double EXPONENTIAL_OMEGA_FLOOR = 0.02;

    private final float eps;
    private final float dualClip;
    private final float minWeight;
    private final float maxWeight;
    private final Mapping mapping;
    private final float temperature;
    private final Backend backend;

    /**
     * The STEER loss with these settings; {@link #defaults()} gives ours.
     *
     * @param eps the clip range on both sides
     * @param dualClip {@code c > 1}, or 0 for none
     * @param minWeight {@code w_min >= 0} for the linear map; in {@code (0, 1]} for the exponential one
     * @param maxWeight {@code w_max >= w_min}, the linear map's top (the exponential map's is 1)
     * @param mapping linear or exponential
     * @param temperature of the policy's softmax
     * @param backend where to run, or null for the default backend
     */
    public SteerLoss(float eps, float dualClip, float minWeight, float maxWeight, Mapping mapping, float temperature,
                     Backend backend) {
        Checks.require(Float.isFinite(eps) && eps >= 0f, "eps", "a finite value >= 0", eps);
        Checks.require(dualClip == 0f || (Float.isFinite(dualClip) && dualClip > 1f), "dualClip",
                "0 (none) or a finite c > 1", dualClip);
        Checks.require(mapping != null, "mapping", "LINEAR or EXPONENTIAL", "null");
        Checks.require(mapping == Mapping.LINEAR ? Float.isFinite(minWeight) && minWeight >= 0f
                        : minWeight > 0f && minWeight <= 1f, "minWeight",
                mapping == Mapping.LINEAR ? "a finite value >= 0" : "a value in (0, 1] (the exponential map's floor)",
                minWeight);
        Checks.require(Float.isFinite(maxWeight) && maxWeight >= minWeight, "maxWeight",
                "a finite value >= minWeight " + minWeight, maxWeight);
        Checks.temperature("temperature", temperature);
        this.eps = eps;
        this.dualClip = dualClip;
        this.minWeight = minWeight;
        this.maxWeight = maxWeight;
        this.mapping = mapping;
        this.temperature = temperature;
        this.backend = backend;
    }

    /** eps 0.2, dual clip 3, weights in [0.8, 1.2] by the linear map, temperature 1, the default backend. */
    public static SteerLoss defaults() {
        return new SteerLoss(0.2f, 3f, 0.8f, 1.2f, Mapping.LINEAR, 1f, null);
    }

    /**
     * STEER's weights of the batch (F32 [N]; 0 for tokens that do not count), from a first pass
     * over the current policy's logits.
     */
    public Tensor weights(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor advantages) {
        for (Tensor t : new Tensor[] {oldLogProb, advantages}) {
            String name = t == oldLogProb ? "oldLogProb" : "advantages";
            Checks.notNull(name, t);
            Checks.rank(name, t, 1, "[N]");
            Checks.dtype(name, t, DType.F32);
        }
        try (LogitStats.Result stats = LogitStats.compute(logits, targets,
                LogitStats.Options.defaults().withTemperature(temperature).on(backend))) {
            int rows = (int) logits.dim(0);
            Checks.dim("oldLogProb", oldLogProb, 0, rows, "N, the rows of logits");
            Checks.dim("advantages", advantages, 0, rows, "N, the rows of logits");
            double[] omega = new double[rows];
            boolean[] counted = new boolean[rows];
            double low = Double.POSITIVE_INFINITY;
            double high = Double.NEGATIVE_INFINITY;
            for (int t = 0; t < rows; t++) {
                counted[t] = targets.getLong(t) != LogitStats.DEFAULT_IGNORE_INDEX;
                if (!counted[t]) {
                    continue;
                }
                double x = Math.min(1 - PROBABILITY_FLOOR, Math.max(PROBABILITY_FLOOR, Math.exp(stats.logProb().getFloat(t))));
                double f = x * (1 - x) * (Math.log(x) + stats.entropy().getFloat(t));
                double old = Math.max(PROBABILITY_FLOOR, Math.exp(oldLogProb.getFloat(t)));
                double o = Math.abs(advantages.getFloat(t) / old * f);
                omega[t] = Double.isFinite(o) ? o : 0; // as the reference: no error, no weight from NaN
                low = Math.min(low, omega[t]);
                high = Math.max(high, omega[t]);
            }
            float[] w = new float[rows];
            boolean range = high > low;
            double scale = range ? (maxWeight - (double) minWeight) / (high - low) : 0;
            double midpoint = 0.5 * ((double) minWeight + maxWeight);
            double rate = -Math.log(minWeight) / Math.max(high, EXPONENTIAL_OMEGA_FLOOR);
            for (int t = 0; t < rows; t++) {
                if (counted[t]) {
                    // the linear map held to [minWeight, maxWeight]: at omega = high it can round below
                    // (-2e-16 for minWeight 0, which PolicyLoss refuses as a weight)
                    w[t] = (float) (mapping == Mapping.LINEAR
                            ? (range ? Math.max(minWeight, maxWeight - (omega[t] - low) * scale) : midpoint)
                            : Math.min(1, Math.max(minWeight, Math.exp(-rate * omega[t]))));
                }
            }
            return Tensor.of(w, rows);
        }
    }

    /** The PolicyLoss options this loss runs with, without the weights. */
    public PolicyLoss.Options options() {
        return PolicyLoss.Options.defaults().withClip(eps, eps).withDualClip(dualClip).withTemperature(temperature)
                .withAggregation(PolicyLoss.Aggregation.TOKEN_MEAN).on(backend);
    }

    /** The loss, its statistics and {@code gradScale} times its gradient w.r.t. {@code logits}. */
    public PolicyLoss.Result compute(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor advantages,
                                     int[] sequenceStarts, float gradScale) {
        return run(logits, targets, oldLogProb, advantages, sequenceStarts, gradScale, null);
    }

    /**
     * As {@link #compute(Tensor, Tensor, Tensor, Tensor, int[], float)},
     * with the gradient written into {@code gradient} ({@code [N, V]}, F32, F16 or BF16, e.g. reused
     * from step to step), which may be {@code logits} itself: in place, with no {@code [N, V]}
     * buffer besides the logits.
     */
    public PolicyLoss.Result compute(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor advantages,
                                     int[] sequenceStarts, float gradScale, Tensor gradient) {
        Checks.notNull("gradient", gradient);
        return run(logits, targets, oldLogProb, advantages, sequenceStarts, gradScale, gradient);
    }

    /** The weights' pass reads the logits before the loss's pass writes the gradient (perhaps over them). */
    private PolicyLoss.Result run(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor advantages,
                                  int[] sequenceStarts, float gradScale, Tensor gradient) {
        Checks.notNull("logits", logits);
        Checks.notNull("targets", targets);
        try (Tensor w = weights(logits, targets, oldLogProb, advantages)) {
            return GradientOut.policyLoss(logits, targets, oldLogProb, advantages, sequenceStarts,
                    options().withTokenWeights(w), gradScale, gradient);
        }
    }
}
