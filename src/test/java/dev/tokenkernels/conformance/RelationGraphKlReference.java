package dev.tokenkernels.conformance;

/**
 * Float64 reference of {@link dev.tokenkernels.ops.loss.RelationGraphKl}, written from its class
 * doc with the whole {@code [n, n]} graphs in memory: unit vectors, similarity matrices, row
 * softmaxes, per-row KL, and the gradient by the chain rule through the softmax, the similarity
 * and the normalization. Inputs are the fp32 values the op sees (after F16 / BF16 rounding);
 * everything after is float64.
 */
final class RelationGraphKlReference {
    static final double NORM_EPSILON = 1e-8f; // the op's fp32 constant, widened

    /**
     * One sequence of {@code n} valid tokens: per row the loss (0 for a row without columns),
     * {@code dL/dh_s} of the sum of the rows' losses times {@code weight}, and per row the
     * magnitudes the tolerances are derived from (see {@link RelationGraphKlProperties}).
     *
     * @param klSensitivity per row {@code sum_j P_t(j) |log(P_t(j) / P_s(j))|}: how much the loss
     *                      moves per unit error of the teacher's log-probabilities
     * @param coefficientMass per row {@code k}: {@code M_k = sum_j m_kj},
     *                        {@code m_kj = P_s(k,j) + P_t(k,j) + P_s(j,k) + P_t(j,k)}
     * @param componentMass per row {@code k} and feature {@code x}: {@code sum_j m_kj |u_j[x]|}
     * @param units the student's unit vectors {@code u_k}
     * @param invNorm per row {@code 1 / max(||h_s||, 1e-8)}
     */
    record Sequence(double[] loss, double[][] gradient, double[] klSensitivity, double[] coefficientMass,
                    double[][] componentMass, double[][] units, double[] invNorm) {
    }

    private RelationGraphKlReference() {
    }

    /**
     * Sequence {@code b}'s first {@code n} tokens of {@code hs [B, L, ds]} and {@code ht [B, L, dt]}
     * (flat fp32 arrays).
     */
    static Sequence sequence(float[] hs, float[] ht, int b, int tokens, int ds, int dt, int n, double tau,
                             boolean selfLoops, double weight) {
        double[][] xs = features(hs, b, tokens, ds, n);
        double[][] xt = features(ht, b, tokens, dt, n);
        return sequence(xs, xt, tau, selfLoops, weight);
    }

    static Sequence sequence(double[][] xs, double[][] xt, double tau, boolean selfLoops, double weight) {
        int n = xs.length;
        double[] norms = new double[n];
        double[][] us = units(xs, norms);
        double[][] ut = units(xt, new double[n]);
        double[][] ps = graph(us, tau, selfLoops);
        double[][] pt = graph(ut, tau, selfLoops);
        double[] loss = new double[n];
        double[] sensitivity = new double[n];
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < n; j++) {
                if (pt[i][j] > 0) {
                    loss[i] += pt[i][j] * Math.log(pt[i][j] / ps[i][j]);
                }
            }
            for (int j = 0; j < n; j++) {
                if (pt[i][j] > 0) {
                    sensitivity[i] += pt[i][j] * Math.abs(Math.log(pt[i][j] / ps[i][j]));
                }
            }
        }
        // dL/dS_s(i,j) = w (P_s(i,j) - P_t(i,j)); S_s(i,j) = u_i . u_j / tau.
        int d = xs.length == 0 ? 0 : xs[0].length;
        double[][] gradient = new double[n][d];
        double[] mass = new double[n];
        double[][] componentMass = new double[n][d];
        double[] invNorm = new double[n];
        for (int k = 0; k < n; k++) {
            double[] du = new double[d];
            for (int j = 0; j < n; j++) {
                double c = weight * (ps[k][j] - pt[k][j] + ps[j][k] - pt[j][k]) / tau;
                double m = ps[k][j] + pt[k][j] + ps[j][k] + pt[j][k];
                mass[k] += m;
                for (int x = 0; x < d; x++) {
                    du[x] += c * us[j][x];
                    componentMass[k][x] += m * Math.abs(us[j][x]);
                }
            }
            double scale = Math.max(norms[k], NORM_EPSILON);
            invNorm[k] = 1 / scale;
            if (norms[k] >= NORM_EPSILON) { // (I - u u^T) / ||h||
                double along = dot(us[k], du);
                for (int x = 0; x < d; x++) {
                    gradient[k][x] = (du[x] - along * us[k][x]) / scale;
                }
            } else { // u = h / 1e-8
                for (int x = 0; x < d; x++) {
                    gradient[k][x] = du[x] / scale;
                }
            }
        }
        return new Sequence(loss, gradient, sensitivity, mass, componentMass, us, invNorm);
    }

    /** The sum of the rows' losses from float64 student features, for finite differences. */
    static double lossSum(double[][] xs, double[][] xt, double tau, boolean selfLoops) {
        int n = xs.length;
        double[][] ps = graph(units(xs, new double[n]), tau, selfLoops);
        double[][] pt = graph(units(xt, new double[n]), tau, selfLoops);
        double sum = 0;
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < n; j++) {
                if (pt[i][j] > 0) {
                    sum += pt[i][j] * Math.log(pt[i][j] / ps[i][j]);
                }
            }
        }
        return sum;
    }

    static double[][] features(float[] h, int b, int tokens, int dim, int n) {
        double[][] x = new double[n][dim];
        for (int i = 0; i < n; i++) {
            for (int d = 0; d < dim; d++) {
                x[i][d] = h[((b * tokens) + i) * dim + d];
            }
        }
        return x;
    }

    private static double[][] units(double[][] x, double[] norms) {
        double[][] u = new double[x.length][];
        for (int i = 0; i < x.length; i++) {
            norms[i] = Math.sqrt(dot(x[i], x[i]));
            double scale = Math.max(norms[i], NORM_EPSILON);
            u[i] = new double[x[i].length];
            for (int d = 0; d < x[i].length; d++) {
                u[i][d] = x[i][d] / scale;
            }
        }
        return u;
    }

    /** Row softmax of {@code u_i . u_j / tau} over the columns; a row without columns is all 0. */
    private static double[][] graph(double[][] u, double tau, boolean selfLoops) {
        int n = u.length;
        double[][] p = new double[n][n];
        for (int i = 0; i < n; i++) {
            double max = Double.NEGATIVE_INFINITY;
            double[] s = new double[n];
            for (int j = 0; j < n; j++) {
                s[j] = j == i && !selfLoops ? Double.NEGATIVE_INFINITY : dot(u[i], u[j]) / tau;
                max = Math.max(max, s[j]);
            }
            if (max == Double.NEGATIVE_INFINITY) {
                continue;
            }
            double sum = 0;
            for (int j = 0; j < n; j++) {
                p[i][j] = Math.exp(s[j] - max);
                sum += p[i][j];
            }
            for (int j = 0; j < n; j++) {
                p[i][j] /= sum;
            }
        }
        return p;
    }

    private static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            s += a[i] * b[i];
        }
        return s;
    }
}
