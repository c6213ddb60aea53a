package dev.tokenkernels.conformance;

import dev.tokenkernels.ops.loss.Divergence.Kind;

/**
 * Float64 reference of {@link dev.tokenkernels.ops.loss.Divergence}, written from the formulas:
 * per row, the divergence of {@code softmax(z_t / T)} and {@code softmax(z_s / T)} and its
 * gradient w.r.t. {@code z_s}, plus the scale of each quantity for tolerances.
 */
final class DivergenceReference {

    /**
     * One row.
     *
     * @param loss the divergence
     * @param gradient d(loss)/d(z_s)
     * @param lossScale sum of the magnitudes of the loss's terms (cancellation makes the error
     *     proportional to it, not to the loss)
     * @param gradientScale per element, the magnitude of the terms of the gradient (divided by T)
     * @param gradientSlack per element, an absolute allowance where the gradient jumps: total
     *     variation's {@code sign(p - q)} is undecidable in fp32 where {@code p} and {@code q} agree
     *     to rounding, and a flipped sign moves the gradient by up to {@code p / T} there and by
     *     {@code p_j * (mass of such classes) / T} elsewhere (through {@code sum p g})
     */
    record Row(double loss, double[] gradient, double lossScale, double[] gradientScale, double[] gradientSlack) {
    }

    private DivergenceReference() {
    }

    /** {@code zs} and {@code zt} hold the row's V student and V teacher logits (teacher prefix already cut). */
    static Row row(double[] zs, double[] zt, Kind kind, double beta, double temperature) {
        if (kind == Kind.JSD && beta == 0) {
            kind = Kind.FORWARD_KL;
        } else if (kind == Kind.JSD && beta == 1) {
            kind = Kind.REVERSE_KL;
        }
        int n = zs.length;
        double[] ls = logSoftmax(zs, temperature);
        double[] lt = logSoftmax(zt, temperature);
        double[] p = new double[n];
        double[] q = new double[n];
        for (int j = 0; j < n; j++) {
            p[j] = Math.exp(ls[j]);
            q[j] = Math.exp(lt[j]);
        }
        double loss = 0;
        double lossScale = 0;
        double[] dLdp = new double[n]; // d(loss)/d(p_j) (unused by forward KL)
        for (int j = 0; j < n; j++) {
            double term;
            switch (kind) {
                case FORWARD_KL -> term = xlogy(q[j], lt[j] - ls[j]);
                case REVERSE_KL -> {
                    term = xlogy(p[j], ls[j] - lt[j]);
                    dLdp[j] = ls[j] - lt[j];
                }
                case JSD -> {
                    double logM = logAddExp(Math.log(beta) + lt[j], Math.log1p(-beta) + ls[j]);
                    term = beta * xlogy(q[j], lt[j] - logM) + (1 - beta) * xlogy(p[j], ls[j] - logM);
                    dLdp[j] = (1 - beta) * (ls[j] - logM);
                }
                default -> {
                    term = 0.5 * Math.abs(p[j] - q[j]);
                    dLdp[j] = 0.5 * Math.signum(p[j] - q[j]);
                }
            }
            loss += term;
            lossScale += Math.abs(term);
        }
        double pg = 0;
        for (int j = 0; j < n; j++) {
            pg += xlogy(p[j], dLdp[j]);
        }
        double ambiguousMass = 0;
        boolean[] ambiguous = new boolean[n];
        for (int j = 0; j < n && kind == Kind.TOTAL_VARIATION; j++) {
            ambiguous[j] = Math.abs(p[j] - q[j]) <= 1e-4 * (p[j] + q[j]);
            ambiguousMass += ambiguous[j] ? p[j] : 0;
        }
        double[] gradient = new double[n];
        double[] gradientScale = new double[n];
        double[] gradientSlack = new double[n];
        for (int j = 0; j < n; j++) {
            double dx = kind == Kind.FORWARD_KL ? p[j] - q[j] : xlogy(p[j], dLdp[j] - pg);
            gradient[j] = dx / temperature;
            gradientScale[j] = (p[j] + q[j] + xlogy(p[j], Math.abs(dLdp[j]) + Math.abs(pg))) / temperature;
            gradientSlack[j] = ((ambiguous[j] ? p[j] : 0) + p[j] * ambiguousMass) / temperature;
        }
        return new Row(loss, gradient, lossScale, gradientScale, gradientSlack);
    }

    /** The loss alone, for finite differences. */
    static double loss(double[] zs, double[] zt, Kind kind, double beta, double temperature) {
        return row(zs, zt, kind, beta, temperature).loss();
    }

    /** {@code log(e^a + e^b)} without underflow. */
    private static double logAddExp(double a, double b) {
        double max = Math.max(a, b);
        return max == Double.NEGATIVE_INFINITY ? max : max + Math.log1p(Math.exp(Math.min(a, b) - max));
    }

    /** {@code x * y} with {@code 0 * anything = 0} (the convention 0 log 0 = 0). */
    private static double xlogy(double x, double y) {
        return x == 0 ? 0 : x * y;
    }

    static double[] logSoftmax(double[] z, double temperature) {
        double max = Double.NEGATIVE_INFINITY;
        for (double v : z) {
            max = Math.max(max, v / temperature);
        }
        double sum = 0;
        for (double v : z) {
            sum += Math.exp(v / temperature - max);
        }
        double lse = max + Math.log(sum);
        double[] out = new double[z.length];
        for (int j = 0; j < z.length; j++) {
            out[j] = z[j] / temperature - lse;
        }
        return out;
    }

    /**
     * A teacher row {@code z_t ~ N(0, 3)} and a student {@code z_s = z_t + N(0, eps)} of
     * {@code vocab} classes, {@code {z_s, z_t}}: a student close to its teacher (self-distillation),
     * whose divergences lie below the fp32 sums' absolute error.
     */
    static float[][] nearIdenticalRows(int vocab, double eps) {
        java.util.SplittableRandom r = new java.util.SplittableRandom(vocab + (long) (eps * 1e6));
        float[] zt = new float[vocab];
        float[] zs = new float[vocab];
        for (int j = 0; j < vocab; j++) {
            zt[j] = (float) (r.nextGaussian() * 3);
            zs[j] = (float) (zt[j] + r.nextGaussian() * eps);
        }
        return new float[][] {zs, zt};
    }
}
