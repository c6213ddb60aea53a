package dev.tokenkernels.conformance;

import dev.tokenkernels.ops.loss.ProxyDistribution.Mode;

/**
 * Reference of {@link dev.tokenkernels.ops.loss.ProxyDistribution}: which classes are kept is
 * decided with the op's documented fp32 rule (replayed here in Java floats); sums and logs are
 * float64. FIXED mode compares with the row's log-sum-exp, whose last bits differ between
 * implementations, so a row with a class within {@link #BAND} of the cut is marked ambiguous.
 */
final class ProxyDistributionReference {
    static final double BAND = 1e-5;

    /**
     * One row.
     *
     * @param ambiguous FIXED mode only: some class lies so close to the cut that rounding decides
     */
    record Row(double logProb, double keptLse, int keptCount, boolean ambiguous, double maxAbsX) {
    }

    private ProxyDistributionReference() {
    }

    static Row row(float[] z, int offset, int n, Mode mode, float threshold, float temperature, long target,
                   long ignoreIndex) {
        float invT = 1f / temperature;
        float zMax = Float.NEGATIVE_INFINITY;
        boolean nan = false;
        double maxAbs = 0;
        for (int j = 0; j < n; j++) {
            float v = z[offset + j];
            nan |= Float.isNaN(v);
            zMax = Math.max(zMax, v);
            if (Float.isFinite(v)) {
                maxAbs = Math.max(maxAbs, Math.abs(v * invT));
            }
        }
        float max = zMax * invT;
        if (nan || max == Float.POSITIVE_INFINITY) {
            return new Row(Double.NaN, Double.NaN, 0, false, maxAbs);
        }
        if (max == Float.NEGATIVE_INFINITY) {
            return new Row(target == ignoreIndex ? 0 : Double.NEGATIVE_INFINITY, Double.NEGATIVE_INFINITY, 0, false, maxAbs);
        }
        float cut = (float) Math.log(threshold);
        double ref = max;
        if (mode == Mode.FIXED) {
            double sum = 0;
            for (int j = 0; j < n; j++) {
                sum += Math.exp((double) (z[offset + j] * invT) - max);
            }
            ref = max + Math.log(sum);
        }
        double band = mode == Mode.FIXED ? BAND * (1 + Math.abs(ref)) : 0;
        double sum = 0;
        int count = 0;
        boolean ambiguous = false;
        for (int j = 0; j < n; j++) {
            float x = z[offset + j] * invT;
            boolean keep = keep(x, max, ref, cut, mode);
            if (mode == Mode.FIXED && keep(x, max, ref - band, cut, mode) != keep(x, max, ref + band, cut, mode)) {
                ambiguous = true;
            }
            if (keep) {
                sum += Math.exp((double) x - max);
                count++;
            }
        }
        double lse = max + Math.log(sum);
        double lp = 0;
        if (target != ignoreIndex) {
            float x = z[offset + (int) target] * invT;
            lp = keep(x, max, ref, cut, mode) ? x - lse : Double.NEGATIVE_INFINITY;
        }
        return new Row(lp, lse, count, ambiguous, maxAbs);
    }

    /**
     * The teacher row with the classes the proxy drops set to {@code -inf} (what
     * {@code Divergence.Options.withTeacherFilter} compares with), or null if some class is
     * ambiguous (FIXED mode) or the row has no distribution.
     */
    static float[] filtered(float[] z, int offset, int n, Mode mode, float threshold, float temperature) {
        Row row = row(z, offset, n, mode, threshold, temperature, 0, -1);
        if (row.ambiguous() || !Double.isFinite(row.keptLse())) {
            return null;
        }
        float invT = 1f / temperature;
        float zMax = Float.NEGATIVE_INFINITY;
        for (int j = 0; j < n; j++) {
            zMax = Math.max(zMax, z[offset + j]);
        }
        float max = zMax * invT;
        double ref = max;
        if (mode == Mode.FIXED) {
            double sum = 0;
            for (int j = 0; j < n; j++) {
                sum += Math.exp((double) (z[offset + j] * invT) - max);
            }
            ref = max + Math.log(sum);
        }
        float cut = (float) Math.log(threshold);
        float[] out = new float[n];
        for (int j = 0; j < n; j++) {
            float x = z[offset + j] * invT;
            out[j] = keep(x, max, ref, cut, mode) ? z[offset + j] : Float.NEGATIVE_INFINITY;
        }
        return out;
    }

    /** The op's rule: {@code x - ref >= cut} (in fp32 for MIN_P, whose ref is the fp32 max) or {@code x >= max}. */
    private static boolean keep(float x, float max, double ref, float cut, Mode mode) {
        boolean aboveCut = mode == Mode.MIN_P ? x - max >= cut : x - ref >= cut;
        return aboveCut || x - max >= 0f;
    }
}
