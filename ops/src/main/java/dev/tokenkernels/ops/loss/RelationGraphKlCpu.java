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
 *   <li>per sequence, fp32 unit vectors of its valid tokens on both sides, feature-major (and the
 *       student's also token-major, padded with zeros to whole vectors), and
 *       {@code 1 / max(||h||, 1e-8)} of the student's (parallel over sequences; a non-finite
 *       squared norm marks the sequence);</li>
 *   <li>pass 1, parallel over quads of rows: the quad's similarities on both sides into scratch
 *       rows, their max and log-sum-exp, and each row's KL (SIMD over the columns);</li>
 *   <li>pass 2 (gradient), parallel over quads: the similarities again, per row the coefficients
 *       {@code c_j = (w / tau)(P_s(k,j) - P_t(k,j) + P_s(j,k) - P_t(j,k))} (SIMD over the columns,
 *       with every row's log-sum-exps from pass 1), {@code g = sum_j c_j u_j}, and its projection
 *       off {@code u_k}.</li>
 * </ol>
 * Both passes stream every column of the sequence once per quad of rows, not once per row: the
 * similarities are a 4-row x 2-vector register-blocked Gram product over feature-major vectors
 * and {@code g} a 4-row x 4-vector one (loading a column for one row only left the loop bound by
 * cache bandwidth, at one multiply-add per float loaded). Every (row, column) dot product runs one
 * accumulator chain over the features in order, in a vector lane of its own (a sum across lanes
 * would round in an order that differs between compiled and interpreted code), and {@code g} adds
 * its columns in order, so the results do not depend on the blocking or on the JIT, and
 * {@code S(i, j)} and {@code S(j, i)} are the same float.
 *
 * <p>Excluded columns (the diagonal without self-loops, and the padding of a scratch row) hold
 * similarity {@code -inf}: probability 0 on both sides, which every sum skips.
 */
final class RelationGraphKlCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    /** Rows computed together. */
    private static final int QUAD = 4;
    /** Columns of the similarity micro-kernel: two vectors. */
    private static final int COLUMNS = 2 * F.length();
    /** Multiply-adds per parallel task, about: small sequences share a task. */
    private static final long WORK_PER_TASK = 1L << 18;

    private RelationGraphKlCpu() {
    }

    /**
     * One sequence's valid tokens as fp32 unit vectors: the student's as rows of {@code stride}
     * floats (for the gradient), and both sides in blocks of {@link #COLUMNS} tokens, feature-major
     * within a block ({@link #tiled}; zeros past the last token) for the similarities.
     */
    private record Units(float[] student, float[] studentColumns, float[] teacherColumns,
                         float[] studentInvNorm, boolean[] studentProjected, boolean finite) {
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
        int quadsPerSequence = (job.tokens() + QUAD - 1) / QUAD;
        int quads = job.batch() * quadsPerSequence;
        long perQuad = Math.max(1L, (long) QUAD * job.tokens() * (strideS + strideT));
        int grain = (int) Math.max(1, Math.min(quads, WORK_PER_TASK / perQuad));
        cpu.parallelFor(quads, grain, (from, to) -> {
            Scratch sc = new Scratch(job.tokens(), strideS, strideT);
            for (int quad = from; quad < to; quad++) {
                statistics(job, units, quad / quadsPerSequence, quad % quadsPerSequence * QUAD, strideS, strideT, sc,
                        lseS, lseT);
            }
        });
        if (job.gradient() == null) {
            return;
        }
        cpu.parallelFor(quads, grain, (from, to) -> {
            Scratch sc = new Scratch(job.tokens(), strideS, strideT);
            for (int quad = from; quad < to; quad++) {
                gradient(job, units, quad / quadsPerSequence, quad % quadsPerSequence * QUAD, strideS, strideT, sc,
                        lseS, lseT);
            }
        });
    }

    private static int padded(int n) {
        return (n + F.length() - 1) / F.length() * F.length();
    }

    /**
     * Per-thread scratch: per row of a quad its similarities on each side and its coefficients, a
     * sequence's log-sum-exps, and the quad's gradient rows. Rows of columns are L rounded up to
     * whole {@link #COLUMNS} blocks, as the micro-kernel writes whole blocks.
     */
    private static final class Scratch {
        final float[][] ss;
        final float[][] st;
        final float[][] coef;
        final float[] lseS;
        final float[] lseT;
        final float[][] grad;
        /** F16/BF16 bits of a gradient row on its way out. */
        final short[] bits;
        /** The quad's tokens (a partial quad repeats its last) and their features, feature-major. */
        final int[] quad = new int[QUAD];
        final float[] rowsS;
        final float[] rowsT;

        Scratch(int tokens, int strideS, int strideT) {
            int n = (Math.max(tokens, 1) + COLUMNS - 1) / COLUMNS * COLUMNS;
            ss = new float[QUAD][n];
            st = new float[QUAD][n];
            coef = new float[QUAD][n];
            lseS = new float[n];
            lseT = new float[n];
            grad = new float[QUAD][strideS];
            bits = new short[strideS];
            rowsS = new float[QUAD * strideS];
            rowsT = new float[QUAD * strideT];
        }
    }

    private static Units units(RelationGraphKl.GraphJob job, int b, int strideS, int strideT, float[] decoded) {
        int n = job.lengths()[b];
        int width = (n + COLUMNS - 1) / COLUMNS * COLUMNS;
        float[] us = new float[n * strideS];
        float[] studentColumns = new float[width * job.studentDim()];
        float[] teacherColumns = new float[width * job.teacherDim()];
        float[] unit = new float[strideT];
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
            toTiles(us, j * strideS, job.studentDim(), studentColumns, j);
            finite &= Float.isFinite(normalize(job.teacher(), job.teacherDim(), token, decoded, unit, 0));
            toTiles(unit, 0, job.teacherDim(), teacherColumns, j);
        }
        return new Units(us, studentColumns, teacherColumns, invNorm, projected, finite);
    }

    /**
     * Where feature x of token j lies in the tiled layout: token blocks of {@link #COLUMNS}, each
     * {@code dim} rows of {@link #COLUMNS} floats, so that the micro-kernel reads a block's
     * features as one sequential stream.
     */
    private static int tiled(int j, int x, int dim) {
        return (j / COLUMNS * dim + x) * COLUMNS + j % COLUMNS;
    }

    /** Token j's {@code dim} features from {@code row[from ..]} into the tiled layout. */
    private static void toTiles(float[] row, int from, int dim, float[] tiles, int j) {
        for (int x = 0; x < dim; x++) {
            tiles[tiled(j, x, dim)] = row[from + x];
        }
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
        return (float) VectorMath.sumLanes(acc);
    }

    /**
     * The similarities between the quad's rows ({@code rows[x * QUAD + q]}, feature-major) and the
     * {@link #COLUMNS} tokens of block {@code j / COLUMNS}, times {@code scale}, into
     * {@code out[q][j ..]}: per feature, two vectors of columns and four broadcast row values,
     * eight multiply-adds into accumulators whose lanes are the block's dot products. Each dot
     * product is one chain over the features in order, in a lane of its own (a sum across lanes
     * would round in an order that differs between compiled and interpreted code), so
     * {@code S(i, j)} and {@code S(j, i)} are the same float and no result depends on the blocking.
     */
    private static void gram(float[] columns, int dim, float[] rows, int j, float scale, float[][] out) {
        int v = F.length();
        FloatVector s00 = FloatVector.zero(F);
        FloatVector s01 = FloatVector.zero(F);
        FloatVector s10 = FloatVector.zero(F);
        FloatVector s11 = FloatVector.zero(F);
        FloatVector s20 = FloatVector.zero(F);
        FloatVector s21 = FloatVector.zero(F);
        FloatVector s30 = FloatVector.zero(F);
        FloatVector s31 = FloatVector.zero(F);
        for (int x = 0, at = j * dim; x < dim; x++, at += COLUMNS) {
            FloatVector c0 = FloatVector.fromArray(F, columns, at);
            FloatVector c1 = FloatVector.fromArray(F, columns, at + v);
            FloatVector row = FloatVector.broadcast(F, rows[x * QUAD]);
            s00 = c0.fma(row, s00);
            s01 = c1.fma(row, s01);
            row = FloatVector.broadcast(F, rows[x * QUAD + 1]);
            s10 = c0.fma(row, s10);
            s11 = c1.fma(row, s11);
            row = FloatVector.broadcast(F, rows[x * QUAD + 2]);
            s20 = c0.fma(row, s20);
            s21 = c1.fma(row, s21);
            row = FloatVector.broadcast(F, rows[x * QUAD + 3]);
            s30 = c0.fma(row, s30);
            s31 = c1.fma(row, s31);
        }
        s00.mul(scale).intoArray(out[0], j);
        s01.mul(scale).intoArray(out[0], j + v);
        s10.mul(scale).intoArray(out[1], j);
        s11.mul(scale).intoArray(out[1], j + v);
        s20.mul(scale).intoArray(out[2], j);
        s21.mul(scale).intoArray(out[2], j + v);
        s30.mul(scale).intoArray(out[3], j);
        s31.mul(scale).intoArray(out[3], j + v);
    }

    /** The features of tokens {@code r[0..3]} from the tiled layout into {@code rows[x * QUAD + q]}. */
    private static void quadRows(float[] columns, int dim, int[] r, float[] rows) {
        for (int q = 0; q < QUAD; q++) {
            for (int x = 0; x < dim; x++) {
                rows[x * QUAD + q] = columns[tiled(r[q], x, dim)];
            }
        }
    }

    /**
     * The similarities of rows {@code i0 .. i0 + valid - 1} on both sides into {@code sc.ss[q]} and
     * {@code sc.st[q]}: {@code -inf} for the excluded diagonal and past the sequence's {@code n}
     * valid tokens. A partial quad of rows repeats its last token, and a partial block of columns
     * reads zero features (those results are overwritten or never read).
     */
    private static void similarities(RelationGraphKl.GraphJob job, Units u, int i0, int valid, int n, int strideS,
                                     int strideT, Scratch sc) {
        float invT = job.invT();
        for (int q = 0; q < QUAD; q++) {
            sc.quad[q] = i0 + Math.min(q, valid - 1);
        }
        quadRows(u.studentColumns(), job.studentDim(), sc.quad, sc.rowsS);
        quadRows(u.teacherColumns(), job.teacherDim(), sc.quad, sc.rowsT);
        for (int j = 0; j < n; j += COLUMNS) {
            gram(u.studentColumns(), job.studentDim(), sc.rowsS, j, invT, sc.ss);
            gram(u.teacherColumns(), job.teacherDim(), sc.rowsT, j, invT, sc.st);
        }
        for (int q = 0; q < valid; q++) {
            Arrays.fill(sc.ss[q], n, sc.ss[q].length, Float.NEGATIVE_INFINITY);
            Arrays.fill(sc.st[q], n, sc.st[q].length, Float.NEGATIVE_INFINITY);
            if (!job.selfLoops()) {
                sc.ss[q][i0 + q] = Float.NEGATIVE_INFINITY;
                sc.st[q][i0 + q] = Float.NEGATIVE_INFINITY;
            }
        }
    }

    /** Pass 1 for the quad of rows from {@code i0} of sequence {@code b}: log-sum-exps and KLs. */
    private static void statistics(RelationGraphKl.GraphJob job, Units[] units, int b, int i0, int strideS,
                                   int strideT, Scratch sc, float[] lseS, float[] lseT) {
        int n = job.lengths()[b];
        int first = b * job.tokens();
        int count = Math.min(QUAD, job.tokens() - i0);
        int valid = Math.max(0, Math.min(count, n - i0));
        for (int q = valid; q < count; q++) {
            job.rowLoss()[first + i0 + q] = 0f; // padding
        }
        if (valid == 0) {
            return;
        }
        if (!units[b].finite()) {
            for (int q = 0; q < valid; q++) {
                job.rowLoss()[first + i0 + q] = Float.NaN;
                lseS[first + i0 + q] = Float.NaN;
                lseT[first + i0 + q] = Float.NaN;
            }
            return;
        }
        if (n == 1 && !job.selfLoops()) { // the lone row has no column
            job.rowLoss()[first] = 0f;
            lseS[first] = Float.NEGATIVE_INFINITY;
            lseT[first] = Float.NEGATIVE_INFINITY;
            return;
        }
        similarities(job, units[b], i0, valid, n, strideS, strideT, sc);
        int length = padded(n);
        for (int q = 0; q < valid; q++) {
            int row = first + i0 + q;
            float[] ss = sc.ss[q];
            float[] st = sc.st[q];
            float ls = logSumExp(ss, length);
            float lt = logSumExp(st, length);
            lseS[row] = ls;
            lseT[row] = lt;
            // KL = sum_j p_t(j) ((S_t - lse_t) - (S_s - lse_s)); columns of p_t = 0 add nothing.
            FloatVector acc = FloatVector.zero(F);
            for (int j = 0; j < length; j += F.length()) {
                FloatVector xt = FloatVector.fromArray(F, st, j).sub(lt);
                FloatVector xs = FloatVector.fromArray(F, ss, j).sub(ls);
                FloatVector pt = VectorMath.expNonPositive(xt.min(0f));
                acc = acc.add(pt.mul(xt.sub(xs)).blend(0f, pt.eq(0f)));
            }
            job.rowLoss()[row] = (float) VectorMath.sumLanes(acc);
        }
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
        return (float) (max + Math.log(VectorMath.sumLanes(sum)));
    }

    /** Pass 2 for the quad of rows from {@code i0} of sequence {@code b}: their gradient rows. */
    private static void gradient(RelationGraphKl.GraphJob job, Units[] units, int b, int i0, int strideS,
                                 int strideT, Scratch sc, float[] lseS, float[] lseT) {
        int n = job.lengths()[b];
        int first = b * job.tokens();
        int dim = job.studentDim();
        int count = Math.min(QUAD, job.tokens() - i0);
        int valid = Math.max(0, Math.min(count, n - i0));
        MemorySegment out = job.gradient().segment();
        DType type = job.gradient().dtype();
        Units u = units[b];
        boolean zero = valid > 0 && u.finite() && n == 1 && !job.selfLoops(); // a lone row without columns
        for (int q = 0; q < count; q++) {
            long at = (long) (first + i0 + q) * dim;
            if (q >= valid || zero) {
                HalfFloats.fill(out, type, at, dim, 0f);
            } else if (!u.finite()) {
                HalfFloats.fill(out, type, at, dim, Float.NaN);
            }
        }
        if (valid == 0 || zero || !u.finite()) {
            return;
        }
        similarities(job, u, i0, valid, n, strideS, strideT, sc);
        int length = padded(n);
        System.arraycopy(lseS, first, sc.lseS, 0, n);
        System.arraycopy(lseT, first, sc.lseT, 0, n);
        Arrays.fill(sc.lseS, n, length, 0f);
        Arrays.fill(sc.lseT, n, length, 0f);
        float coef = job.gradCoef();
        for (int q = 0; q < QUAD; q++) {
            if (q >= valid) {
                Arrays.fill(sc.coef[q], 0f);
                continue;
            }
            float rowS = lseS[first + i0 + q];
            float rowT = lseT[first + i0 + q];
            // c_j = coef (P_s(k,j) - P_t(k,j) + P_s(j,k) - P_t(j,k)), S(j,k) = S(k,j) bit for bit,
            // so S(k,j) <= max of row j <= lse(j); the min(0) only guards exp's domain.
            for (int j = 0; j < length; j += F.length()) {
                FloatVector s = FloatVector.fromArray(F, sc.ss[q], j);
                FloatVector t = FloatVector.fromArray(F, sc.st[q], j);
                FloatVector forward = VectorMath.expNonPositive(s.sub(rowS).min(0f))
                        .sub(VectorMath.expNonPositive(t.sub(rowT).min(0f)));
                FloatVector backward = VectorMath.expNonPositive(s.sub(FloatVector.fromArray(F, sc.lseS, j)).min(0f))
                        .sub(VectorMath.expNonPositive(t.sub(FloatVector.fromArray(F, sc.lseT, j)).min(0f)));
                forward.add(backward).mul(coef).intoArray(sc.coef[q], j);
            }
        }
        accumulate(u.student(), strideS, n, sc.coef, sc.grad);
        // dL/dh_k = (g - (u_k . g) u_k) / ||h_k||, or g / 1e-8 below the norm floor.
        float[] us = u.student();
        for (int q = 0; q < valid; q++) {
            int k = i0 + q;
            float[] g = sc.grad[q];
            float invNorm = u.studentInvNorm()[k];
            float along = u.studentProjected()[k] ? dot(us, k * strideS, g, 0, strideS) : 0f;
            for (int x = 0; x < strideS; x += F.length()) {
                FloatVector.fromArray(F, g, x).sub(FloatVector.fromArray(F, us, k * strideS + x).mul(along)).mul(invNorm)
                        .intoArray(g, x);
            }
            HalfFloats.store(g, dim, type, sc.bits, out, (long) (first + k) * dim * type.byteSize());
        }
    }

    /**
     * {@code grad[q] = sum_j coef[q][j] u_j} for the four rows of a quad, columns in order, four
     * vectors of features at a time: each column vector is loaded once for four rows, and the 16
     * partial sums stay in registers for the whole column loop.
     */
    private static void accumulate(float[] u, int stride, int n, float[][] coef, float[][] grad) {
        int v = F.length();
        int x = 0;
        for (; x + 4 * v <= stride; x += 4 * v) {
            FloatVector g00 = FloatVector.zero(F);
            FloatVector g01 = FloatVector.zero(F);
            FloatVector g02 = FloatVector.zero(F);
            FloatVector g03 = FloatVector.zero(F);
            FloatVector g10 = FloatVector.zero(F);
            FloatVector g11 = FloatVector.zero(F);
            FloatVector g12 = FloatVector.zero(F);
            FloatVector g13 = FloatVector.zero(F);
            FloatVector g20 = FloatVector.zero(F);
            FloatVector g21 = FloatVector.zero(F);
            FloatVector g22 = FloatVector.zero(F);
            FloatVector g23 = FloatVector.zero(F);
            FloatVector g30 = FloatVector.zero(F);
            FloatVector g31 = FloatVector.zero(F);
            FloatVector g32 = FloatVector.zero(F);
            FloatVector g33 = FloatVector.zero(F);
            for (int j = 0; j < n; j++) {
                int at = j * stride + x;
                FloatVector y0 = FloatVector.fromArray(F, u, at);
                FloatVector y1 = FloatVector.fromArray(F, u, at + v);
                FloatVector y2 = FloatVector.fromArray(F, u, at + 2 * v);
                FloatVector y3 = FloatVector.fromArray(F, u, at + 3 * v);
                FloatVector c = FloatVector.broadcast(F, coef[0][j]);
                g00 = y0.fma(c, g00);
                g01 = y1.fma(c, g01);
                g02 = y2.fma(c, g02);
                g03 = y3.fma(c, g03);
                c = FloatVector.broadcast(F, coef[1][j]);
                g10 = y0.fma(c, g10);
                g11 = y1.fma(c, g11);
                g12 = y2.fma(c, g12);
                g13 = y3.fma(c, g13);
                c = FloatVector.broadcast(F, coef[2][j]);
                g20 = y0.fma(c, g20);
                g21 = y1.fma(c, g21);
                g22 = y2.fma(c, g22);
                g23 = y3.fma(c, g23);
                c = FloatVector.broadcast(F, coef[3][j]);
                g30 = y0.fma(c, g30);
                g31 = y1.fma(c, g31);
                g32 = y2.fma(c, g32);
                g33 = y3.fma(c, g33);
            }
            storeRow(grad[0], x, v, g00, g01, g02, g03);
            storeRow(grad[1], x, v, g10, g11, g12, g13);
            storeRow(grad[2], x, v, g20, g21, g22, g23);
            storeRow(grad[3], x, v, g30, g31, g32, g33);
        }
        for (; x < stride; x += v) {
            FloatVector g0 = FloatVector.zero(F);
            FloatVector g1 = FloatVector.zero(F);
            FloatVector g2 = FloatVector.zero(F);
            FloatVector g3 = FloatVector.zero(F);
            for (int j = 0; j < n; j++) {
                FloatVector y = FloatVector.fromArray(F, u, j * stride + x);
                g0 = y.fma(FloatVector.broadcast(F, coef[0][j]), g0);
                g1 = y.fma(FloatVector.broadcast(F, coef[1][j]), g1);
                g2 = y.fma(FloatVector.broadcast(F, coef[2][j]), g2);
                g3 = y.fma(FloatVector.broadcast(F, coef[3][j]), g3);
            }
            g0.intoArray(grad[0], x);
            g1.intoArray(grad[1], x);
            g2.intoArray(grad[2], x);
            g3.intoArray(grad[3], x);
        }
    }

    private static void storeRow(float[] row, int x, int v, FloatVector a, FloatVector b, FloatVector c,
                                 FloatVector d) {
        a.intoArray(row, x);
        b.intoArray(row, x + v);
        c.intoArray(row, x + 2 * v);
        d.intoArray(row, x + 3 * v);
    }
}
