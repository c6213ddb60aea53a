package dev.tokenkernels.conformance;

/**
 * One-token rollout in plain float64, written from the paper's formulas, given the draws: the
 * draws are the op's (they are checked separately, bit for bit, against TokenSamplerReference),
 * and the loss is a function of the logits with the draws held fixed, as the score-function
 * gradient treats them.
 */
final class OneTokenRolloutReference {
    private OneTokenRolloutReference() {
    }

    /** {@code {l_t, d l_t / d z_v for every v}} of one counted row; x = z * (1/T) as the op rounds it when {@code roundX}. */
    static double[] row(double[] z, int vocab, float temperature, int[] draws, int target, double beta, boolean roundX) {
        float invT = 1f / temperature;
        double[] x = new double[vocab];
        for (int v = 0; v < vocab; v++) {
            x[v] = roundX ? (float) z[v] * invT : z[v] / temperature;
        }
        double[] logSoftmax = DivergenceReference.logSoftmax(x, 1);
        int k = draws.length;
        double[] out = new double[vocab + 1];
        double rewardSum = 0;
        for (int a : draws) {
            double r = a == target ? 1 : -beta;
            rewardSum += r;
            out[0] -= r * logSoftmax[a] / k;
            out[1 + a] -= r / (k * (double) temperature);
        }
        for (int v = 0; v < vocab; v++) {
            out[1 + v] += rewardSum * Math.exp(logSoftmax[v]) / (k * (double) temperature);
        }
        return out;
    }

    /** The token-mean loss of all rows (rows with target < 0 do not count), draws fixed. */
    static double loss(double[] z, int rows, int vocab, float temperature, int[] draws, int k, int[] targets,
                       double beta, long normalizer) {
        long count = 0;
        double sum = 0;
        for (int t = 0; t < rows; t++) {
            if (targets[t] < 0) {
                continue;
            }
            count++;
            double[] zt = java.util.Arrays.copyOfRange(z, t * vocab, (t + 1) * vocab);
            sum += row(zt, vocab, temperature, java.util.Arrays.copyOfRange(draws, t * k, (t + 1) * k), targets[t], beta,
                    false)[0];
        }
        return sum / (normalizer > 0 ? normalizer : Math.max(count, 1));
    }
}
