package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import dev.tokenkernels.ops.loss.Reduction;
import dev.tokenkernels.ops.loss.RelationGraphKl;
import jdk.incubator.vector.FloatVector;

/**
 * Compares a {@link RelationGraphKl} result with the float64 reference, with tolerances derived
 * from fp32 rounding (first-order worst-case bounds, doubled for the higher-order terms they
 * drop). {@code e = 2^-24}, {@code n} the sequence's valid tokens, {@code tau} the temperature.
 *
 * <ol>
 *   <li>Sums of {@code d} products: the CPU keeps {@code w} lanes ({@code SPECIES_PREFERRED}),
 *       the kernel 32 (then a butterfly), so every fp32 partial sum is a chain of at most
 *       {@code c(d) = ceil(d / min(w, 32)) + 7} roundings and errs by at most {@code c(d) e} times
 *       the sum of the terms' magnitudes (Higham, "Accuracy and Stability of Numerical
 *       Algorithms", 2nd ed., section 4.2).</li>
 *   <li>A similarity {@code S = u_i . u_j / tau}: the dot product errs by {@code c e sum|u_i u_j|
 *       <= c e} (Cauchy-Schwarz on unit vectors); each norm by {@code c e / 2} relative, its
 *       reciprocal and the scaling by 3 ulp more; {@code 1/tau} and the products by 3 roundings.
 *       So {@code sigma(d) = (2 c(d) + 16) e / tau}.</li>
 *   <li>A log-probability {@code S - lse}: {@code lse} inherits {@code sigma}; the exponentials'
 *       arguments round by {@code e |S - max| <= 2e / tau}, the online rescalings of the kernel
 *       telescope to another {@code 2e / tau} plus 3 ulp per step ({@code <= n + 8} steps),
 *       accumulating {@code n} terms costs {@code n e}, the final {@code max + log} adds
 *       {@code e (1/tau + ln n) + 2e}: {@code lambda(d) = 2 sigma(d) + (5/tau + 4n + ln n + 32) e}.</li>
 *   <li>Row loss {@code sum_j p_t (log p_t - log p_s)}: errors {@code da_j} in {@code log p_s}
 *       move it by {@code |sum p_t da_j| <= lambda_s}; errors {@code db_j} in {@code log p_t} by
 *       {@code sum p_t db_j (1 + log(p_t / p_s)) <= lambda_t (1 + A)}, {@code A = sum p_t |log(p_t /
 *       p_s)|}; evaluating the sum of {@code n} terms of size {@code <= 4/tau} and the final
 *       differences adds {@code (n + 8)(4/tau + A + 4) e + 2 (2/tau + ln n + 1) e}.</li>
 *   <li>Gradient row {@code k}, feature {@code x}, in units of {@code |w| / tau}: each coefficient
 *       {@code c_j} is a signed sum of four probabilities of total {@code m_kj}, each off by
 *       {@code lambda + 2e} relative, and is scaled by a norm ({@code c / 2 + 5} more): relative
 *       {@code rho = max(lambda_s, lambda_t) + (c_s + 8) e}. Then {@code g[x] = sum_j c_j u_j[x]}
 *       errs by {@code (rho + n e) M_x}, {@code M_x = sum_j m_kj |u_j[x]|}, and {@code u_k . g} by
 *       {@code (rho + n e) M + (2 c_s + 4) e M} (Cauchy-Schwarz again: {@code sum_x |u_k[x]| M_x
 *       <= M = sum_j m_kj}). Projecting and dividing by the norm:
 *       {@code |err| <= r_k (rho + (n + 3 c_s + 14) e)(M_x + M |u_k[x]|)}, {@code r_k = 1 /
 *       max(||h_k||, 1e-8)}.</li>
 * </ol>
 * A reduced loss sums the rows' bounds times the reduction's factor, plus the final rounding.
 */
final class RelationGraphKlCheck {
    private static final double E = 0x1p-24;
    private static final int LANES = Math.min(FloatVector.SPECIES_PREFERRED.length(), 32);

    /** One call's inputs, as fp32 values after rounding to the tensors' dtypes. */
    record Case(float[] hs, float[] ht, int batch, int tokens, int ds, int dt, int[] lengths, float tau,
                boolean selfLoops, Reduction reduction, float gradScale) {

        long validTokens() {
            long v = 0;
            for (int n : lengths) {
                v += n;
            }
            return v;
        }

        /** The reduction's factor: what the gradient and the reduced loss carry. */
        double factor() {
            return switch (reduction) {
                case NONE, SUM -> 1;
                case TOKEN_MEAN -> validTokens() == 0 ? 0 : 1.0 / validTokens();
                case BATCH_MEAN -> batch == 0 ? 0 : 1.0 / batch;
            };
        }
    }

    /** The reference to compare with; tests of the checker pass wrong ones. */
    @FunctionalInterface
    interface Reference {
        RelationGraphKlReference.Sequence sequence(Case c, int b, double weight);
    }

    static final Reference EXACT = (c, b, weight) -> RelationGraphKlReference.sequence(c.hs(), c.ht(), b, c.tokens(),
            c.ds(), c.dt(), c.lengths()[b], c.tau(), c.selfLoops(), weight);

    private RelationGraphKlCheck() {
    }

    static int chain(int d) {
        return (d + LANES - 1) / LANES + 7;
    }

    static double sigma(int d, double tau) {
        return (2.0 * chain(d) + 16) * E / tau;
    }

    static double lambda(int d, int n, double tau) {
        return 2 * sigma(d, tau) + (5 / tau + 4.0 * n + Math.log(Math.max(n, 1)) + 32) * E;
    }

    static double lossTolerance(Case c, int n, double sensitivity) {
        double tau = c.tau();
        double bound = lambda(c.ds(), n, tau) + lambda(c.dt(), n, tau) * (1 + sensitivity)
                + (n + 8) * (4 / tau + sensitivity + 4) * E + 2 * (2 / tau + Math.log(Math.max(n, 1)) + 1) * E;
        return 2 * bound;
    }

    static double gradientTolerance(Case c, int n, RelationGraphKlReference.Sequence ref, int k, int x) {
        double tau = c.tau();
        int cs = chain(c.ds());
        double rho = Math.max(lambda(c.ds(), n, tau), lambda(c.dt(), n, tau)) + (cs + 8) * E;
        double weight = Math.abs(c.gradScale() * c.factor()) / tau;
        double mass = ref.componentMass()[k][x] + ref.coefficientMass()[k] * Math.abs(ref.units()[k][x]);
        return 2 * weight * ref.invNorm()[k] * (rho + (n + 3.0 * cs + 14) * E) * mass;
    }

    /**
     * The largest {@code error / tolerance} over the rows' losses, the reduced loss and every
     * gradient element; padding must be exactly 0 (checked by assertion). Sequences listed in
     * {@code nonFinite} must be NaN on every valid row instead.
     *
     * @param gradient the result's gradient as a flat array, or null when only the loss was computed
     */
    static double worstRatio(String where, Case c, float[] loss, float[] gradient, Reference reference,
                             boolean... nonFinite) {
        double worst = 0;
        double total = 0;
        double totalTolerance = 0;
        boolean totalNaN = false;
        double weight = c.gradScale() * c.factor();
        for (int b = 0; b < c.batch(); b++) {
            int n = c.lengths()[b];
            boolean nan = b < nonFinite.length && nonFinite[b];
            RelationGraphKlReference.Sequence ref = nan ? null : reference.sequence(c, b, weight);
            for (int i = 0; i < c.tokens(); i++) {
                int row = b * c.tokens() + i;
                String at = where + " sequence " + b + " row " + i;
                if (i >= n) {
                    if (c.reduction() == Reduction.NONE) {
                        assertEquals(0f, loss[row], at + ": loss of a padding row");
                    }
                    if (gradient != null) {
                        for (int x = 0; x < c.ds(); x++) {
                            assertEquals(0f, gradient[row * c.ds() + x], at + ": gradient of a padding row");
                        }
                    }
                    continue;
                }
                if (nan) {
                    totalNaN = true;
                    if (c.reduction() == Reduction.NONE) {
                        assertTrue(Float.isNaN(loss[row]), at + ": loss of a non-finite sequence, got " + loss[row]);
                    }
                    if (gradient != null) {
                        for (int x = 0; x < c.ds(); x++) {
                            assertTrue(Float.isNaN(gradient[row * c.ds() + x]), at + ": gradient of a non-finite sequence");
                        }
                    }
                    continue;
                }
                double tolerance = lossTolerance(c, n, ref.klSensitivity()[i]);
                total += ref.loss()[i];
                totalTolerance += tolerance;
                if (c.reduction() == Reduction.NONE) {
                    worst = Math.max(worst, ratio(at + " loss", ref.loss()[i], loss[row], tolerance));
                }
                if (gradient != null) {
                    for (int x = 0; x < c.ds(); x++) {
                        worst = Math.max(worst, ratio(at + " gradient[" + x + "]", ref.gradient()[i][x],
                                gradient[row * c.ds() + x], gradientTolerance(c, n, ref, i, x)));
                    }
                }
            }
        }
        if (c.reduction() != Reduction.NONE) {
            if (totalNaN) {
                assertTrue(Float.isNaN(loss[0]), where + ": a non-finite sequence makes the reduced loss NaN");
            } else {
                double expected = c.factor() * total;
                worst = Math.max(worst, ratio(where + " reduced loss", expected, loss[0],
                        c.factor() * totalTolerance + 2 * E * Math.abs(expected)));
            }
        }
        return worst;
    }

    /** Asserts that the result matches the exact reference within the tolerances. */
    static void assertMatches(String where, Case c, RelationGraphKl.Result r, boolean... nonFinite) {
        float[] loss = r.loss().toFloatArray();
        float[] gradient = r.gradient() == null ? null : r.gradient().toFloatArray();
        double worst = worstRatio(where, c, loss, gradient, EXACT, nonFinite);
        if (!(worst <= 1)) {
            fail(where + ": error " + worst + " times the tolerance");
        }
    }

    private static double ratio(String what, double expected, float actual, double tolerance) {
        if (!Float.isFinite(actual)) {
            fail(what + ": expected " + expected + ", got " + actual);
        }
        double error = Math.abs(actual - expected);
        if (error == 0) {
            return 0;
        }
        return tolerance > 0 ? error / tolerance : Double.POSITIVE_INFINITY;
    }
}
