package dev.tokenkernels.conformance;

import java.util.List;

/** HAPO's normalized entropy in float64, from EntropyNormalization's formulas (pivot token by a sort). */
final class EntropyNormalizationReference {
    private EntropyNormalizationReference() {
    }

    /** {@code h_hat} per token, then {pivot index, s, P, Q} appended. */
    static double[] compute(float[] h, boolean[] mask, double q, boolean roundLinear, boolean released) {
        int n = h.length;
        List<Integer> order = TokenSelectionReference.ordered(h, mask, false);
        double[] out = new double[n + 4];
        if (order.isEmpty()) {
            out[n] = -1;
            out[n + 1] = Math.sqrt(1e-8);
            out[n + 2] = 1e-8;
            out[n + 3] = 1e-8;
            return out;
        }
        int p = order.get((int) TokenSelectionReference.rank(q, order.size(), roundLinear) - 1);
        double pivot = Math.log(Math.max(h[p], 1e-8f));
        double squares = 0;
        double hi = Double.NEGATIVE_INFINITY;
        double lo = Double.POSITIVE_INFINITY;
        for (int i : order) {
            double d = Math.log(Math.max(h[i], 1e-8f)) - pivot;
            squares += d * d;
            hi = Math.max(hi, d);
            lo = Math.min(lo, d);
        }
        double s = Math.sqrt(Math.max(squares / order.size(), 1e-8));
        double pos = Math.max(1e-8, hi / s);
        double neg = Math.max(1e-8, -lo / s);
        for (int i : order) {
            double ht = (Math.log(Math.max(h[i], 1e-8f)) - pivot) / s;
            out[i] = ht > 0 ? ht / pos : released ? ht / -neg : ht / neg;
        }
        out[n] = p;
        out[n + 1] = s;
        out[n + 2] = pos;
        out[n + 3] = neg;
        return out;
    }
}
