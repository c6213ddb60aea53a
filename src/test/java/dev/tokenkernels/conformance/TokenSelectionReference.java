package dev.tokenkernels.conformance;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Plain Java selection by sorting, from TokenSelection's definitions: masked entries ordered by
 * value (Float.compare: the IEEE total order, -0.0 before +0.0) then by index, lower first; for
 * the largest, value descending and still the lower index first.
 */
final class TokenSelectionReference {
    private TokenSelectionReference() {
    }

    /** Masked indices in the selection order. */
    static List<Integer> ordered(float[] scores, boolean[] mask, boolean largest) {
        List<Integer> idx = new ArrayList<>();
        for (int i = 0; i < scores.length; i++) {
            if (mask == null || mask[i]) {
                idx.add(i);
            }
        }
        Comparator<Integer> byValue = (a, b) -> Float.compare(scores[a], scores[b]);
        if (largest) {
            byValue = byValue.reversed();
        }
        idx.sort(byValue.thenComparing(Comparator.naturalOrder()));
        return idx;
    }

    /**
     * 1-based rank of quantile q among n: NEAREST_RANK max(1, ceil(q n)) or ROUND_LINEAR
     * 1 + rint(q (n - 1)), with q the decimal it prints as and the products exact.
     */
    static long rank(double q, long n, boolean roundLinear) {
        java.math.BigDecimal exact = new java.math.BigDecimal(Double.toString(q));
        long r = roundLinear
                ? 1 + exact.multiply(java.math.BigDecimal.valueOf(n - 1)).setScale(0, java.math.RoundingMode.HALF_EVEN).longValue()
                : exact.multiply(java.math.BigDecimal.valueOf(n)).setScale(0, java.math.RoundingMode.CEILING).longValue();
        return Math.max(1, Math.min(n, r));
    }

    /** The keep-k mask: the first min(k, n) of the order. */
    static boolean[] keep(float[] scores, boolean[] mask, long k, boolean largest) {
        boolean[] out = new boolean[scores.length];
        List<Integer> order = ordered(scores, mask, largest);
        for (int j = 0; j < Math.min(k, order.size()); j++) {
            out[order.get(j)] = true;
        }
        return out;
    }

    /** Masked entries with value >= the value of ascending rank r (Float.compare order). */
    static boolean[] atLeast(float[] scores, boolean[] mask, long r) {
        boolean[] out = new boolean[scores.length];
        List<Integer> order = ordered(scores, mask, false);
        if (order.isEmpty()) {
            return out;
        }
        float threshold = scores[order.get((int) r - 1)];
        for (int i = 0; i < scores.length; i++) {
            out[i] = (mask == null || mask[i]) && Float.compare(scores[i], threshold) >= 0;
        }
        return out;
    }
}
