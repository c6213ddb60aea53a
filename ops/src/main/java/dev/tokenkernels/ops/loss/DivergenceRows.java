package dev.tokenkernels.ops.loss;

import dev.tokenkernels.runtime.Tensor;

/**
 * One validated {@link Divergence} call as the backends see it: per row, compute the divergence
 * into {@code rowLoss[i]} and, when {@code gradCoef != null}, write
 * {@code gradCoef[i] * d(divergence_i)/d(x_s)} (x = z / T) into row {@code i} of {@code gradient}.
 * Rows with weight 0 get loss 0 and a zero gradient without being read.
 *
 * @param kind the effective kind (JSD with beta 0 or 1 already mapped to KL)
 * @param gradCoef per row {@code gradScale * reductionFactor * weight / T}, or null for no gradient
 * @param gradient F32 [N, V] (possibly the student itself), or null
 * @param filter the proxy filter applied to the teacher (Lp-Reg), or null
 * @param filterLogThreshold {@code log(kappa)} or {@code log(tau)} of the filter, rounded to fp32
 * @param reference with {@code alpha}: the teacher is {@code fma(alpha_i, z_t - z_ref, z_t)}; or null
 */
record DivergenceRows(Tensor student, Tensor teacher, Divergence.Kind kind, float beta, float invT, float[] weights,
                      float[] gradCoef, Tensor gradient, float[] rowLoss, ProxyDistribution.Mode filter,
                      float filterLogThreshold, Tensor reference, float[] alpha) {

    int rows() {
        return (int) student.dim(0);
    }

    int vocab() {
        return (int) student.dim(1);
    }

    /** The teacher's row length; larger than {@link #vocab()} when comparing over a shared prefix. */
    int teacherStride() {
        return (int) teacher.dim(1);
    }

    boolean inPlace() {
        return gradient == student;
    }
}
