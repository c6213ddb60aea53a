package dev.tokenkernels.conformance;

import java.util.Arrays;
import java.util.Comparator;

/**
 * Float64 reference of {@link dev.tokenkernels.ops.loss.ClippedKl}: the rule as its class doc
 * states it, with a full sort of the teacher's classes. Inputs are the fp32 logits the op sees;
 * {@code x = z * (1/T)} is rounded to fp32 as the op rounds it, everything after is float64.
 */
final class ClippedKlReference {
    private static final double CUTOFF = 20;

    /**
     * One row: the loss, the kept teacher mass, {@code d loss / d z_s}, {@code d loss / d l} and
     * {@code d loss / d u}, and for the hard rule the distance from the nearest {@code c_j} to a
     * bound (below rounding, a class's membership is not a property of the op).
     */
    record Row(double loss, double keptMass, double[] gradient, double lowerGradient, double upperGradient,
               double cutDistance, boolean infiniteVisible) {
    }

    private ClippedKlReference() {
    }

    static Row row(float[] zs, float[] zt, int offset, int vocab, float temperature, boolean reverse, double gamma,
                   double l, double u, int keptTarget) {
        float invT = 1f / temperature;
        double[] xs = new double[vocab];
        double[] xt = new double[vocab];
        for (int j = 0; j < vocab; j++) {
            xs[j] = zs[offset + j] * invT;
            xt[j] = zt[offset + j] * invT;
        }
        double[] ls = DivergenceReference.logSoftmax(xs, 1);
        double[] lt = DivergenceReference.logSoftmax(xt, 1);
        Integer[] order = new Integer[vocab];
        for (int j = 0; j < vocab; j++) {
            order[j] = j;
        }
        // Descending x, ties by index; adding 0.0 makes -0.0 tie with 0.0 as it does in fp32.
        Arrays.sort(order, Comparator.<Integer>comparingDouble(j -> -(xt[j] + 0.0)).thenComparingInt(j -> j));
        double[] c = new double[vocab];
        double running = 0;
        double distance = Double.POSITIVE_INFINITY;
        for (int j : order) {
            c[j] = running;
            distance = Math.min(distance, Math.min(Math.abs(running - l), u >= 1 ? Double.POSITIVE_INFINITY
                    : Math.abs(running - u)));
            running += Math.exp(lt[j]);
        }
        double[] g = new double[vocab];
        double[] gl = new double[vocab];
        double[] gu = new double[vocab];
        for (int j = 0; j < vocab; j++) {
            boolean kept = j == keptTarget && xt[j] > Double.NEGATIVE_INFINITY; // a masked target stays out
            double[] gate = kept ? new double[] {1, 0, 0} : gate(c[j], l, u, gamma, xt[j]);
            g[j] = gate[0];
            gl[j] = gate[1];
            gu[j] = gate[2];
        }
        double keptT = 0;
        double keptS = 0;
        for (int j = 0; j < vocab; j++) {
            keptT += g[j] * Math.exp(lt[j]);
            keptS += g[j] * Math.exp(ls[j]);
        }
        double[] grad = new double[vocab];
        if (keptT == 0) {
            return new Row(0, 0, grad, 0, 0, distance, false);
        }
        double sum = 0;
        for (int j = 0; j < vocab; j++) {
            double w = g[j] * Math.exp(reverse ? ls[j] : lt[j]);
            if (w != 0) {
                sum += reverse ? w * (ls[j] - lt[j]) : w * (lt[j] - ls[j]);
            }
        }
        double mean = sum / (reverse ? keptS : keptT);
        double loss = reverse ? mean + Math.log(keptT) - Math.log(keptS) : mean + Math.log(keptS) - Math.log(keptT);
        double dl = 0;
        double du = 0;
        for (int j = 0; j < vocab; j++) {
            double pt = Math.exp(lt[j]) / keptT;
            double qs = Math.exp(ls[j]) / keptS;
            double dLdg;
            if (reverse) {
                double e = ls[j] - lt[j];
                grad[j] = qs == 0 || g[j] == 0 ? 0 : g[j] * qs * (e - mean) * invT;
                dLdg = (qs == 0 ? 0 : qs * (e - mean - 1)) + pt;
            } else {
                double d = lt[j] - ls[j];
                grad[j] = g[j] * (qs - pt) * invT;
                dLdg = (pt == 0 ? 0 : pt * (d - mean - 1)) + qs;
            }
            if (gl[j] != 0) {
                dl += dLdg * gl[j];
            }
            if (gu[j] != 0) {
                du += dLdg * gu[j];
            }
        }
        // Whether a class that makes the divergence infinite (kept, probability 0 on the other side)
        // is within e^-80 of its row's max, where fp32 must see it; below, e^x flushes to 0.
        boolean infinite = false;
        double maxOwn = Double.NEGATIVE_INFINITY;
        for (int j = 0; j < vocab; j++) {
            maxOwn = Math.max(maxOwn, reverse ? ls[j] : lt[j]);
        }
        for (int j = 0; j < vocab; j++) {
            double own = reverse ? ls[j] : lt[j];
            double other = g[j] * Math.exp(reverse ? lt[j] : ls[j]);
            if (g[j] > 0 && other == 0 && own > maxOwn - 80) {
                infinite = true;
            }
        }
        return new Row(loss, keptT, grad, dl, du, distance, infinite);
    }

    /** {@code {g, dg/dl, dg/du}} at cumulative mass {@code c} of a class of teacher logit {@code x}. */
    static double[] gate(double c, double l, double u, double gamma, double x) {
        if (x == Double.NEGATIVE_INFINITY) { // masked by the teacher: gate 0 for every u and rule
            return new double[] {0, 0, 0};
        }
        if (gamma == 0) {
            // c < 1 holds exactly for every class of non-zero probability: u = 1 passes them all.
            return new double[] {l <= c && (u >= 1 || c < u) ? 1 : 0, 0, 0};
        }
        double a = (c - l) / gamma;
        double b = (u - c) / gamma;
        if (a < -CUTOFF || b < -CUTOFF) {
            return new double[] {0, 0, 0};
        }
        double sa = 1 / (1 + Math.exp(-a));
        double sb = 1 / (1 + Math.exp(-b));
        double g = sa * sb;
        return new double[] {g, -g * (1 - sa) / gamma, g * (1 - sb) / gamma};
    }

    /** The loss alone from float64 student logits, for finite differences. */
    static double loss(double[] zs, float[] zt, float temperature, boolean reverse, double gamma, double l, double u) {
        int vocab = zs.length;
        double invT = 1.0 / temperature;
        double[] xs = new double[vocab];
        for (int j = 0; j < vocab; j++) {
            xs[j] = zs[j] * invT;
        }
        double[] ls = DivergenceReference.logSoftmax(xs, 1);
        double[] x = toX(zt, temperature);
        double[] lt = DivergenceReference.logSoftmax(x, 1);
        Integer[] order = new Integer[vocab];
        for (int j = 0; j < vocab; j++) {
            order[j] = j;
        }
        Arrays.sort(order, Comparator.<Integer>comparingDouble(j -> -(x[j] + 0.0)).thenComparingInt(j -> j));
        double[] g = new double[vocab];
        double running = 0;
        for (int j : order) {
            g[j] = gate(running, l, u, gamma, x[j])[0];
            running += Math.exp(lt[j]);
        }
        double keptT = 0;
        double keptS = 0;
        double sum = 0;
        for (int j = 0; j < vocab; j++) {
            keptT += g[j] * Math.exp(lt[j]);
            keptS += g[j] * Math.exp(ls[j]);
            double w = g[j] * Math.exp(reverse ? ls[j] : lt[j]);
            if (w != 0) {
                sum += reverse ? w * (ls[j] - lt[j]) : w * (lt[j] - ls[j]);
            }
        }
        double mean = sum / (reverse ? keptS : keptT);
        return reverse ? mean + Math.log(keptT) - Math.log(keptS) : mean + Math.log(keptS) - Math.log(keptT);
    }

    private static double[] toX(float[] z, float temperature) {
        float invT = 1f / temperature;
        double[] x = new double[z.length];
        for (int j = 0; j < z.length; j++) {
            x[j] = z[j] * invT;
        }
        return x;
    }
}
