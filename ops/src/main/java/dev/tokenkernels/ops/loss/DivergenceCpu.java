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
 * Vector API implementation of {@link Divergence}, row by row, with one exponential per element
 * and side:
 * <ol>
 *   <li>the max of the student row and of the teacher row ({@code x = z / T});</li>
 *   <li>{@code e = exp(x - max)} of both into two scratch rows, and their sums, which give the
 *       log-sum-exps; then {@code p = e_s / sum_s} and {@code q = e_t / sum_t} cost a multiply;</li>
 *   <li>the loss, fused with the gradient where it needs nothing else (forward KL:
 *       {@code (p - q) coef}); the other kinds also sum what their gradient needs
 *       ({@code sum_v p_v dL/dp_v});</li>
 *   <li>(reverse KL, JSD, total variation) the gradient {@code coef p (dL/dp - sum p dL/dp)}.</li>
 * </ol>
 * Every sweep reads an element before it writes the same element, so the gradient may be the
 * student itself. The rows and scratch rows of one row pair stay in L2 (and L3) between sweeps.
 * Sums are accumulated per lane in fp32 over blocks of {@link #BLOCK} columns and in fp64 across
 * blocks. F16/BF16 rows are decoded to fp32 scratch rows first.
 *
 * <p>Hot loops hold at most one inlined exponential or logarithm each: a loop with two exceeds
 * C2's inlining budget for vector code, and then every vector is boxed. For the same reason there
 * are no masked tail loops: the last {@code V % lanes} columns go through the same sweeps in a
 * one-vector scratch row padded with {@code -inf} in both student and teacher, i.e. classes of
 * probability 0, which add nothing and get a zero gradient.
 */
final class DivergenceCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    /** Columns per block of a sweep (fp32 partial sums per block, fp64 across). */
    private static final int BLOCK = 2048;
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
                if (job.reference() != null) {
                    teacher.extrapolateFrom(new RowView(job.reference().segment(), job.reference().dtype(),
                            job.teacherStride(), vocab, arena), job.alpha(), arena);
                }
                MemorySegment g = job.gradient() == null ? null : job.gradient().segment();
                boolean filter = job.filter() != null;
                Sweep whole = new Sweep(arena, F.loopBound(vocab), filter);
                Sweep tail = new Sweep(arena, F.length(), filter);
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
                    float coef = job.gradCoef() == null ? 0f : job.gradCoef()[row];
                    job.rowLoss()[row] = row(job, student, teacher, g, go, coef, whole, tail);
                }
            }
        });
    }

    /**
     * One row: the sweeps of the class doc over the whole vectors of the row ({@code whole}) and
     * over its padded last vector ({@code tail}).
     */
    private static float row(DivergenceRows job, RowView s, RowView t, MemorySegment g, long go, float coef,
                             Sweep whole, Sweep tail) {
        int n = job.vocab();
        int full = F.loopBound(n);
        boolean padded = full < n;
        whole.bind(s.segment, s.offset, t.segment, t.offset, g, go, full);
        if (padded) {
            tail.padFrom(s, t, full, n - full, g != null);
        }
        float invT = job.invT();
        float maxS = Math.max(whole.max(true), padded ? tail.max(true) : Float.NEGATIVE_INFINITY) * invT;
        float maxT = Math.max(whole.max(false), padded ? tail.max(false) : Float.NEGATIVE_INFINITY) * invT;
        if (!Float.isFinite(maxS) || !Float.isFinite(maxT)) {
            return noDistribution(g, go, n); // NaN, +inf, or all -inf on one side
        }
        if (job.filter() != null) {
            // The teacher becomes its Lp-Reg proxy: dropped classes read as -inf from here on.
            float ref = maxT;
            if (job.filter() == ProxyDistribution.Mode.FIXED) {
                // ProxyDistribution's own log-sum-exp (x rounded as a product, no fma), so both ops
                // keep exactly the same classes.
                ref = ProxyDistributionCpu.fixedReference(t.segment, t.offset, n, invT, maxT);
            }
            whole.filterTeacher(invT, maxT, ref, job.filterLogThreshold());
            if (padded) {
                tail.filterTeacher(invT, maxT, ref, job.filterLogThreshold());
            }
        }
        double sumS = whole.exponentials(true, invT, maxS) + (padded ? tail.exponentials(true, invT, maxS) : 0);
        double sumT = whole.exponentials(false, invT, maxT) + (padded ? tail.exponentials(false, invT, maxT) : 0);
        Sums sums = new Sums(job, invT, (float) (maxS + Math.log(sumS)), (float) (maxT + Math.log(sumT)),
                (float) (1 / sumS), (float) (1 / sumT), coef);
        whole.lossSweep(sums);
        if (padded) {
            tail.lossSweep(sums);
        }
        if (g != null && job.kind() != Divergence.Kind.FORWARD_KL) {
            sums.finish();
            whole.gradientSweep(sums);
            if (padded) {
                tail.gradientSweep(sums);
            }
        }
        if (padded && g != null) {
            tail.storeGradient(g, go + 4L * full, n - full);
        }
        return sums.loss();
    }

    private static float noDistribution(MemorySegment g, long go, int n) {
        if (g != null) {
            for (int i = 0; i < n; i++) {
                g.set(ValueLayout.JAVA_FLOAT, go + 4L * i, Float.NaN);
            }
        }
        return Float.NaN;
    }

    /** The per-row constants of the sweeps and the sums they accumulate. */
    private static final class Sums {
        final Divergence.Kind kind;
        final float beta;
        final float invT;
        final float lseS;
        final float lseT;
        /** p = e_s * scaleS, q = e_t * scaleT. */
        final float scaleS;
        final float scaleT;
        final float coef;
        double first;
        double second;
        /** sum_v p_v dL/dp_v, which the gradient subtracts. */
        float pg;

        Sums(DivergenceRows job, float invT, float lseS, float lseT, float scaleS, float scaleT, float coef) {
            this.kind = job.kind();
            this.beta = job.beta();
            this.invT = invT;
            this.lseS = lseS;
            this.lseT = lseT;
            this.scaleS = scaleS;
            this.scaleT = scaleT;
            this.coef = coef;
        }

        void finish() {
            pg = (float) switch (kind) {
                case REVERSE_KL -> first;
                case JSD -> (1 - beta) * second;
                default -> second;
            };
        }

        float loss() {
            return (float) switch (kind) {
                case FORWARD_KL, REVERSE_KL -> first;
                case JSD -> beta * first + (1 - beta) * second;
                case TOTAL_VARIATION -> 0.5 * first;
            };
        }
    }

    /**
     * The sweeps over a run of {@code length} columns (a multiple of the vector length): the whole
     * vectors of a row, bound to the row's memory, or the padded last vector in its own memory.
     */
    private static final class Sweep {
        private final MemorySegment expS;
        private final MemorySegment expT;
        private final MemorySegment logMixture;
        private final MemorySegment padS;
        private final MemorySegment padT;
        private final MemorySegment padG;
        /** The filtered teacher row (Lp-Reg proxy), or null without a filter. */
        private final MemorySegment filtered;
        private MemorySegment s;
        private long so;
        private MemorySegment t;
        private long to;
        private MemorySegment g;
        private long go;
        private int length;

        Sweep(Arena arena, int capacity, boolean filter) {
            filtered = filter ? arena.allocate(4L * Math.max(capacity, 1), 64) : null;
            expS = arena.allocate(4L * Math.max(capacity, 1), 64);
            expT = arena.allocate(4L * Math.max(capacity, 1), 64);
            logMixture = arena.allocate(4L * BLOCK, 64);
            padS = arena.allocate(4L * F.length(), 64);
            padT = arena.allocate(4L * F.length(), 64);
            padG = arena.allocate(4L * F.length(), 64);
        }

        void bind(MemorySegment s, long so, MemorySegment t, long to, MemorySegment g, long go, int length) {
            this.s = s;
            this.so = so;
            this.t = t;
            this.to = to;
            this.g = g;
            this.go = go;
            this.length = length;
        }

        /** Binds the padded copy of the last {@code count} columns, from column {@code from}. */
        void padFrom(RowView sv, RowView tv, int from, int count, boolean withGradient) {
            for (int i = 0; i < F.length(); i++) {
                padS.set(ValueLayout.JAVA_FLOAT, 4L * i, Float.NEGATIVE_INFINITY);
                padT.set(ValueLayout.JAVA_FLOAT, 4L * i, Float.NEGATIVE_INFINITY);
            }
            MemorySegment.copy(sv.segment, sv.offset + 4L * from, padS, 0, 4L * count);
            MemorySegment.copy(tv.segment, tv.offset + 4L * from, padT, 0, 4L * count);
            bind(padS, 0, padT, 0, withGradient ? padG : null, 0, F.length());
        }

        /** Rebinds the teacher to a copy with the classes the proxy drops set to -inf. */
        void filterTeacher(float invT, float max, float ref, float cut) {
            DivergenceCpu.filterTeacher(t, to, length, invT, max, ref, cut, filtered);
            t = filtered;
            to = 0;
        }

        void storeGradient(MemorySegment target, long offset, int count) {
            MemorySegment.copy(padG, 0, target, offset, 4L * count);
        }

        float max(boolean student) {
            return student ? DivergenceCpu.max(s, so, length) : DivergenceCpu.max(t, to, length);
        }

        /** Fills e = exp(x invT - max) for one side and returns its sum. */
        double exponentials(boolean student, float invT, float max) {
            double sum = 0;
            for (int start = 0; start < length; start += BLOCK) {
                int len = Math.min(BLOCK, length - start);
                sum += student ? DivergenceCpu.exponentials(s, so + 4L * start, len, invT, max, expS, 4L * start)
                        : DivergenceCpu.exponentials(t, to + 4L * start, len, invT, max, expT, 4L * start);
            }
            return sum;
        }

        void lossSweep(Sums k) {
            for (int start = 0; start < length; start += BLOCK) {
                int len = Math.min(BLOCK, length - start);
                long b = 4L * start;
                switch (k.kind) {
                    case FORWARD_KL -> k.first += forwardKl(this, b, len, k);
                    case REVERSE_KL -> k.first += reverseKl(this, b, len, k);
                    case JSD -> {
                        mixtureLogs(this, b, len, k);
                        jsdSums(this, b, len, k);
                    }
                    case TOTAL_VARIATION -> tvdSums(this, b, len, k);
                }
            }
        }

        void gradientSweep(Sums k) {
            for (int start = 0; start < length; start += BLOCK) {
                int len = Math.min(BLOCK, length - start);
                long b = 4L * start;
                switch (k.kind) {
                    case REVERSE_KL -> reverseKlGradient(this, b, len, k);
                    case JSD -> {
                        mixtureLogs(this, b, len, k);
                        jsdGradient(this, b, len, k);
                    }
                    default -> tvdGradient(this, b, len, k);
                }
            }
        }
    }

    // ---- sweeps 1 and 2: max, exponentials ----

    private static float max(MemorySegment x, long xo, int len) {
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        for (int i = 0; i < len; i += F.length()) {
            m = m.max(FloatVector.fromMemorySegment(F, x, xo + 4L * i, NATIVE));
        }
        return m.reduceLanes(VectorOperators.MAX);
    }

    private static float exponentials(MemorySegment x, long xo, int len, float invT, float max, MemorySegment e,
                                      long eo) {
        FloatVector a = FloatVector.broadcast(F, invT);
        FloatVector minusMax = FloatVector.broadcast(F, -max);
        FloatVector sum = FloatVector.zero(F);
        for (int i = 0; i < len; i += F.length()) {
            FloatVector v = VectorMath.expNonPositive(FloatVector.fromMemorySegment(F, x, xo + 4L * i, NATIVE).fma(a, minusMax));
            v.intoMemorySegment(e, eo + 4L * i, NATIVE);
            sum = sum.add(v);
        }
        return sum.reduceLanes(VectorOperators.ADD);
    }

    /**
     * {@code out = z} where the proxy keeps the class ({@code x - ref >= cut} or {@code x >= max},
     * {@code x = z * invT}: {@link ProxyDistribution}'s rule), else {@code -inf}.
     */
    private static void filterTeacher(MemorySegment z, long zo, int len, float invT, float max, float ref, float cut,
                                      MemorySegment out) {
        FloatVector a = FloatVector.broadcast(F, invT);
        FloatVector minusMax = FloatVector.broadcast(F, -max);
        FloatVector minusRef = FloatVector.broadcast(F, -ref);
        for (int i = 0; i < len; i += F.length()) {
            FloatVector v = FloatVector.fromMemorySegment(F, z, zo + 4L * i, NATIVE);
            FloatVector x = v.mul(a);
            var keep = x.add(minusRef).compare(VectorOperators.GE, cut).or(x.add(minusMax).compare(VectorOperators.GE, 0f));
            v.blend(Float.NEGATIVE_INFINITY, keep.not()).intoMemorySegment(out, 4L * i, NATIVE);
        }
    }

    // ---- forward KL: sum q (log q - log p); gradient (p - q) coef, in the same sweep ----

    private static float forwardKl(Sweep w, long b, int len, Sums k) {
        // Locals, not fields, in the loop: the JIT then hoists the segments' checks out of it.
        MemorySegment s = w.s;
        long so = w.so;
        MemorySegment t = w.t;
        long to = w.to;
        MemorySegment g = w.g;
        long go = w.go;
        MemorySegment expS = w.expS;
        MemorySegment expT = w.expT;
        float scaleS = k.scaleS;
        float scaleT = k.scaleT;
        FloatVector a = FloatVector.broadcast(F, k.invT);
        FloatVector minusLseS = FloatVector.broadcast(F, -k.lseS);
        FloatVector minusLseT = FloatVector.broadcast(F, -k.lseT);
        FloatVector c = FloatVector.broadcast(F, k.coef);
        FloatVector acc = FloatVector.zero(F);
        for (int i = 0; i < len; i += F.length()) {
            long at = b + 4L * i;
            FloatVector ls = FloatVector.fromMemorySegment(F, s, so + at, NATIVE).fma(a, minusLseS);
            FloatVector lt = FloatVector.fromMemorySegment(F, t, to + at, NATIVE).fma(a, minusLseT);
            FloatVector p = FloatVector.fromMemorySegment(F, expS, at, NATIVE).mul(scaleS);
            FloatVector q = FloatVector.fromMemorySegment(F, expT, at, NATIVE).mul(scaleT);
            acc = acc.add(times(q, lt.sub(ls)));
            if (g != null) {
                p.sub(q).mul(c).intoMemorySegment(g, go + at, NATIVE);
            }
        }
        return acc.reduceLanes(VectorOperators.ADD);
    }

    // ---- reverse KL: sum p (log p - log q); gradient p (f - KL) coef, f = log p - log q ----

    private static float reverseKl(Sweep w, long b, int len, Sums k) {
        // Locals, not fields, in the loop: the JIT then hoists the segments' checks out of it.
        MemorySegment s = w.s;
        long so = w.so;
        MemorySegment t = w.t;
        long to = w.to;
        MemorySegment expS = w.expS;
        float scaleS = k.scaleS;
        FloatVector a = FloatVector.broadcast(F, k.invT);
        FloatVector minusLseS = FloatVector.broadcast(F, -k.lseS);
        FloatVector minusLseT = FloatVector.broadcast(F, -k.lseT);
        FloatVector acc = FloatVector.zero(F);
        for (int i = 0; i < len; i += F.length()) {
            long at = b + 4L * i;
            FloatVector ls = FloatVector.fromMemorySegment(F, s, so + at, NATIVE).fma(a, minusLseS);
            FloatVector lt = FloatVector.fromMemorySegment(F, t, to + at, NATIVE).fma(a, minusLseT);
            FloatVector p = FloatVector.fromMemorySegment(F, expS, at, NATIVE).mul(scaleS);
            acc = acc.add(times(p, ls.sub(lt)));
        }
        return acc.reduceLanes(VectorOperators.ADD);
    }

    private static void reverseKlGradient(Sweep w, long b, int len, Sums k) {
        // Locals, not fields, in the loop: the JIT then hoists the segments' checks out of it.
        MemorySegment s = w.s;
        long so = w.so;
        MemorySegment t = w.t;
        long to = w.to;
        MemorySegment g = w.g;
        long go = w.go;
        MemorySegment expS = w.expS;
        float scaleS = k.scaleS;
        FloatVector a = FloatVector.broadcast(F, k.invT);
        FloatVector minusLseS = FloatVector.broadcast(F, -k.lseS);
        FloatVector minusLseT = FloatVector.broadcast(F, -k.lseT);
        FloatVector c = FloatVector.broadcast(F, k.coef);
        FloatVector kl = FloatVector.broadcast(F, k.pg);
        for (int i = 0; i < len; i += F.length()) {
            long at = b + 4L * i;
            FloatVector ls = FloatVector.fromMemorySegment(F, s, so + at, NATIVE).fma(a, minusLseS);
            FloatVector lt = FloatVector.fromMemorySegment(F, t, to + at, NATIVE).fma(a, minusLseT);
            FloatVector p = FloatVector.fromMemorySegment(F, expS, at, NATIVE).mul(scaleS);
            times(p, ls.sub(lt).sub(kl)).mul(c).intoMemorySegment(g, go + at, NATIVE);
        }
    }

    // ---- JSD: beta KL(q||m) + (1-beta) KL(p||m); d/dp = (1-beta) log(p/m) ----

    /**
     * {@code log(beta q + (1 - beta) p)} of a block into the sweep's scratch (a loop of its own:
     * the inlined log is as large as an exponential). Where the mixture underflows to 0 although
     * one side is not 0 (tiny beta or 1 - beta), the larger of {@code log beta + log q} and
     * {@code log(1 - beta) + log p} stands in for it.
     */
    private static void mixtureLogs(Sweep w, long b, int len, Sums k) {
        // Locals, not fields, in the loop: the JIT then hoists the segments' checks out of it.
        MemorySegment s = w.s;
        long so = w.so;
        MemorySegment t = w.t;
        long to = w.to;
        MemorySegment expS = w.expS;
        MemorySegment expT = w.expT;
        MemorySegment logMixture = w.logMixture;
        float scaleS = k.scaleS;
        float scaleT = k.scaleT;
        FloatVector a = FloatVector.broadcast(F, k.invT);
        FloatVector minusLseS = FloatVector.broadcast(F, -k.lseS);
        FloatVector minusLseT = FloatVector.broadcast(F, -k.lseT);
        FloatVector beta = FloatVector.broadcast(F, k.beta);
        FloatVector oneMinusBeta = FloatVector.broadcast(F, 1f - k.beta);
        FloatVector logBeta = FloatVector.broadcast(F, (float) Math.log(k.beta));
        FloatVector logOneMinusBeta = FloatVector.broadcast(F, (float) Math.log1p(-k.beta));
        for (int i = 0; i < len; i += F.length()) {
            long at = b + 4L * i;
            FloatVector p = FloatVector.fromMemorySegment(F, expS, at, NATIVE).mul(scaleS);
            FloatVector q = FloatVector.fromMemorySegment(F, expT, at, NATIVE).mul(scaleT);
            FloatVector m = q.fma(beta, p.mul(oneMinusBeta));
            FloatVector ls = FloatVector.fromMemorySegment(F, s, so + at, NATIVE).fma(a, minusLseS);
            FloatVector lt = FloatVector.fromMemorySegment(F, t, to + at, NATIVE).fma(a, minusLseT);
            FloatVector dominant = lt.add(logBeta).max(ls.add(logOneMinusBeta));
            VectorMath.log(m).blend(dominant, m.eq(0f)).intoMemorySegment(logMixture, 4L * i, NATIVE);
        }
    }

    private static void jsdSums(Sweep w, long b, int len, Sums k) {
        // Locals, not fields, in the loop: the JIT then hoists the segments' checks out of it.
        MemorySegment s = w.s;
        long so = w.so;
        MemorySegment t = w.t;
        long to = w.to;
        MemorySegment expS = w.expS;
        MemorySegment expT = w.expT;
        MemorySegment logMixture = w.logMixture;
        float scaleS = k.scaleS;
        float scaleT = k.scaleT;
        FloatVector a = FloatVector.broadcast(F, k.invT);
        FloatVector minusLseS = FloatVector.broadcast(F, -k.lseS);
        FloatVector minusLseT = FloatVector.broadcast(F, -k.lseT);
        FloatVector teacherTerms = FloatVector.zero(F);
        FloatVector studentTerms = FloatVector.zero(F);
        for (int i = 0; i < len; i += F.length()) {
            long at = b + 4L * i;
            FloatVector ls = FloatVector.fromMemorySegment(F, s, so + at, NATIVE).fma(a, minusLseS);
            FloatVector lt = FloatVector.fromMemorySegment(F, t, to + at, NATIVE).fma(a, minusLseT);
            FloatVector p = FloatVector.fromMemorySegment(F, expS, at, NATIVE).mul(scaleS);
            FloatVector q = FloatVector.fromMemorySegment(F, expT, at, NATIVE).mul(scaleT);
            FloatVector logM = FloatVector.fromMemorySegment(F, logMixture, 4L * i, NATIVE);
            teacherTerms = teacherTerms.add(times(q, lt.sub(logM)));
            studentTerms = studentTerms.add(times(p, ls.sub(logM)));
        }
        k.first += teacherTerms.reduceLanes(VectorOperators.ADD);
        k.second += studentTerms.reduceLanes(VectorOperators.ADD);
    }

    private static void jsdGradient(Sweep w, long b, int len, Sums k) {
        // Locals, not fields, in the loop: the JIT then hoists the segments' checks out of it.
        MemorySegment s = w.s;
        long so = w.so;
        MemorySegment g = w.g;
        long go = w.go;
        MemorySegment expS = w.expS;
        MemorySegment logMixture = w.logMixture;
        float scaleS = k.scaleS;
        FloatVector a = FloatVector.broadcast(F, k.invT);
        FloatVector minusLseS = FloatVector.broadcast(F, -k.lseS);
        FloatVector oneMinusBeta = FloatVector.broadcast(F, 1f - k.beta);
        FloatVector c = FloatVector.broadcast(F, k.coef);
        FloatVector minusPg = FloatVector.broadcast(F, -k.pg);
        for (int i = 0; i < len; i += F.length()) {
            long at = b + 4L * i;
            FloatVector ls = FloatVector.fromMemorySegment(F, s, so + at, NATIVE).fma(a, minusLseS);
            FloatVector p = FloatVector.fromMemorySegment(F, expS, at, NATIVE).mul(scaleS);
            FloatVector logM = FloatVector.fromMemorySegment(F, logMixture, 4L * i, NATIVE);
            times(p, ls.sub(logM).fma(oneMinusBeta, minusPg)).mul(c).intoMemorySegment(g, go + at, NATIVE);
        }
    }

    // ---- total variation: 0.5 sum |p - q|; d/dp = 0.5 sign(p - q) ----

    private static void tvdSums(Sweep w, long b, int len, Sums k) {
        // Locals, not fields, in the loop: the JIT then hoists the segments' checks out of it.
        MemorySegment expS = w.expS;
        MemorySegment expT = w.expT;
        float scaleS = k.scaleS;
        float scaleT = k.scaleT;
        FloatVector distance = FloatVector.zero(F);
        FloatVector pg = FloatVector.zero(F);
        for (int i = 0; i < len; i += F.length()) {
            long at = b + 4L * i;
            FloatVector p = FloatVector.fromMemorySegment(F, expS, at, NATIVE).mul(scaleS);
            FloatVector d = p.sub(FloatVector.fromMemorySegment(F, expT, at, NATIVE).mul(scaleT));
            distance = distance.add(d.abs());
            pg = pg.add(p.mul(halfSign(d)));
        }
        k.first += distance.reduceLanes(VectorOperators.ADD);
        k.second += pg.reduceLanes(VectorOperators.ADD);
    }

    private static void tvdGradient(Sweep w, long b, int len, Sums k) {
        // Locals, not fields, in the loop: the JIT then hoists the segments' checks out of it.
        MemorySegment g = w.g;
        long go = w.go;
        MemorySegment expS = w.expS;
        MemorySegment expT = w.expT;
        float scaleS = k.scaleS;
        float scaleT = k.scaleT;
        FloatVector c = FloatVector.broadcast(F, k.coef);
        FloatVector pg = FloatVector.broadcast(F, k.pg);
        for (int i = 0; i < len; i += F.length()) {
            long at = b + 4L * i;
            FloatVector p = FloatVector.fromMemorySegment(F, expS, at, NATIVE).mul(scaleS);
            FloatVector d = p.sub(FloatVector.fromMemorySegment(F, expT, at, NATIVE).mul(scaleT));
            p.mul(halfSign(d).sub(pg)).mul(c).intoMemorySegment(g, go + at, NATIVE);
        }
    }

    /** {@code probability * value}, 0 where the probability is 0 (so that 0 log 0 = 0). */
    private static FloatVector times(FloatVector probability, FloatVector value) {
        return probability.mul(value).blend(0f, probability.eq(0f));
    }

    /** 0.5, -0.5 or 0 by the sign of {@code d}. */
    private static FloatVector halfSign(FloatVector d) {
        return FloatVector.zero(F).blend(0.5f, d.compare(VectorOperators.GT, 0f)).blend(-0.5f, d.lt(0f));
    }

    /**
     * A row of a [N, stride] tensor as fp32: the tensor's own memory for F32, else decoded into
     * scratch; or, for an extrapolated teacher, {@code fma(alpha_row, z - z_ref, z)} in scratch.
     */
    private static final class RowView {
        private final MemorySegment source;
        private final DType dtype;
        private final int stride;
        private final int length;
        private final MemorySegment scratch;
        private RowView reference;
        private float[] alpha;
        private MemorySegment extrapolated;
        MemorySegment segment;
        long offset;

        RowView(MemorySegment source, DType dtype, int stride, int length, Arena arena) {
            this.source = source;
            this.dtype = dtype;
            this.stride = stride;
            this.length = length;
            this.scratch = dtype == DType.F32 ? null : arena.allocate(4L * length, 64);
        }

        void extrapolateFrom(RowView reference, float[] alpha, Arena arena) {
            this.reference = reference;
            this.alpha = alpha;
            this.extrapolated = arena.allocate(4L * length, 64);
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
            if (reference != null) {
                reference.load(row);
                extrapolate(segment, offset, reference.segment, reference.offset, length, alpha[row], extrapolated);
                segment = extrapolated;
                offset = 0;
            }
        }
    }

    /**
     * {@code out = fma(alpha, z - ref, z)} over a row: AlignDistil's extrapolated teacher logits.
     * A class masked in the teacher or the reference ({@code -inf}) is masked: extrapolating from
     * or towards an impossible class has no finite meaning (and {@code alpha = 0} would give NaN).
     */
    private static void extrapolate(MemorySegment z, long zo, MemorySegment ref, long ro, int n, float alpha,
                                    MemorySegment out) {
        FloatVector a = FloatVector.broadcast(F, alpha);
        int i = 0;
        for (int upper = F.loopBound(n); i < upper; i += F.length()) {
            FloatVector t = FloatVector.fromMemorySegment(F, z, zo + 4L * i, NATIVE);
            FloatVector r = FloatVector.fromMemorySegment(F, ref, ro + 4L * i, NATIVE);
            VectorMask<Float> masked = t.eq(Float.NEGATIVE_INFINITY).or(r.eq(Float.NEGATIVE_INFINITY));
            t.sub(r).fma(a, t).blend(Float.NEGATIVE_INFINITY, masked).intoMemorySegment(out, 4L * i, NATIVE);
        }
        for (; i < n; i++) {
            float t = z.get(ValueLayout.JAVA_FLOAT, zo + 4L * i);
            float r = ref.get(ValueLayout.JAVA_FLOAT, ro + 4L * i);
            boolean masked = t == Float.NEGATIVE_INFINITY || r == Float.NEGATIVE_INFINITY;
            out.set(ValueLayout.JAVA_FLOAT, 4L * i, masked ? Float.NEGATIVE_INFINITY : Math.fma(alpha, t - r, t));
        }
    }
}
