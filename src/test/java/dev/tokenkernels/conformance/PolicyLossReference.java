package dev.tokenkernels.conformance;

import dev.tokenkernels.ops.loss.PolicyLoss.Aggregation;
import java.util.Arrays;

/**
 * PolicyLoss in plain float64, written from the class doc's formulas: per token the ratio, HAPO's
 * zone advantage, the clipped or Lp-Reg policy term times the token weight, the k3 terms; then the
 * aggregation. The gradient is the chain rule through the branch each min/clip/clamp takes.
 */
final class PolicyLossReference {
    private PolicyLossReference() {
    }

    /** Scalar settings of one call. */
    record Settings(float epsLow, float epsHigh, float dualClip, float cap, float beta, float temperature,
                    Aggregation aggregation, long normalizer, float alpha) {
        Settings(float epsLow, float epsHigh, float dualClip, float cap, float beta, float temperature,
                 Aggregation aggregation, long normalizer) {
            this(epsLow, epsHigh, dualClip, cap, beta, temperature, aggregation, normalizer, 0.001f);
        }
    }

    /**
     * Per-token inputs; {@code epsLow}/{@code epsHigh} null for the scalar ones, {@code weight},
     * {@code outside} and {@code regularized} null when off.
     */
    record Tokens(int[] y, boolean[] counted, float[] old, float[] a, float[] ref, float[] epsLow, float[] epsHigh,
                  float[] weight, float[] outside, boolean[] regularized, float[] proxy, float lpBeta) {
        static Tokens plain(int[] y, boolean[] counted, float[] old, float[] a, float[] ref) {
            return new Tokens(y, counted, old, a, ref, null, null, null, null, null, null, 0f);
        }

        double epsLowOf(int t, Settings s) {
            return epsLow == null ? s.epsLow() : epsLow[t];
        }

        double epsHighOf(int t, Settings s) {
            return epsHigh == null ? s.epsHigh() : epsHigh[t];
        }

        boolean regularizedAt(int t) {
            return regularized != null && regularized[t];
        }
    }

    /** One token: its loss, dl/dlogp, the capped ratio and whether it counts as clipped low / high. */
    record Token(double loss, double slope, double ratio, boolean low, boolean high) {
    }

    static Token token(double logp, int t, Tokens k, Settings s) {
        double logRatio = logp - k.old()[t];
        double r = Math.exp(Math.min(20, Math.max(-20, logRatio)));
        double dr = Math.abs(logRatio) > 20 ? 0 : r;
        if (r > s.cap()) {
            r = s.cap();
            dr = 0;
        }
        double epsLow = k.epsLowOf(t, s);
        double epsHigh = k.epsHighOf(t, s);
        boolean inside = r > 1 - epsLow / 2 && r < 1 + epsHigh / 2;
        double a = k.outside() == null || inside ? k.a()[t] : k.outside()[t];
        boolean regularized = k.regularizedAt(t);
        double policy;
        double dPolicy;
        if (regularized) {
            policy = -a * r;
            dPolicy = -a * dr;
        } else {
            double clipped = Math.min(Math.max(r, 1 - epsLow), 1 + epsHigh);
            policy = -Math.min(r * a, clipped * a);
            dPolicy = r * a <= clipped * a ? -a * dr : (clipped != r ? 0 : -a * dr);
            if (s.dualClip() > 0 && a < 0 && policy > -s.dualClip() * a) {
                policy = -s.dualClip() * a;
                dPolicy = 0;
            }
        }
        double w = k.weight() == null ? 1 : k.weight()[t];
        double loss = w * policy;
        double slope = w * dPolicy;
        if (regularized) { // Lp-Reg: the k3 value clamped to [-10, 10]; constant (slope 0) where it is capped
            double e = k.proxy()[t] - logp;
            double kl = Math.exp(e) - e - 1;
            loss += k.lpBeta() * Math.min(kl, 10);
            slope += kl > 10 ? 0 : k.lpBeta() * (1 - Math.exp(e));
        }
        if (s.beta() != 0) {
            double d = k.ref()[t] - logp;
            loss += s.beta() * (Math.exp(d) - d - 1);
            slope += s.beta() * (1 - Math.exp(d));
        }
        return new Token(loss, slope, r, !regularized && a < 0 && r < 1 - epsLow, !regularized && a > 0 && r > 1 + epsHigh);
    }

    /** Each counted token's share of the aggregated loss. */
    static double[] aggregationWeights(boolean[] counted, int[] starts, Settings s) {
        int rows = counted.length;
        int sequences = starts.length - 1;
        double[] weight = new double[rows];
        long total = 0;
        long[] perSequence = new long[sequences];
        int longest = 0;
        long controls = 0;
        for (int b = 0; b < sequences; b++) {
            longest = Math.max(longest, starts[b + 1] - starts[b]);
            for (int t = starts[b]; t < starts[b + 1]; t++) {
                if (counted[t]) {
                    total++;
                    perSequence[b]++;
                    controls += t == starts[b] ? 1 : 0;
                }
            }
        }
        long later = total - controls;
        int nonEmpty = (int) Arrays.stream(perSequence).filter(c -> c > 0).count();
        for (int b = 0; b < sequences; b++) {
            for (int t = starts[b]; t < starts[b + 1]; t++) {
                if (!counted[t]) {
                    continue;
                }
                weight[t] = switch (s.aggregation()) {
                    case TOKEN_MEAN -> 1.0 / (s.normalizer() > 0 ? s.normalizer() : total);
                    case SEQ_MEAN_TOKEN_MEAN -> 1.0 / (perSequence[b] * (double) nonEmpty);
                    case SEQ_MEAN_TOKEN_SUM -> 1.0 / sequences;
                    case SEQ_MEAN_TOKEN_SUM_NORM ->
                            1.0 / (sequences * (double) (s.normalizer() > 0 ? s.normalizer() : longest));
                    case DEGRPO -> t == starts[b] ? s.alpha() / (double) controls : 1.0 / later;
                };
            }
        }
        return weight;
    }

    /**
     * Per row the gradient's coefficient {@code c_t = w_t slope_t / T} ({@code dL/dz = c (onehot - p)};
     * 0 for rows that do not count): the op forms the target's entry as {@code c - c p} in float32,
     * so near {@code p = 1} its error is about an ulp of {@code c}, not of the entry.
     */
    static double[] coefficients(double[][] z, Tokens k, int[] starts, Settings s) {
        double[] weight = aggregationWeights(k.counted(), starts, s);
        double[] c = new double[z.length];
        for (int t = 0; t < z.length; t++) {
            if (k.counted()[t]) {
                double[] logSoftmax = DivergenceReference.logSoftmax(z[t], s.temperature());
                c[t] = weight[t] * token(logSoftmax[k.y()[t]], t, k, s).slope() / s.temperature();
            }
        }
        return c;
    }

    /** The loss of the batch and dL/dz into {@code gradient} (0 for tokens that do not count). */
    static double lossAndGradient(double[][] z, Tokens k, int[] starts, Settings s, double[][] gradient) {
        double[] weight = aggregationWeights(k.counted(), starts, s);
        double loss = 0;
        for (int t = 0; t < z.length; t++) {
            Arrays.fill(gradient[t], 0);
            if (!k.counted()[t]) {
                continue;
            }
            double[] logSoftmax = DivergenceReference.logSoftmax(z[t], s.temperature());
            Token token = token(logSoftmax[k.y()[t]], t, k, s);
            loss += weight[t] * token.loss();
            for (int j = 0; j < z[t].length; j++) {
                double p = Math.exp(logSoftmax[j]);
                gradient[t][j] = weight[t] * token.slope() * ((j == k.y()[t] ? 1 : 0) - p) / s.temperature();
            }
        }
        return loss;
    }

    static double loss(double[][] z, Tokens k, int[] starts, Settings s) {
        double[][] scratch = new double[z.length][z.length == 0 ? 0 : z[0].length];
        return lossAndGradient(z, k, starts, s, scratch);
    }

    /** log softmax(z_t / T)[y_t] of a counted token. */
    static double logProb(double[] z, int y, float temperature) {
        return DivergenceReference.logSoftmax(z, temperature)[y];
    }

    /** The op's loss and gradient against the reference's, at the property test's tolerances. */
    static void assertMatches(String at, dev.tokenkernels.ops.loss.PolicyLoss.Result result, double expected,
                              double[][] expectedGradient, float gradScale) {
        Approx.assertClose(at + " loss", expected, result.loss(), 2e-5 * (1 + Math.abs(expected)));
        int vocab = expectedGradient.length == 0 ? 0 : expectedGradient[0].length;
        for (int t = 0; t < expectedGradient.length; t++) {
            double max = 0;
            for (double g : expectedGradient[t]) {
                max = Math.max(max, Math.abs(g));
            }
            for (int j = 0; j < vocab; j++) {
                Approx.assertClose(at + " gradient[" + t + "][" + j + "]", gradScale * expectedGradient[t][j],
                        result.gradient().getFloat((long) t * vocab + j), Math.abs(gradScale) * (2e-5 * max + 1e-7));
            }
        }
    }

    /** Logits of a batch as float64 rows. */
    static double[][] rows(float[] values, int rows, int vocab) {
        double[][] z = new double[rows][vocab];
        for (int t = 0; t < rows; t++) {
            for (int j = 0; j < vocab; j++) {
                z[t][j] = values[t * vocab + j];
            }
        }
        return z;
    }

    /**
     * Old log-probabilities that give each counted token a ratio in [0.5, 1.7] at least 0.01 from
     * every listed branch point.
     */
    static float[] oldLogProbs(java.util.SplittableRandom random, double[][] z, int[] y, float temperature,
                               double... branchPoints) {
        float[] old = new float[z.length];
        for (int t = 0; t < z.length; t++) {
            double logp = y[t] < 0 ? 0 : logProb(z[t], y[t], temperature);
            double r;
            boolean near;
            do {
                r = random.nextDouble(0.5, 1.7);
                near = false;
                for (double b : branchPoints) {
                    near |= Math.abs(r - b) < 0.01;
                }
            } while (near);
            old[t] = (float) (logp - Math.log(r));
        }
        return old;
    }
}
