package dev.tokenkernels.conformance;

import dev.tokenkernels.ops.loss.PreferenceLoss.Kind;

/**
 * Float64 preference losses written from the papers' formulas (DPO, label-smoothed DPO, IPO,
 * SimPO) with token weights, and their gradients w.r.t. both logits tensors by the chain rule
 * {@code d logp / d z = (onehot - softmax) / T}.
 */
final class PreferenceLossReference {
    private PreferenceLossReference() {
    }

    /**
     * One side of the pairs.
     *
     * @param y the target per token, -1 for a token that does not count
     * @param ref reference log-probabilities, or null (SimPO)
     * @param w token weights, or null for 1
     */
    record Side(double[][] z, int[] y, int[] starts, double[] ref, double[] w) {
        double weight(int t) {
            return w == null ? 1 : w[t];
        }
    }

    record Settings(Kind kind, double beta, double tau, double gamma, double eps, double temperature) {
    }

    record Out(double loss, double[] pairLoss, double[] rewardChosen, double[] rewardRejected, double[][] gradChosen,
               double[][] gradRejected) {
    }

    static double logSoftmaxAt(double[] z, int y, double temperature) {
        double max = Double.NEGATIVE_INFINITY;
        for (double v : z) {
            max = Math.max(max, v / temperature);
        }
        double sum = 0;
        for (double v : z) {
            sum += Math.exp(v / temperature - max);
        }
        return z[y] / temperature - max - Math.log(sum);
    }

    static double logSigmoid(double x) {
        return x < 0 ? x - Math.log1p(Math.exp(x)) : -Math.log1p(Math.exp(-x));
    }

    /** The loss, per-pair values and {@code gradScale} times the gradients. */
    static Out compute(Side chosen, Side rejected, Settings s, double gradScale) {
        int pairs = chosen.starts().length - 1;
        double[] pairLoss = new double[pairs];
        double[] rw = new double[pairs];
        double[] rl = new double[pairs];
        double[][] gw = new double[chosen.z().length][];
        double[][] gl = new double[rejected.z().length][];
        double total = 0;
        for (int b = 0; b < pairs; b++) {
            double[] sumW = weightedSum(chosen, b, s.temperature());
            double[] sumL = weightedSum(rejected, b, s.temperature());
            double dLdSumW;
            double dLdSumL;
            double eps = s.eps();
            switch (s.kind()) {
                case IPO -> {
                    double h = sumW[0] - sumL[0];
                    double d = h - 1 / (2 * s.tau());
                    pairLoss[b] = d * d;
                    dLdSumW = 2 * d;
                    dLdSumL = -2 * d;
                    rw[b] = sumW[0];
                    rl[b] = sumL[0];
                }
                default -> {
                    double aw = s.kind() == Kind.SIMPO ? s.beta() / sumW[1] : s.beta();
                    double al = s.kind() == Kind.SIMPO ? s.beta() / sumL[1] : s.beta();
                    rw[b] = aw * sumW[0];
                    rl[b] = al * sumL[0];
                    double m = rw[b] - rl[b] - (s.kind() == Kind.SIMPO ? s.gamma() : 0);
                    pairLoss[b] = -(1 - eps) * logSigmoid(m) - (eps == 0 ? 0 : eps * logSigmoid(-m));
                    // d/dm of -(1 - eps) log sigma(m) - eps log sigma(-m) = -(1 - eps)(1 - sigma(m)) + eps sigma(m)
                    double sig = 1 / (1 + Math.exp(-m));
                    double dm = -(1 - eps) * (1 - sig) + eps * sig;
                    dLdSumW = dm * aw;
                    dLdSumL = -dm * al;
                }
            }
            total += pairLoss[b];
            fill(chosen, b, dLdSumW * gradScale / pairs, s.temperature(), gw);
            fill(rejected, b, dLdSumL * gradScale / pairs, s.temperature(), gl);
        }
        return new Out(total / pairs, pairLoss, rw, rl, gw, gl);
    }

    static double loss(Side chosen, Side rejected, Settings s) {
        return compute(chosen, rejected, s, 1).loss();
    }

    /** {sum w (logp - ref) (or w logp), number of counted tokens} of response b. */
    private static double[] weightedSum(Side side, int b, double temperature) {
        double sum = 0;
        int count = 0;
        for (int t = side.starts()[b]; t < side.starts()[b + 1]; t++) {
            if (side.y()[t] < 0) {
                continue;
            }
            count++;
            double logp = logSoftmaxAt(side.z()[t], side.y()[t], temperature);
            sum += side.weight(t) * (logp - (side.ref() == null ? 0 : side.ref()[t]));
        }
        return new double[] {sum, count};
    }

    /** Rows of response b: dL/dz_t = dL/dsum * w_t (onehot - softmax) / T. */
    private static void fill(Side side, int b, double dLdSum, double temperature, double[][] grad) {
        for (int t = side.starts()[b]; t < side.starts()[b + 1]; t++) {
            int vocab = side.z()[t].length;
            grad[t] = new double[vocab];
            if (side.y()[t] < 0) {
                continue;
            }
            double c = dLdSum * side.weight(t);
            for (int j = 0; j < vocab; j++) {
                double p = Math.exp(logSoftmaxAt(side.z()[t], j, temperature));
                grad[t][j] = c * ((j == side.y()[t] ? 1 : 0) - p) / temperature;
            }
        }
    }
}
