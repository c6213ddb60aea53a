package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * CPU implementation of {@link RelationGraphKl}:
 * <ol>
 *   <li>per sequence, fp32 unit vectors of its valid tokens on both sides, each padded with zeros
 *       to whole vectors, and {@code 1 / max(||h||, 1e-8)} of the student's (parallel over
 *       sequences; a non-finite squared norm marks the sequence);</li>
 *   <li>pass 1, parallel over rows: a row's similarities on both sides into scratch rows (SIMD dot
 *       products over the features), their max and log-sum-exp, and the row's KL (SIMD over the
 *       columns);</li>
 *   <li>pass 2 (gradient), parallel over rows: the row's similarities again, the coefficients
 *       {@code c_j = (w / tau)(P_s(k,j) - P_t(k,j) + P_s(j,k) - P_t(j,k))} (SIMD over the columns,
 *       with every row's log-sum-exps from pass 1), {@code g = sum_j c_j u_j} (SIMD over the
 *       features, columns in order) and its projection off {@code u_k}.</li>
 * </ol>
 * Excluded columns (the diagonal without self-loops, and the padding of a scratch row) hold
 * similarity {@code -inf}: probability 0 on both sides, which every sum skips.
 */
final class RelationGraphKlCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    /** Multiply-adds per parallel task, about: small sequences share a task. */
    private static final long WORK_PER_TASK = 1L << 17;

    private RelationGraphKlCpu() {
    }

    /** One sequence's valid tokens as fp32 unit vectors, rows of {@code stride} floats. */
    private record Units(float[] student, float[] teacher, float[] studentInvNorm, boolean[] studentProjected,
                         boolean finite) {
    }

    static void run(CpuBackend cpu, RelationGraphKl.GraphJob job) {
        int rows = job.rows();
        if (rows == 0) {
            return;
        }
        int strideS = padded(job.studentDim());
        int strideT = padded(job.teacherDim());
        Units[] units = new Units[job.batch()];
        cpu.parallelFor(job.batch(), 1, (from, to) -> {
            float[] decoded = new float[Math.max(strideS, strideT)];
            for (int b = from; b < to; b++) {
                units[b] = units(job, b, strideS, strideT, decoded);
            }
        });
        float[] lseS = new float[rows];
        float[] lseT = new float[rows];
        long perRow = Math.max(1L, (long) job.tokens() * (strideS + strideT));
        int grain = (int) Math.max(1, Math.min(rows, WORK_PER_TASK / perRow));
        cpu.parallelFor(rows, grain, (from, to) -> {
            Scratch sc = new Scratch(job.tokens(), strideS);
            for (int row = from; row < to; row++) {
                statistics(job, units, row, strideS, strideT, sc, lseS, lseT);
            }
        });
        if (job.gradient() == null) {
            return;
        }
        cpu.parallelFor(rows, grain, (from, to) -> {
            Scratch sc = new Scratch(job.tokens(), strideS);
            for (int row = from; row < to; row++) {
                gradient(job, units, row, strideS, strideT, sc, lseS, lseT);
            }
        });
    }

    private static int padded(int n) {
        return (n + F.length() - 1) / F.length() * F.length();
    }

    /** Per-thread scratch: a row of similarities per side, two of log-sum-exps, coefficients, a gradient row. */
    private static final class Scratch {
        final float[] ss;
        final float[] st;
        final float[] lseS;
        final float[] lseT;
        final float[] coef;
        final float[] grad;

        Scratch(int tokens, int strideS) {
            int n = padded(Math.max(tokens, 1));
            ss = new float[n];
            st = new float[n];
            lseS = new float[n];
            lseT = new float[n];
            coef = new float[n];
            grad = new float[strideS];
        }
    }

    private static Units units(RelationGraphKl.GraphJob job, int b, int strideS, int strideT, float[] decoded) {
        int n = job.lengths()[b];
        float[] us = new float[n * strideS];
        float[] ut = new float[n * strideT];
        float[] invNorm = new float[n];
        boolean[] projected = new boolean[n];
        boolean finite = true;
        for (int j = 0; j < n; j++) {
            long token = (long) b * job.tokens() + j;
            float n2 = normalize(job.student(), job.studentDim(), token, decoded, us, j * strideS);
            finite &= Float.isFinite(n2);
            float norm = (float) Math.sqrt(n2);
            invNorm[j] = 1f / Math.max(norm, RelationGraphKl.NORM_EPSILON);
            projected[j] = norm >= RelationGraphKl.NORM_EPSILON;
            finite &= Float.isFinite(normalize(job.teacher(), job.teacherDim(), token, decoded, ut, j * strideT));
        }
        return new Units(us, ut, invNorm, projected, finite);
    }

    /**
     * Writes {@code h / max(||h||, 1e-8)} of token {@code token} of {@code x} into {@code out} at
     * {@code offset} (the row's padding stays 0) and returns {@code ||h||^2} in fp32.
     */
    private static float normalize(Tensor x, int dim, long token, float[] decoded, float[] out, int offset) {
        MemorySegment src = x.segment();
        long byteOffset = token * dim * x.dtype().byteSize();
        if (x.dtype() == DType.F32) {
            MemorySegment.copy(src, ValueLayout.JAVA_FLOAT, byteOffset, decoded, 0, dim);
        } else {
            HalfFloats.decode(src, byteOffset, x.dtype(), MemorySegment.ofArray(decoded), dim);
        }
        int stride = padded(dim);
        Arrays.fill(decoded, dim, stride, 0f);
        float n2 = dot(decoded, 0, decoded, 0, stride);
        float inv = 1f / Math.max((float) Math.sqrt(n2), RelationGraphKl.NORM_EPSILON);
        for (int d = 0; d < stride; d += F.length()) {
            FloatVector.fromArray(F, decoded, d).mul(inv).intoArray(out, offset + d);
        }
        return n2;
    }

    /** {@code a[ao ..] . b[bo ..]} over {@code length} floats, a multiple of the vector length. */
    private static float dot(float[] a, int ao, float[] b, int bo, int length) {
        FloatVector acc = FloatVector.zero(F);
        for (int x = 0; x < length; x += F.length()) {
            acc = FloatVector.fromArray(F, a, ao + x).fma(FloatVector.fromArray(F, b, bo + x), acc);
        }
        return acc.reduceLanes(VectorOperators.ADD);
    }

    /**
     * Row {@code i}'s similarities on both sides into {@code sc.ss} and {@code sc.st}: {@code -inf}
     * for the excluded diagonal and past the sequence's valid tokens.
     */
    private static void similarities(RelationGraphKl.GraphJob job, Units u, int i, int n, int strideS, int strideT,
                                     Scratch sc) {
        float invT = job.invT();
        for (int j = 0; j < n; j++) {
            sc.ss[j] = dot(u.student(), i * strideS, u.student(), j * strideS, strideS) * invT;
            sc.st[j] = dot(u.teacher(), i * strideT, u.teacher(), j * strideT, strideT) * invT;
        }
        Arrays.fill(sc.ss, n, sc.ss.length, Float.NEGATIVE_INFINITY);
        Arrays.fill(sc.st, n, sc.st.length, Float.NEGATIVE_INFINITY);
        if (!job.selfLoops()) {
            sc.ss[i] = Float.NEGATIVE_INFINITY;
            sc.st[i] = Float.NEGATIVE_INFINITY;
        }
    }

    /** Pass 1 for one row: its log-sum-exps and its KL. */
    private static void statistics(RelationGraphKl.GraphJob job, Units[] units, int row, int strideS, int strideT,
                                   Scratch sc, float[] lseS, float[] lseT) {
        int b = row / job.tokens();
        int i = row % job.tokens();
        int n = job.lengths()[b];
        if (i >= n) {
            job.rowLoss()[row] = 0f;
            return;
        }
        Units u = units[b];
        if (!u.finite()) {
            job.rowLoss()[row] = Float.NaN;
            lseS[row] = Float.NaN;
            lseT[row] = Float.NaN;
            return;
        }
        if (n == 1 && !job.selfLoops()) { // no column
            job.rowLoss()[row] = 0f;
            lseS[row] = Float.NEGATIVE_INFINITY;
            lseT[row] = Float.NEGATIVE_INFINITY;
            return;
        }
        similarities(job, u, i, n, strideS, strideT, sc);
        int length = padded(n);
        float ls = logSumExp(sc.ss, length);
        float lt = logSumExp(sc.st, length);
        lseS[row] = ls;
        lseT[row] = lt;
        // KL = sum_j p_t(j) ((S_t - lse_t) - (S_s - lse_s)); columns of p_t = 0 add nothing.
        FloatVector acc = FloatVector.zero(F);
        for (int j = 0; j < length; j += F.length()) {
            FloatVector xt = FloatVector.fromArray(F, sc.st, j).sub(lt);
            FloatVector xs = FloatVector.fromArray(F, sc.ss, j).sub(ls);
            FloatVector pt = VectorMath.expNonPositive(xt.min(0f));
            acc = acc.add(pt.mul(xt.sub(xs)).blend(0f, pt.eq(0f)));
        }
        job.rowLoss()[row] = acc.reduceLanes(VectorOperators.ADD);
    }

    /** {@code log sum exp x} over {@code x[0, length)}, which holds at least one finite value. */
    private static float logSumExp(float[] x, int length) {
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        for (int j = 0; j < length; j += F.length()) {
            m = m.max(FloatVector.fromArray(F, x, j));
        }
        float max = m.reduceLanes(VectorOperators.MAX);
        FloatVector sum = FloatVector.zero(F);
        for (int j = 0; j < length; j += F.length()) {
            sum = sum.add(VectorMath.expNonPositive(FloatVector.fromArray(F, x, j).sub(max)));
        }
        return (float) (max + Math.log(sum.reduceLanes(VectorOperators.ADD)));
    }

    /** Pass 2 for one row: its gradient row. */
    private static void gradient(RelationGraphKl.GraphJob job, Units[] units, int row, int strideS, int strideT,
                                 Scratch sc, float[] lseS, float[] lseT) {
        int b = row / job.tokens();
        int k = row % job.tokens();
        int n = job.lengths()[b];
        int dim = job.studentDim();
        MemorySegment out = job.gradient().segment();
        long outOffset = 4L * row * dim;
        Units u = units[b];
        if (k < n && !u.finite()) {
            Arrays.fill(sc.grad, Float.NaN);
            MemorySegment.copy(sc.grad, 0, out, ValueLayout.JAVA_FLOAT, outOffset, dim);
            return;
        }
        if (k >= n || (n == 1 && !job.selfLoops())) { // padding, or a row without columns
            out.asSlice(outOffset, 4L * dim).fill((byte) 0);
            return;
        }
        similarities(job, u, k, n, strideS, strideT, sc);
        int length = padded(n);
        int first = b * job.tokens();
        System.arraycopy(lseS, first, sc.lseS, 0, n);
        System.arraycopy(lseT, first, sc.lseT, 0, n);
        Arrays.fill(sc.lseS, n, length, 0f);
        Arrays.fill(sc.lseT, n, length, 0f);
        float rowS = lseS[row];
        float rowT = lseT[row];
        float coef = job.gradCoef();
        // c_j = coef (P_s(k,j) - P_t(k,j) + P_s(j,k) - P_t(j,k)), S(j,k) = S(k,j). The min(0) only
        // guards exp's domain: S(k,j) <= lse(j) holds exactly in real numbers, and fp32 dot products
        // whose lane order may differ between interpreted and compiled code can round past it.
        for (int j = 0; j < length; j += F.length()) {
            FloatVector s = FloatVector.fromArray(F, sc.ss, j);
            FloatVector t = FloatVector.fromArray(F, sc.st, j);
            FloatVector forward = VectorMath.expNonPositive(s.sub(rowS).min(0f))
                    .sub(VectorMath.expNonPositive(t.sub(rowT).min(0f)));
            FloatVector backward = VectorMath.expNonPositive(s.sub(FloatVector.fromArray(F, sc.lseS, j)).min(0f))
                    .sub(VectorMath.expNonPositive(t.sub(FloatVector.fromArray(F, sc.lseT, j)).min(0f)));
            forward.add(backward).mul(coef).intoArray(sc.coef, j);
        }
        Arrays.fill(sc.grad, 0f);
        float[] us = u.student();
        for (int j = 0; j < n; j++) {
            float c = sc.coef[j];
            if (c == 0f) {
                continue; // the excluded diagonal, or both graphs agree exactly
            }
            FloatVector cv = FloatVector.broadcast(F, c);
            for (int x = 0; x < strideS; x += F.length()) {
                FloatVector.fromArray(F, us, j * strideS + x).fma(cv, FloatVector.fromArray(F, sc.grad, x))
                        .intoArray(sc.grad, x);
            }
        }
        // dL/dh_k = (g - (u_k . g) u_k) / ||h_k||, or g / 1e-8 below the norm floor.
        float invNorm = u.studentInvNorm()[k];
        float along = u.studentProjected()[k] ? dot(us, k * strideS, sc.grad, 0, strideS) : 0f;
        for (int x = 0; x < strideS; x += F.length()) {
            FloatVector g = FloatVector.fromArray(F, sc.grad, x);
            g.sub(FloatVector.fromArray(F, us, k * strideS + x).mul(along)).mul(invNorm).intoArray(sc.grad, x);
        }
        MemorySegment.copy(sc.grad, 0, out, ValueLayout.JAVA_FLOAT, outOffset, dim);
    }
}
