package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * CPU implementation of {@link ClippedKl}, row by row on fp32 scratch rows padded to whole
 * vectors with {@code -inf} logits (probability 0, gate 0):
 * <ol>
 *   <li>{@code x = z * (1/T)} of both rows, their max and {@code e = exp(x - max)} (vector);</li>
 *   <li>the teacher mass per bucket of {@code max - x} and the buckets' starts (scalar, one pass);</li>
 *   <li>per class its gate and the gate's derivatives w.r.t. {@code l} and {@code u} into three
 *       scratch rows: a bucket's value, or for the classes of the buckets that need their exact
 *       order, gathered as {@code (x, index)} keys and sorted, their own;</li>
 *   <li>the kept masses and the divergence sum (vector), then the gradient and the bound
 *       gradients' sums (vector).</li>
 * </ol>
 */
final class ClippedKlCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final int ELEMENTS_PER_TASK = 1 << 15;
    /** An ordered bucket holds more than this times gamma of mass (see {@link ClippedKl}). */
    static final double REFINE_MASS = 0x1p-22;

    private ClippedKlCpu() {
    }

    static void run(CpuBackend cpu, ClippedKl.ClipRows job) {
        int vocab = job.vocab();
        cpu.parallelFor(job.rows(), Math.max(1, ELEMENTS_PER_TASK / vocab), (from, to) -> {
            Scratch scratch = new Scratch(vocab);
            for (int row = from; row < to; row++) {
                if (job.weights()[row] == 0f) {
                    job.rowLoss()[row] = 0f;
                    job.keptMass()[row] = 0f;
                    if (job.gradient() != null) {
                        job.gradient().segment().asSlice(4L * row * vocab, 4L * vocab).fill((byte) 0);
                        job.lowerGradient()[row] = 0f;
                        job.upperGradient()[row] = 0f;
                    }
                    continue;
                }
                row(job, row, scratch);
            }
        });
    }

    /** Per-thread scratch rows, padded to whole vectors. */
    private static final class Scratch {
        final int vocab;
        final int padded;
        final float[] xs;
        final float[] xt;
        final float[] es;
        final float[] et;
        final float[] gate;
        final float[] gateL;
        final float[] gateU;
        final float[] grad;
        final double[] bucketMass = new double[ClippedKl.BUCKETS];
        final double[] bucketStart = new double[ClippedKl.BUCKETS];
        final boolean[] ordered = new boolean[ClippedKl.BUCKETS];
        final float[][] bucketGate = new float[3][ClippedKl.BUCKETS];
        final float[] one = new float[3];
        long[] keys = new long[64];

        Scratch(int vocab) {
            this.vocab = vocab;
            this.padded = (vocab + F.length() - 1) / F.length() * F.length();
            xs = new float[padded];
            xt = new float[padded];
            es = new float[padded];
            et = new float[padded];
            gate = new float[padded];
            gateL = new float[padded];
            gateU = new float[padded];
            grad = new float[padded];
        }

        /** Row {@code row} of {@code t} times {@code invT} into {@code dst}, padded with -inf. */
        void load(MemorySegment src, DType dtype, int row, float invT, float[] dst) {
            MemorySegment out = MemorySegment.ofArray(dst);
            long offset = (long) row * vocab * dtype.byteSize();
            if (dtype == DType.F32) {
                MemorySegment.copy(src, ValueLayout.JAVA_FLOAT, offset, dst, 0, vocab);
            } else {
                HalfFloats.decode(src, offset, dtype, out, vocab);
            }
            for (int j = 0; j < vocab; j++) {
                dst[j] *= invT; // rounded as a product, as every backend does
            }
            Arrays.fill(dst, vocab, padded, Float.NEGATIVE_INFINITY);
        }
    }

    private static void row(ClippedKl.ClipRows job, int row, Scratch sc) {
        float invT = job.invT();
        sc.load(job.student().segment(), job.student().dtype(), row, invT, sc.xs);
        sc.load(job.teacher().segment(), job.teacher().dtype(), row, invT, sc.xt);
        float maxS = max(sc.xs);
        float maxT = max(sc.xt);
        boolean withGradient = job.gradient() != null;
        if (!Float.isFinite(maxS) || !Float.isFinite(maxT)) { // NaN, +inf, or all -inf on one side
            job.rowLoss()[row] = Float.NaN;
            job.keptMass()[row] = Float.NaN;
            if (withGradient) {
                Arrays.fill(sc.grad, Float.NaN);
                MemorySegment.copy(sc.grad, 0, job.gradient().segment(), ValueLayout.JAVA_FLOAT, 4L * row * sc.vocab,
                        sc.vocab);
                job.lowerGradient()[row] = Float.NaN;
                job.upperGradient()[row] = Float.NaN;
            }
            return;
        }
        double sumS = exponentials(sc.xs, maxS, sc.es);
        double sumT = exponentials(sc.xt, maxT, sc.et);
        float scaleT = (float) (1 / sumT);
        gates(job, row, sc, maxT, scaleT);

        // Kept masses and the divergence sum over the band.
        float lseS = (float) (maxS + Math.log(sumS));
        float lseT = (float) (maxT + Math.log(sumT));
        float scaleS = (float) (1 / sumS);
        boolean forward = job.direction() == Divergence.Kind.FORWARD_KL;
        double[] sums = bandSums(sc, scaleS, scaleT, lseS, lseT, forward);
        double keptT = sums[0];
        double keptS = sums[1];
        job.keptMass()[row] = (float) keptT;
        if (keptT == 0) { // the band holds no class
            job.rowLoss()[row] = 0f;
            if (withGradient) {
                job.gradient().segment().asSlice(4L * row * sc.vocab, 4L * sc.vocab).fill((byte) 0);
                job.lowerGradient()[row] = 0f;
                job.upperGradient()[row] = 0f;
            }
            return;
        }
        // Forward: S / A_t + log A_s - log A_t with S = sum g p d; reverse: R / A_s + log A_t - log A_s.
        double mean = forward ? sums[2] / keptT : sums[2] / keptS;
        job.rowLoss()[row] = (float) (forward ? mean + Math.log(keptS) - Math.log(keptT)
                : mean + Math.log(keptT) - Math.log(keptS));
        if (withGradient) {
            double[] bounds = gradient(sc, scaleS, scaleT, lseS, lseT, forward, (float) (1 / keptS), (float) (1 / keptT),
                    (float) mean, job.gradCoef()[row]);
            MemorySegment.copy(sc.grad, 0, job.gradient().segment(), ValueLayout.JAVA_FLOAT, 4L * row * sc.vocab,
                    sc.vocab);
            job.lowerGradient()[row] = (float) (job.boundCoef()[row] * bounds[0]);
            job.upperGradient()[row] = (float) (job.boundCoef()[row] * bounds[1]);
        }
    }

    /** Gates and their derivatives of every class into the scratch rows. */
    private static void gates(ClippedKl.ClipRows job, int row, Scratch sc, float maxT, float scaleT) {
        float l = job.lower()[row];
        float u = job.upper()[row];
        float gamma = job.gamma();
        int buckets = ClippedKl.BUCKETS;
        Arrays.fill(sc.bucketMass, 0);
        for (int j = 0; j < sc.vocab; j++) {
            sc.bucketMass[bucket(maxT, sc.xt[j])] += sc.et[j] * scaleT;
        }
        double start = 0;
        for (int b = 0; b < buckets; b++) {
            double m = sc.bucketMass[b];
            sc.bucketStart[b] = start;
            sc.ordered[b] = needsOrder(start, m, l, u, gamma);
            gate(start, l, u, gamma, sc.one);
            sc.bucketGate[0][b] = sc.one[0];
            sc.bucketGate[1][b] = sc.one[1];
            sc.bucketGate[2][b] = sc.one[2];
            start += m;
        }
        int count = 0;
        for (int j = 0; j < sc.vocab; j++) {
            int b = bucket(maxT, sc.xt[j]);
            sc.gate[j] = sc.bucketGate[0][b];
            sc.gateL[j] = sc.bucketGate[1][b];
            sc.gateU[j] = sc.bucketGate[2][b];
            if (sc.ordered[b]) {
                if (count == sc.keys.length) {
                    sc.keys = Arrays.copyOf(sc.keys, 2 * count);
                }
                sc.keys[count++] = orderKey(sc.xt[j], j);
            }
        }
        Arrays.fill(sc.gate, sc.vocab, sc.padded, 0f);
        Arrays.fill(sc.gateL, sc.vocab, sc.padded, 0f);
        Arrays.fill(sc.gateU, sc.vocab, sc.padded, 0f);
        // The ordered buckets' classes in the teacher's order: c runs from each bucket's start.
        Arrays.sort(sc.keys, 0, count);
        int current = -1;
        double c = 0;
        for (int k = 0; k < count; k++) {
            int j = (int) sc.keys[k];
            int b = bucket(maxT, sc.xt[j]);
            if (b != current) {
                current = b;
                c = sc.bucketStart[b];
            }
            gate(c, l, u, gamma, sc.one);
            sc.gate[j] = sc.one[0];
            sc.gateL[j] = sc.one[1];
            sc.gateU[j] = sc.one[2];
            c += sc.et[j] * scaleT;
        }
        if (gamma == 0f && u >= 1f) {
            for (int j = 0; j < sc.vocab; j++) {
                if (sc.xt[j] == Float.NEGATIVE_INFINITY) { // c = 1, not below u
                    sc.gate[j] = 0f;
                }
            }
        }
        int target = job.targets()[row];
        if (target >= 0) {
            sc.gate[target] = 1f;
            sc.gateL[target] = 0f;
            sc.gateU[target] = 0f;
        }
    }

    /** The bucket of a teacher class: {@code (max - x) * 8}, the last one open-ended (and -inf). */
    static int bucket(float max, float x) {
        float d = (max - x) * ClippedKl.BUCKETS_PER_UNIT;
        return d < ClippedKl.BUCKETS - 1 ? (int) d : ClippedKl.BUCKETS - 1;
    }

    /** Whether a bucket of mass {@code m} starting at {@code c} needs its classes in exact order. */
    static boolean needsOrder(double c, double m, float l, float u, float gamma) {
        if (gamma == 0f) {
            return m > 0 && (c <= l && l <= c + m || u < 1f && c <= u && u <= c + m);
        }
        double reach = ClippedKl.GATE_CUTOFF * (double) gamma;
        return m > REFINE_MASS * gamma && (c <= l + reach && l - reach <= c + m || c <= u + reach && u - reach <= c + m);
    }

    /** {@code {g, dg/dl, dg/du}} of a class whose cumulative mass before it is {@code c}. */
    static void gate(double c, float l, float u, float gamma, float[] out) {
        if (gamma == 0f) {
            // u = 1 passes every class of non-zero teacher probability (c < 1 in exact arithmetic,
            // whatever the rounding of c near 1); gates() gives the classes of probability 0 gate 0.
            out[0] = l <= c && (c < u || u >= 1f) ? 1f : 0f;
            out[1] = 0f;
            out[2] = 0f;
            return;
        }
        double a = (c - l) / gamma;
        double b = (u - c) / gamma;
        if (a < -ClippedKl.GATE_CUTOFF || b < -ClippedKl.GATE_CUTOFF) {
            out[0] = out[1] = out[2] = 0f;
            return;
        }
        double ea = Math.exp(-a);
        double eb = Math.exp(-b);
        double sa = 1 / (1 + ea);
        double sb = 1 / (1 + eb);
        double g = sa * sb;
        out[0] = (float) g;
        out[1] = (float) (-g * (ea * sa) / gamma); // 1 - s = e s, without cancellation
        out[2] = (float) (g * (eb * sb) / gamma);
    }

    /** Sorts descending by {@code x}, then ascending by class index; -0.0 ties with 0.0. */
    private static long orderKey(float x, int j) {
        int bits = Float.floatToRawIntBits(x + 0f);
        int ascending = bits ^ ((bits >> 31) & 0x7fffffff);
        return ((long) ~ascending << 32) | j;
    }

    private static float max(float[] x) {
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        boolean nan = false;
        for (int i = 0; i < x.length; i += F.length()) {
            FloatVector v = FloatVector.fromArray(F, x, i);
            nan |= v.test(VectorOperators.IS_NAN).anyTrue();
            m = m.max(v);
        }
        return nan ? Float.NaN : m.reduceLanes(VectorOperators.MAX);
    }

    private static double exponentials(float[] x, float max, float[] e) {
        FloatVector sum = FloatVector.zero(F);
        for (int i = 0; i < x.length; i += F.length()) {
            FloatVector v = VectorMath.expNonPositive(FloatVector.fromArray(F, x, i).sub(max));
            v.intoArray(e, i);
            sum = sum.add(v);
        }
        return sum.reduceLanes(VectorOperators.ADD);
    }

    /**
     * {@code {sum g p, sum g q, sum}} with {@code sum = sum g p d} (forward) or {@code sum g q (-d)}
     * (reverse), {@code d = (x_t - lse_t) - (x_s - lse_s)}; terms of weight 0 add nothing.
     */
    private static double[] bandSums(Scratch sc, float scaleS, float scaleT, float lseS, float lseT, boolean forward) {
        FloatVector keptT = FloatVector.zero(F);
        FloatVector keptS = FloatVector.zero(F);
        FloatVector acc = FloatVector.zero(F);
        for (int i = 0; i < sc.padded; i += F.length()) {
            FloatVector g = FloatVector.fromArray(F, sc.gate, i);
            FloatVector gp = g.mul(FloatVector.fromArray(F, sc.et, i).mul(scaleT));
            FloatVector gq = g.mul(FloatVector.fromArray(F, sc.es, i).mul(scaleS));
            FloatVector d = FloatVector.fromArray(F, sc.xt, i).sub(lseT)
                    .sub(FloatVector.fromArray(F, sc.xs, i).sub(lseS));
            keptT = keptT.add(gp);
            keptS = keptS.add(gq);
            FloatVector w = forward ? gp : gq;
            FloatVector term = forward ? w.mul(d) : w.mul(d.neg());
            acc = acc.add(term.blend(0f, w.eq(0f)));
        }
        return new double[] {keptT.reduceLanes(VectorOperators.ADD), keptS.reduceLanes(VectorOperators.ADD),
                acc.reduceLanes(VectorOperators.ADD)};
    }

    /**
     * The student gradient into {@code sc.grad} and {@code {sum dL/dg dg/dl, sum dL/dg dg/du}}.
     * Forward: {@code dL/dx_s = g (q / A_s - p / A_t)},
     * {@code dL/dg = (p / A_t)(d - mean - 1) + q / A_s}. Reverse, with {@code e = -d}:
     * {@code dL/dx_s = (g q / A_s)(e - mean)}, {@code dL/dg = (q / A_s)(e - mean - 1) + p / A_t}.
     */
    private static double[] gradient(Scratch sc, float scaleS, float scaleT, float lseS, float lseT, boolean forward,
                                     float invKeptS, float invKeptT, float mean, float coef) {
        FloatVector dl = FloatVector.zero(F);
        FloatVector du = FloatVector.zero(F);
        for (int i = 0; i < sc.padded; i += F.length()) {
            FloatVector g = FloatVector.fromArray(F, sc.gate, i);
            FloatVector pt = FloatVector.fromArray(F, sc.et, i).mul(scaleT * invKeptT);  // p / A_t
            FloatVector qs = FloatVector.fromArray(F, sc.es, i).mul(scaleS * invKeptS);  // q / A_s
            FloatVector d = FloatVector.fromArray(F, sc.xt, i).sub(lseT)
                    .sub(FloatVector.fromArray(F, sc.xs, i).sub(lseS));
            FloatVector grad;
            FloatVector dLdg;
            if (forward) {
                grad = g.mul(qs.sub(pt));
                dLdg = pt.mul(d.sub(mean + 1f)).blend(0f, pt.eq(0f)).add(qs);
            } else {
                FloatVector e = d.neg();
                VectorMask<Float> none = qs.eq(0f);
                grad = g.mul(qs).mul(e.sub(mean)).blend(0f, none.or(g.eq(0f)));
                dLdg = qs.mul(e.sub(mean + 1f)).blend(0f, none).add(pt);
            }
            grad.mul(coef).intoArray(sc.grad, i);
            FloatVector gl = FloatVector.fromArray(F, sc.gateL, i);
            FloatVector gu = FloatVector.fromArray(F, sc.gateU, i);
            dl = dl.add(dLdg.mul(gl).blend(0f, gl.eq(0f)));
            du = du.add(dLdg.mul(gu).blend(0f, gu.eq(0f)));
        }
        return new double[] {dl.reduceLanes(VectorOperators.ADD), du.reduceLanes(VectorOperators.ADD)};
    }
}
