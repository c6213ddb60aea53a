package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API implementation of {@link Divergence}, row by row, each row in two or three sweeps
 * that stay in L2 (a row pair of 128k fp32 logits is 1 MiB):
 * <ol>
 *   <li>the log-sum-exp of the student and the teacher row ({@link LogitStatsCpu#rowStatsF32});</li>
 *   <li>the loss, fused with the gradient where it needs nothing else (forward KL:
 *       {@code (p - q) * coef}); for the other kinds this sweep also sums what the gradient needs
 *       ({@code sum p g}) and leaves {@code log p} in the gradient row;</li>
 *   <li>(reverse KL, JSD, total variation) the gradient {@code coef * p (g - sum p g)} from that
 *       {@code log p} and the teacher row. Reading {@code log p} back instead of the student makes
 *       the in-place update safe: each sweep writes only the element it has just read.</li>
 * </ol>
 * Sums are accumulated per vector lane in fp32 over blocks of {@link #BLOCK} columns and across
 * blocks in fp64. F16/BF16 rows are decoded to fp32 scratch rows first.
 */
final class DivergenceCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    private static final int BLOCK = 4096;
    private static final int ELEMENTS_PER_TASK = 1 << 16;

    private DivergenceCpu() {
    }

    static void run(CpuBackend cpu, DivergenceRows job) {
        int vocab = job.vocab();
        int grain = Math.max(1, ELEMENTS_PER_TASK / vocab);
        cpu.parallelFor(job.rows(), grain, (from, to) -> {
            try (Arena arena = Arena.ofConfined()) {
                RowView student = new RowView(job.student().segment(), job.student().dtype(), vocab, vocab, arena);
                RowView teacher = new RowView(job.teacher().segment(), job.teacher().dtype(), job.teacherStride(), vocab,
                        arena);
                MemorySegment g = job.gradient() == null ? null : job.gradient().segment();
                LogitStatsCpu.RowState state = new LogitStatsCpu.RowState();
                float[] stats = new float[3];
                double[] sums = new double[2];
                for (int row = from; row < to; row++) {
                    long go = 4L * row * vocab;
                    if (job.weights()[row] == 0f) {
                        job.rowLoss()[row] = 0f;
                        if (g != null) {
                            g.asSlice(go, 4L * vocab).fill((byte) 0);
                        }
                        continue;
                    }
                    student.load(row);
                    teacher.load(row);
                    LogitStatsCpu.rowStatsF32(student.segment, student.offset, vocab, job.invT(), state);
                    state.finish(stats);
                    float lseS = stats[1];
                    LogitStatsCpu.rowStatsF32(teacher.segment, teacher.offset, vocab, job.invT(), state);
                    state.finish(stats);
                    float lseT = stats[1];
                    if (!Float.isFinite(lseS) || !Float.isFinite(lseT)) {
                        job.rowLoss()[row] = Float.NaN; // no distribution on one side
                        if (g != null) {
                            fill(g, go, vocab, Float.NaN);
                        }
                        continue;
                    }
                    float coef = job.gradCoef() == null ? 0f : job.gradCoef()[row];
                    job.rowLoss()[row] = row(job, student, teacher, lseS, lseT, g, go, coef, sums);
                }
            }
        });
    }

    /** The divergence of one row, and its gradient when {@code g != null}. */
    private static float row(DivergenceRows job, RowView s, RowView t, float lseS, float lseT, MemorySegment g,
                             long go, float coef, double[] sums) {
        int n = job.vocab();
        float invT = job.invT();
        float beta = job.beta();
        sums[0] = sums[1] = 0;
        for (int start = 0; start < n; start += BLOCK) {
            int len = Math.min(BLOCK, n - start);
            long so = s.offset + 4L * start;
            long to = t.offset + 4L * start;
            long gb = go + 4L * start;
            switch (job.kind()) {
                case FORWARD_KL -> sums[0] += forwardKl(s.segment, so, t.segment, to, len, invT, lseS, lseT, g, gb, coef);
                case REVERSE_KL -> sums[0] += reverseKlSums(s.segment, so, t.segment, to, len, invT, lseS, lseT, g, gb);
                case JSD -> jsdSums(s.segment, so, t.segment, to, len, invT, lseS, lseT, beta, g, gb, sums);
                case TOTAL_VARIATION -> tvdSums(s.segment, so, t.segment, to, len, invT, lseS, lseT, g, gb, sums);
            }
        }
        // The loss, and sum_v p_v g_v for the gradient g_v = d(loss)/d(p_v) of the last sweep.
        float loss;
        float pg;
        switch (job.kind()) {
            case FORWARD_KL -> {
                return (float) sums[0];
            }
            case REVERSE_KL -> loss = pg = (float) sums[0];
            case JSD -> {
                loss = (float) (beta * sums[0] + (1 - beta) * sums[1]);
                pg = (float) ((1 - beta) * sums[1]);
            }
            default -> {
                loss = (float) sums[0];
                pg = (float) sums[1];
            }
        }
        if (g != null) {
            for (int start = 0; start < n; start += BLOCK) {
                int len = Math.min(BLOCK, n - start);
                long to = t.offset + 4L * start;
                long gb = go + 4L * start;
                switch (job.kind()) {
                    case REVERSE_KL -> reverseKlGradient(g, gb, t.segment, to, len, invT, lseT, pg, coef);
                    case JSD -> jsdGradient(g, gb, t.segment, to, len, invT, lseT, beta, pg, coef);
                    default -> tvdGradient(g, gb, t.segment, to, len, invT, lseT, pg, coef);
                }
            }
        }
        return loss;
    }

    // ---- forward KL: sum q (log q - log p); gradient (p - q) coef, in the same sweep ----

    private static float forwardKl(MemorySegment s, long so, MemorySegment t, long to, int len, float invT, float lseS,
                                   float lseT, MemorySegment g, long go, float coef) {
        FloatVector a = FloatVector.broadcast(F, invT);
        FloatVector minusLseS = FloatVector.broadcast(F, -lseS);
        FloatVector minusLseT = FloatVector.broadcast(F, -lseT);
        FloatVector c = FloatVector.broadcast(F, coef);
        FloatVector acc = FloatVector.zero(F);
        int i = 0;
        for (int upper = F.loopBound(len); i < upper; i += F.length()) {
            FloatVector ls = FloatVector.fromMemorySegment(F, s, so + 4L * i, NATIVE).fma(a, minusLseS);
            FloatVector lt = FloatVector.fromMemorySegment(F, t, to + 4L * i, NATIVE).fma(a, minusLseT);
            FloatVector p = VectorMath.expNonPositive(ls);
            FloatVector q = VectorMath.expNonPositive(lt);
            acc = acc.add(q.mul(lt.sub(ls)).blend(0f, q.eq(0f)));
            if (g != null) {
                p.sub(q).mul(c).intoMemorySegment(g, go + 4L * i, NATIVE);
            }
        }
        VectorMask<Float> m = F.indexInRange(i, len);
        if (m.anyTrue()) {
            FloatVector ls = FloatVector.fromMemorySegment(F, s, so + 4L * i, NATIVE, m).fma(a, minusLseS);
            FloatVector lt = FloatVector.fromMemorySegment(F, t, to + 4L * i, NATIVE, m).fma(a, minusLseT);
            FloatVector p = VectorMath.expNonPositive(ls);
            FloatVector q = VectorMath.expNonPositive(lt);
            acc = acc.add(q.mul(lt.sub(ls)).blend(0f, q.eq(0f)), m);
            if (g != null) {
                p.sub(q).mul(c).intoMemorySegment(g, go + 4L * i, NATIVE, m);
            }
        }
        return acc.reduceLanes(VectorOperators.ADD);
    }

    // ---- reverse KL: sum p (log p - log q); gradient p (f - KL) coef, f = log p - log q ----

    private static float reverseKlSums(MemorySegment s, long so, MemorySegment t, long to, int len, float invT,
                                       float lseS, float lseT, MemorySegment g, long go) {
        FloatVector a = FloatVector.broadcast(F, invT);
        FloatVector minusLseS = FloatVector.broadcast(F, -lseS);
        FloatVector minusLseT = FloatVector.broadcast(F, -lseT);
        FloatVector acc = FloatVector.zero(F);
        int i = 0;
        for (; i < len; i += F.length()) {
            VectorMask<Float> m = F.indexInRange(i, len);
            FloatVector ls = FloatVector.fromMemorySegment(F, s, so + 4L * i, NATIVE, m).fma(a, minusLseS);
            FloatVector lt = FloatVector.fromMemorySegment(F, t, to + 4L * i, NATIVE, m).fma(a, minusLseT);
            FloatVector p = VectorMath.expNonPositive(ls);
            acc = acc.add(p.mul(ls.sub(lt)).blend(0f, p.eq(0f)), m);
            if (g != null) {
                ls.intoMemorySegment(g, go + 4L * i, NATIVE, m);
            }
        }
        return acc.reduceLanes(VectorOperators.ADD);
    }

    private static void reverseKlGradient(MemorySegment g, long go, MemorySegment t, long to, int len, float invT,
                                          float lseT, float kl, float coef) {
        FloatVector a = FloatVector.broadcast(F, invT);
        FloatVector minusLseT = FloatVector.broadcast(F, -lseT);
        FloatVector c = FloatVector.broadcast(F, coef);
        FloatVector klV = FloatVector.broadcast(F, kl);
        for (int i = 0; i < len; i += F.length()) {
            VectorMask<Float> m = F.indexInRange(i, len);
            FloatVector ls = FloatVector.fromMemorySegment(F, g, go + 4L * i, NATIVE, m);
            FloatVector lt = FloatVector.fromMemorySegment(F, t, to + 4L * i, NATIVE, m).fma(a, minusLseT);
            FloatVector p = VectorMath.expNonPositive(ls);
            FloatVector grad = p.mul(ls.sub(lt).sub(klV)).mul(c).blend(0f, p.eq(0f));
            grad.intoMemorySegment(g, go + 4L * i, NATIVE, m);
        }
    }

    // ---- JSD: beta KL(q||m) + (1-beta) KL(p||m); d/dp = (1-beta) log(p/m) ----

    private static void jsdSums(MemorySegment s, long so, MemorySegment t, long to, int len, float invT, float lseS,
                                float lseT, float beta, MemorySegment g, long go, double[] sums) {
        FloatVector a = FloatVector.broadcast(F, invT);
        FloatVector minusLseS = FloatVector.broadcast(F, -lseS);
        FloatVector minusLseT = FloatVector.broadcast(F, -lseT);
        FloatVector b = FloatVector.broadcast(F, beta);
        FloatVector oneMinusB = FloatVector.broadcast(F, 1f - beta);
        FloatVector teacherTerms = FloatVector.zero(F);
        FloatVector studentTerms = FloatVector.zero(F);
        for (int i = 0; i < len; i += F.length()) {
            VectorMask<Float> m = F.indexInRange(i, len);
            FloatVector ls = FloatVector.fromMemorySegment(F, s, so + 4L * i, NATIVE, m).fma(a, minusLseS);
            FloatVector lt = FloatVector.fromMemorySegment(F, t, to + 4L * i, NATIVE, m).fma(a, minusLseT);
            FloatVector p = VectorMath.expNonPositive(ls);
            FloatVector q = VectorMath.expNonPositive(lt);
            FloatVector logM = logMixture(p, q, ls, lt, b, oneMinusB, beta);
            teacherTerms = teacherTerms.add(q.mul(lt.sub(logM)).blend(0f, q.eq(0f)), m);
            studentTerms = studentTerms.add(p.mul(ls.sub(logM)).blend(0f, p.eq(0f)), m);
            if (g != null) {
                ls.intoMemorySegment(g, go + 4L * i, NATIVE, m);
            }
        }
        sums[0] += teacherTerms.reduceLanes(VectorOperators.ADD);
        sums[1] += studentTerms.reduceLanes(VectorOperators.ADD);
    }

    private static void jsdGradient(MemorySegment g, long go, MemorySegment t, long to, int len, float invT, float lseT,
                                    float beta, float pg, float coef) {
        FloatVector a = FloatVector.broadcast(F, invT);
        FloatVector minusLseT = FloatVector.broadcast(F, -lseT);
        FloatVector b = FloatVector.broadcast(F, beta);
        FloatVector oneMinusB = FloatVector.broadcast(F, 1f - beta);
        FloatVector c = FloatVector.broadcast(F, coef);
        FloatVector pgV = FloatVector.broadcast(F, pg);
        for (int i = 0; i < len; i += F.length()) {
            VectorMask<Float> m = F.indexInRange(i, len);
            FloatVector ls = FloatVector.fromMemorySegment(F, g, go + 4L * i, NATIVE, m);
            FloatVector lt = FloatVector.fromMemorySegment(F, t, to + 4L * i, NATIVE, m).fma(a, minusLseT);
            FloatVector p = VectorMath.expNonPositive(ls);
            FloatVector q = VectorMath.expNonPositive(lt);
            FloatVector logM = logMixture(p, q, ls, lt, b, oneMinusB, beta);
            FloatVector dp = ls.sub(logM).mul(oneMinusB);
            p.mul(dp.sub(pgV)).mul(c).blend(0f, p.eq(0f)).intoMemorySegment(g, go + 4L * i, NATIVE, m);
        }
    }

    /**
     * {@code log(beta q + (1 - beta) p)}. Where the mixture underflows to 0 although one side is
     * not 0 (tiny beta or 1 - beta), the larger of {@code log beta + log q} and
     * {@code log(1 - beta) + log p} stands in for it.
     */
    private static FloatVector logMixture(FloatVector p, FloatVector q, FloatVector ls, FloatVector lt, FloatVector b,
                                          FloatVector oneMinusB, float beta) {
        FloatVector m = q.fma(b, p.mul(oneMinusB));
        FloatVector dominant = lt.add((float) Math.log(beta)).max(ls.add((float) Math.log1p(-beta)));
        return VectorMath.log(m).blend(dominant, m.eq(0f));
    }

    // ---- total variation: 0.5 sum |p - q|; d/dp = 0.5 sign(p - q) ----

    private static void tvdSums(MemorySegment s, long so, MemorySegment t, long to, int len, float invT, float lseS,
                                float lseT, MemorySegment g, long go, double[] sums) {
        FloatVector a = FloatVector.broadcast(F, invT);
        FloatVector minusLseS = FloatVector.broadcast(F, -lseS);
        FloatVector minusLseT = FloatVector.broadcast(F, -lseT);
        FloatVector distance = FloatVector.zero(F);
        FloatVector pg = FloatVector.zero(F);
        for (int i = 0; i < len; i += F.length()) {
            VectorMask<Float> m = F.indexInRange(i, len);
            FloatVector ls = FloatVector.fromMemorySegment(F, s, so + 4L * i, NATIVE, m).fma(a, minusLseS);
            FloatVector lt = FloatVector.fromMemorySegment(F, t, to + 4L * i, NATIVE, m).fma(a, minusLseT);
            FloatVector p = VectorMath.expNonPositive(ls);
            FloatVector d = p.sub(VectorMath.expNonPositive(lt));
            distance = distance.add(d.abs(), m);
            pg = pg.add(p.mul(halfSign(d)), m);
            if (g != null) {
                ls.intoMemorySegment(g, go + 4L * i, NATIVE, m);
            }
        }
        sums[0] += 0.5 * distance.reduceLanes(VectorOperators.ADD);
        sums[1] += pg.reduceLanes(VectorOperators.ADD);
    }

    private static void tvdGradient(MemorySegment g, long go, MemorySegment t, long to, int len, float invT, float lseT,
                                    float pg, float coef) {
        FloatVector a = FloatVector.broadcast(F, invT);
        FloatVector minusLseT = FloatVector.broadcast(F, -lseT);
        FloatVector c = FloatVector.broadcast(F, coef);
        FloatVector pgV = FloatVector.broadcast(F, pg);
        for (int i = 0; i < len; i += F.length()) {
            VectorMask<Float> m = F.indexInRange(i, len);
            FloatVector ls = FloatVector.fromMemorySegment(F, g, go + 4L * i, NATIVE, m);
            FloatVector lt = FloatVector.fromMemorySegment(F, t, to + 4L * i, NATIVE, m).fma(a, minusLseT);
            FloatVector p = VectorMath.expNonPositive(ls);
            FloatVector d = p.sub(VectorMath.expNonPositive(lt));
            p.mul(halfSign(d).sub(pgV)).mul(c).intoMemorySegment(g, go + 4L * i, NATIVE, m);
        }
    }

    /** 0.5, -0.5 or 0 by the sign of {@code d}. */
    private static FloatVector halfSign(FloatVector d) {
        return FloatVector.zero(F).blend(0.5f, d.compare(VectorOperators.GT, 0f)).blend(-0.5f, d.lt(0f));
    }

    private static void fill(MemorySegment g, long offset, int n, float value) {
        for (int i = 0; i < n; i++) {
            g.set(ValueLayout.JAVA_FLOAT, offset + 4L * i, value);
        }
    }

    /** A row of a [N, stride] tensor as fp32: the tensor's own memory for F32, else decoded into scratch. */
    private static final class RowView {
        private final MemorySegment source;
        private final DType dtype;
        private final int stride;
        private final int length;
        private final MemorySegment scratch;
        MemorySegment segment;
        long offset;

        RowView(MemorySegment source, DType dtype, int stride, int length, Arena arena) {
            this.source = source;
            this.dtype = dtype;
            this.stride = stride;
            this.length = length;
            this.scratch = dtype == DType.F32 ? null : arena.allocate(4L * length, 64);
        }

        void load(int row) {
            long start = (long) row * stride * dtype.byteSize();
            if (scratch == null) {
                segment = source;
                offset = start;
            } else {
                HalfFloats.decode(source, start, dtype, scratch, length);
                segment = scratch;
                offset = 0;
            }
        }
    }
}
