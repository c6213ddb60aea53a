package dev.tokenkernels.conformance;

/**
 * Float64 scalar reference of {@code LogitStats}, written from the definitions (two passes, no
 * tricks) including the documented special rows.
 */
final class LogitStatsReference {
    private LogitStatsReference() {
    }

    /** max, lse, entropy of row {@code z[offset .. offset + vocab)} divided by {@code temperature}. */
    static double[] rowStats(float[] z, int offset, int vocab, double temperature) {
        double max = Double.NEGATIVE_INFINITY;
        boolean nan = false;
        for (int j = 0; j < vocab; j++) {
            double x = z[offset + j] / temperature;
            nan |= Double.isNaN(x);
            max = Math.max(max, x);
        }
        if (nan) {
            return new double[] {Double.NaN, Double.NaN, Double.NaN};
        }
        if (max == Double.POSITIVE_INFINITY) {
            return new double[] {max, Double.NaN, Double.NaN};
        }
        if (max == Double.NEGATIVE_INFINITY) {
            return new double[] {max, max, 0};
        }
        double sum = 0;
        for (int j = 0; j < vocab; j++) {
            sum += Math.exp(z[offset + j] / temperature - max);
        }
        double lse = max + Math.log(sum);
        double entropy = 0;
        for (int j = 0; j < vocab; j++) {
            double x = z[offset + j] / temperature;
            double p = Math.exp(x - lse);
            if (p > 0) {
                entropy -= p * (x - lse);
            }
        }
        return new double[] {max, lse, entropy};
    }

    /** {@code z[row, target] / T - lse}, 0 if ignored, -inf for a fully masked row. */
    static double logProb(float[] z, int offset, long target, long ignoreIndex, double temperature, double lse) {
        if (target == ignoreIndex) {
            return 0;
        }
        double x = z[offset + (int) target] / temperature;
        if (lse == Double.NEGATIVE_INFINITY) {
            return Double.NEGATIVE_INFINITY;
        }
        return x - lse;
    }

    /** The documented error bound: {@code 1e-5 max(1, |ref|) + 2^-22 max_j |x_j|} over finite x. */
    static double tolerance(double ref, float[] z, int offset, int vocab, double temperature) {
        double maxAbs = 0;
        for (int j = 0; j < vocab; j++) {
            double x = Math.abs(z[offset + j] / temperature);
            if (Double.isFinite(x)) {
                maxAbs = Math.max(maxAbs, x);
            }
        }
        return 1e-5 * Math.max(1, Math.abs(ref)) + 0x1p-22 * maxAbs;
    }
}
