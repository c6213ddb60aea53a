package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
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
 * Every sum over the row is taken per lane in fp32 over blocks of {@value #BLOCK} classes and in
 * fp64 across blocks, so its error does not grow with the vocabulary.
 */
final class ClippedKlCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    private static final int ELEMENTS_PER_TASK = 1 << 15;
    /** An ordered bucket holds more than this times gamma of mass (see {@link ClippedKl}). */
    static final double REFINE_MASS = 0x1p-22;
    private static final int RADIX_BITS = 8;
    private static final int RADIX_PASSES = 32 / RADIX_BITS;
    /**
     * Band sums (of {@code exp(x - max)}) below this are taken again from the band's max: the
     * classes of such a band lie ~28 or more below the row's max, and {@code e^x}, which flushes to
     * 0 below about {@code 2^-124}, would drop or round their terms. Above it, a term that flushes
     * is below {@code 2^-84} of the band sum ({@code 2^-53} for {@code 2^31} of them). The CUDA
     * kernel has the same rule.
     */
    static final double TINY_SUM = 0x1p-40;
    /** Classes per fp32 partial sum; partial sums add up in fp64. */
    private static final int BLOCK = 2048;

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
                        HalfFloats.fill(job.gradient().segment(), job.gradient().dtype(), (long) row * vocab, vocab, 0f);
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
        /** The gradient's F16/BF16 bits on their way out. */
        final short[] bits;
        final int[] bucketOf;
        /** Two interleaved histograms: consecutive classes of one bucket do not wait on each other's add. */
        final double[] bucketMass = new double[ClippedKl.BUCKETS];
        final double[] bucketMassOdd = new double[ClippedKl.BUCKETS];
        final double[] bucketStart = new double[ClippedKl.BUCKETS];
        final boolean[] ordered = new boolean[ClippedKl.BUCKETS];
        final float[] bucketC = new float[ClippedKl.BUCKETS];
        final float[] one = new float[3];
        final int[][] digitCount = new int[RADIX_PASSES][1 << RADIX_BITS];
        // The ordered classes: sort keys and class indices (two buffers each for the radix sort),
        // sized for a whole row (a flat teacher orders all).
        final int[] keys;
        final int[] classes;
        final int[] keysSpare;
        final int[] classesSpare;
        /** Per class its cumulative mass c: its bucket's start, or exact for the ordered classes. */
        final float[] classC;

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
            bits = new short[padded];
            bucketOf = new int[padded];
            keys = new int[padded];
            classes = new int[padded];
            keysSpare = new int[padded];
            classesSpare = new int[padded];
            classC = new float[padded];
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
        float maxS = VectorMath.max(sc.xs, sc.xs.length);
        float maxT = VectorMath.max(sc.xt, sc.xt.length);
        boolean withGradient = job.gradient() != null;
        if (!Float.isFinite(maxS) || !Float.isFinite(maxT)) { // NaN, +inf, or all -inf on one side
            job.rowLoss()[row] = Float.NaN;
            job.keptMass()[row] = Float.NaN;
            if (withGradient) {
                Arrays.fill(sc.grad, Float.NaN);
                storeGradient(job, row, sc);
                job.lowerGradient()[row] = Float.NaN;
                job.upperGradient()[row] = Float.NaN;
            }
            return;
        }
        double sumS = exponentials(sc.xs, maxS, sc.es);
        double sumT = exponentials(sc.xt, maxT, sc.et);
        gates(job, row, sc, maxT);

        // Band sums of e = exp(x - shift), shift the row's max; if a side's band sum is below
        // TINY_SUM there (its classes all sit ~28 or more below the max), the band's max becomes
        // that side's shift.
        float lseS = (float) (maxS + Math.log(sumS));
        float lseT = (float) (maxT + Math.log(sumT));
        boolean forward = job.direction() == Divergence.Kind.FORWARD_KL;
        double[] sums = bandSums(sc, lseS, lseT, forward);
        float shiftS = maxS;
        float shiftT = maxT;
        if (sums[1] < TINY_SUM || sums[0] < TINY_SUM) {
            float bandS = bandMax(sc.xs, sc.gate);
            float bandT = bandMax(sc.xt, sc.gate);
            if (sums[1] < TINY_SUM && bandS > Float.NEGATIVE_INFINITY) {
                shiftS = bandS;
                exponentials(sc.xs, shiftS, sc.es);
            }
            if (sums[0] < TINY_SUM && bandT > Float.NEGATIVE_INFINITY) {
                shiftT = bandT;
                exponentials(sc.xt, shiftT, sc.et);
            }
            sums = bandSums(sc, lseS, lseT, forward);
        }
        // log A = log(sum g e) + (shift - lse): the band's mass, without underflow. shift - lse first
        // (exact in fp64): added to a shift of 1e20, log(sum g e) would round away.
        double logKeptT = Math.log(sums[0]) + ((double) shiftT - lseT);
        double logKeptS = Math.log(sums[1]) + ((double) shiftS - lseS);
        job.keptMass()[row] = (float) Math.exp(logKeptT);
        if (sums[0] == 0 || sums[1] == 0) {
            // No class of non-zero teacher probability in the band: loss 0. The student gives the
            // band no probability at all (-inf there): the divergence is +inf.
            boolean empty = sums[0] == 0;
            job.keptMass()[row] = empty ? 0f : job.keptMass()[row];
            job.rowLoss()[row] = empty ? 0f : Float.POSITIVE_INFINITY;
            if (withGradient) {
                Arrays.fill(sc.grad, empty ? 0f : Float.NaN);
                storeGradient(job, row, sc);
                job.lowerGradient()[row] = empty ? 0f : Float.NaN;
                job.upperGradient()[row] = empty ? 0f : Float.NaN;
            }
            return;
        }
        // Forward: E_{P~t}[d] + log A_s - log A_t; reverse: E_{P~s}[-d] + log A_t - log A_s.
        double mean = forward ? sums[2] / sums[0] : sums[2] / sums[1];
        double kl = forward ? mean + logKeptS - logKeptT : mean + logKeptT - logKeptS;
        // rounding below the lower bound 0; NaN, +inf and a -inf (a bug, not rounding) stay
        job.rowLoss()[row] = kl < 0 && kl > Double.NEGATIVE_INFINITY ? 0f : (float) kl;
        if (withGradient) {
            double[] bounds = gradient(sc, lseS, lseT, forward, (float) (1 / sums[1]), (float) (1 / sums[0]),
                    (float) mean, job.gradCoef()[row]);
            storeGradient(job, row, sc);
            job.lowerGradient()[row] = (float) (job.boundCoef()[row] * bounds[0]);
            job.upperGradient()[row] = (float) (job.boundCoef()[row] * bounds[1]);
        }
    }

    /** The max of {@code x} over the classes of non-zero gate. */
    private static float bandMax(float[] x, float[] gate) {
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        for (int i = 0; i < x.length; i += F.length()) {
            FloatVector v = FloatVector.fromArray(F, x, i);
            m = m.max(v.blend(Float.NEGATIVE_INFINITY, FloatVector.fromArray(F, gate, i).eq(0f)));
        }
        return m.reduceLanes(VectorOperators.MAX);
    }

    /** Gates and their derivatives of every class into the scratch rows. */
    private static void gates(ClippedKl.ClipRows job, int row, Scratch sc, float maxT) {
        float l = job.lower()[row];
        float u = job.upper()[row];
        float gamma = job.gamma();
        int buckets = ClippedKl.BUCKETS;
        bucketIndices(sc.xt, maxT, sc.bucketOf);
        Arrays.fill(sc.bucketMass, 0);
        Arrays.fill(sc.bucketMassOdd, 0);
        int pairs = sc.vocab & ~1;
        for (int j = 0; j < pairs; j += 2) {
            sc.bucketMass[sc.bucketOf[j]] += sc.et[j];
            sc.bucketMassOdd[sc.bucketOf[j + 1]] += sc.et[j + 1];
        }
        if (pairs < sc.vocab) {
            sc.bucketMass[sc.bucketOf[pairs]] += sc.et[pairs];
        }
        double total = 0;
        for (int b = 0; b < buckets; b++) {
            total += sc.bucketMass[b] + sc.bucketMassOdd[b];
        }
        // c is normalized by the fp64 total of the masses it is summed from: the last class ends at 1.
        double invTotal = 1 / total;
        double start = 0;
        boolean anyOrdered = false;
        for (int b = 0; b < buckets; b++) {
            double m = (sc.bucketMass[b] + sc.bucketMassOdd[b]) * invTotal;
            sc.bucketStart[b] = start;
            sc.bucketC[b] = (float) start;
            sc.ordered[b] = needsOrder(start, m, l, u, gamma);
            anyOrdered |= sc.ordered[b];
            start += m;
        }
        for (int j = 0; j < sc.padded; j += F.length()) { // every class its bucket's start
            FloatVector.fromArray(F, sc.bucketC, 0, sc.bucketOf, j).intoArray(sc.classC, j);
        }
        if (anyOrdered) {
            orderedStarts(sc, invTotal);
        }
        gatesAt(sc.classC, sc.padded, l, u, gamma, sc.gate, sc.gateL, sc.gateU, sc.one);
        Arrays.fill(sc.gate, sc.vocab, sc.padded, 0f);
        Arrays.fill(sc.gateL, sc.vocab, sc.padded, 0f);
        Arrays.fill(sc.gateU, sc.vocab, sc.padded, 0f);
        for (int j = 0; j < sc.padded; j += F.length()) { // masked by the teacher: out, whatever c rounds to
            VectorMask<Float> masked = FloatVector.fromArray(F, sc.xt, j).eq(Float.NEGATIVE_INFINITY);
            if (masked.anyTrue()) {
                FloatVector.fromArray(F, sc.gate, j).blend(0f, masked).intoArray(sc.gate, j);
                FloatVector.fromArray(F, sc.gateL, j).blend(0f, masked).intoArray(sc.gateL, j);
                FloatVector.fromArray(F, sc.gateU, j).blend(0f, masked).intoArray(sc.gateU, j);
            }
        }
        int target = job.targets()[row];
        if (target >= 0 && sc.xt[target] != Float.NEGATIVE_INFINITY) {
            sc.gate[target] = 1f;
            sc.gateL[target] = 0f;
            sc.gateU[target] = 0f;
        }
    }

    /**
     * The exact cumulative mass of the classes of the ordered buckets: the classes in the
     * teacher's order (a stable radix sort of keys gathered in class order, so ties stay in
     * class order), summed from their bucket's start.
     */
    private static void orderedStarts(Scratch sc, double invTotal) {
        int n = 0;
        for (int j = 0; j < sc.vocab; j++) {
            if (sc.ordered[sc.bucketOf[j]]) {
                sc.keys[n] = descendingKey(sc.xt[j]);
                sc.classes[n++] = j;
            }
        }
        int[] order = radixSort(sc, n);
        int current = -1;
        double c = 0;
        for (int i = 0; i < n; i++) {
            int j = order[i];
            int b = sc.bucketOf[j];
            if (b != current) {
                current = b;
                c = sc.bucketStart[b];
            }
            sc.classC[j] = (float) c;
            c += sc.et[j] * invTotal;
        }
    }

    /** {@code bucket(max, x)} of every element, vectorized. */
    private static void bucketIndices(float[] x, float max, int[] out) {
        float last = ClippedKl.BUCKETS - 1;
        for (int j = 0; j < x.length; j += F.length()) {
            FloatVector d = FloatVector.broadcast(F, max).sub(FloatVector.fromArray(F, x, j))
                    .mul(ClippedKl.BUCKETS_PER_UNIT).min(last); // -inf: +inf, then the last bucket
            ((IntVector) d.convert(VectorOperators.F2I, 0)).intoArray(out, j);
        }
    }

    /**
     * Sorts ascending by unsigned key, stable, by least significant byte first (the four digit
     * histograms counted in one pass; 256 output streams per pass stay in L1's reach where 2048
     * did not); returns the array of class indices in that order.
     */
    private static int[] radixSort(Scratch sc, int n) {
        int[] keys = sc.keys;
        int[] classes = sc.classes;
        int[] keysOut = sc.keysSpare;
        int[] classesOut = sc.classesSpare;
        int mask = (1 << RADIX_BITS) - 1;
        int[][] count = sc.digitCount;
        for (int[] c : count) {
            Arrays.fill(c, 0);
        }
        for (int i = 0; i < n; i++) {
            int key = keys[i];
            count[0][key & mask]++;
            count[1][(key >>> 8) & mask]++;
            count[2][(key >>> 16) & mask]++;
            count[3][key >>> 24]++;
        }
        for (int pass = 0; pass < RADIX_PASSES && n > 1; pass++) {
            int shift = pass * RADIX_BITS;
            int[] c = count[pass];
            if (c[(keys[0] >>> shift) & mask] == n) {
                continue; // every key has this digit: the pass would not move anything
            }
            int sum = 0;
            for (int d = 0; d <= mask; d++) {
                int k = c[d];
                c[d] = sum;
                sum += k;
            }
            for (int i = 0; i < n; i++) {
                int p = c[(keys[i] >>> shift) & mask]++;
                keysOut[p] = keys[i];
                classesOut[p] = classes[i];
            }
            int[] t = keys;
            keys = keysOut;
            keysOut = t;
            t = classes;
            classes = classesOut;
            classesOut = t;
        }
        return classes;
    }

    /** An unsigned key that sorts descending by {@code x}; -0.0 ties with 0.0. */
    private static int descendingKey(float x) {
        int bits = Float.floatToRawIntBits(x + 0f);
        int ascending = VectorMath.orderKey(bits); // signed order of the floats
        return ~(ascending ^ Integer.MIN_VALUE);
    }

    /**
     * {@link #gate} of {@code c[0..n)} into {@code g}, {@code gl}, {@code gu}: vectorized for the
     * soft rule ({@code sigma(a) = 1 / (1 + e)} or {@code e / (1 + e)} with {@code e = exp(-|a|)},
     * and {@code 1 - sigma} likewise, without cancellation) and the hard one, scalar for the tail.
     */
    private static void gatesAt(float[] c, int n, float l, float u, float gamma, float[] g, float[] gl, float[] gu,
                                float[] one) {
        int i = 0;
        if (gamma == 0f) { // the hard band: 1 inside, 0 outside, no derivatives
            FloatVector zero = FloatVector.zero(F);
            for (int bound = F.loopBound(n); i < bound; i += F.length()) {
                FloatVector cv = FloatVector.fromArray(F, c, i);
                VectorMask<Float> inside = cv.compare(VectorOperators.GE, l);
                if (u < 1f) {
                    inside = inside.and(cv.lt(u));
                }
                zero.blend(1f, inside).intoArray(g, i);
                zero.intoArray(gl, i);
                zero.intoArray(gu, i);
            }
        } else {
            FloatVector lower = FloatVector.broadcast(F, l);
            FloatVector upper = FloatVector.broadcast(F, u);
            FloatVector one1 = FloatVector.broadcast(F, 1f);
            for (int bound = F.loopBound(n); i < bound; i += F.length()) {
                FloatVector cv = FloatVector.fromArray(F, c, i);
                FloatVector a = cv.sub(lower).div(gamma);
                FloatVector b = upper.sub(cv).div(gamma);
                FloatVector ea = VectorMath.expNonPositive(a.abs().neg());
                FloatVector eb = VectorMath.expNonPositive(b.abs().neg());
                FloatVector ia = one1.div(ea.add(1f));
                FloatVector ib = one1.div(eb.add(1f));
                VectorMask<Float> aNegative = a.lt(0f);
                VectorMask<Float> bNegative = b.lt(0f);
                FloatVector sa = ia.blend(ea.mul(ia), aNegative);
                FloatVector sb = ib.blend(eb.mul(ib), bNegative);
                FloatVector restA = ea.mul(ia).blend(ia, aNegative); // 1 - sigma(a)
                FloatVector restB = eb.mul(ib).blend(ib, bNegative);
                VectorMask<Float> cut = a.lt(-ClippedKl.GATE_CUTOFF).or(b.lt(-ClippedKl.GATE_CUTOFF));
                FloatVector gv = sa.mul(sb).blend(0f, cut);
                gv.intoArray(g, i);
                gv.neg().mul(restA).div(gamma).intoArray(gl, i);
                gv.mul(restB).div(gamma).intoArray(gu, i);
            }
        }
        for (; i < n; i++) {
            gate(c[i], l, u, gamma, one);
            g[i] = one[0];
            gl[i] = one[1];
            gu[i] = one[2];
        }
    }

    /** The bucket of a teacher class: {@code (max - x) * 8}, the last one open-ended (and -inf). */
    static int bucket(float max, float x) {
        float d = (max - x) * ClippedKl.BUCKETS_PER_UNIT;
        return d < ClippedKl.BUCKETS - 1 ? (int) d : ClippedKl.BUCKETS - 1;
    }

    /**
     * Whether a bucket of mass {@code m} starting at {@code c} needs its classes in exact order.
     * Hard rule: its classes have {@code c <= c_j < c + m}, so a bound at or below {@code c}, or at
     * or above {@code c + m}, gives them all one gate.
     */
    static boolean needsOrder(double c, double m, float l, float u, float gamma) {
        if (gamma == 0f) {
            return m > 0 && (c < l && l < c + m || u < 1f && c < u && u < c + m);
        }
        double reach = ClippedKl.GATE_CUTOFF * (double) gamma;
        return m > REFINE_MASS * gamma && (c <= l + reach && l - reach <= c + m || c <= u + reach && u - reach <= c + m);
    }

    /** {@code {g, dg/dl, dg/du}} of a class whose cumulative mass before it is {@code c}. */
    static void gate(double c, float l, float u, float gamma, float[] out) {
        if (gamma == 0f) {
            // u = 1 passes every class of non-zero teacher probability (c < 1 in exact arithmetic,
            // whatever the rounding of c near 1); gates() gives the classes of probability 0 gate 0,
            // for every u and both rules.
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

    /** The row's gradient from {@code sc.grad} into the caller's buffer: F32, or rounded once to F16/BF16. */
    private static void storeGradient(ClippedKl.ClipRows job, int row, Scratch sc) {
        DType type = job.gradient().dtype();
        long at = (long) row * sc.vocab * type.byteSize();
        HalfFloats.store(sc.grad, sc.vocab, type, sc.bits, job.gradient().segment(), at);
    }

    private static double exponentials(float[] x, float max, float[] e) {
        double total = 0;
        for (int from = 0; from < x.length; from += BLOCK) {
            int to = Math.min(x.length, from + BLOCK);
            FloatVector sum = FloatVector.zero(F);
            for (int i = from; i < to; i += F.length()) {
                // min: with a band's max as the shift, classes outside the band (gate 0) may lie above it.
                FloatVector v = VectorMath.expNonPositive(FloatVector.fromArray(F, x, i).sub(max).min(0f));
                v.intoArray(e, i);
                sum = sum.add(v);
            }
            total += VectorMath.sumLanes(sum);
        }
        return total;
    }

    /**
     * {@code {sum g e_t, sum g e_s, sum}} with {@code sum = sum g e_t d} (forward) or
     * {@code sum g e_s (-d)} (reverse), {@code d = (x_t - lse_t) - (x_s - lse_s)}, {@code e} the
     * scratch exponentials (relative to a shift the caller knows); terms of weight 0 add nothing.
     */
    private static double[] bandSums(Scratch sc, float lseS, float lseT, boolean forward) {
        double[] sums = new double[3];
        for (int from = 0; from < sc.padded; from += BLOCK) {
            bandSums(sc, lseS, lseT, forward, from, Math.min(sc.padded, from + BLOCK), sums);
        }
        return sums;
    }

    /** {@link #bandSums} of classes {@code [from, to)} added to {@code sums}. */
    private static void bandSums(Scratch sc, float lseS, float lseT, boolean forward, int from, int to,
                                 double[] sums) {
        FloatVector keptT = FloatVector.zero(F);
        FloatVector keptS = FloatVector.zero(F);
        FloatVector acc = FloatVector.zero(F);
        for (int i = from; i < to; i += F.length()) {
            FloatVector g = FloatVector.fromArray(F, sc.gate, i);
            FloatVector gp = g.mul(FloatVector.fromArray(F, sc.et, i));
            FloatVector gq = g.mul(FloatVector.fromArray(F, sc.es, i));
            FloatVector d = FloatVector.fromArray(F, sc.xt, i).sub(lseT)
                    .sub(FloatVector.fromArray(F, sc.xs, i).sub(lseS));
            keptT = keptT.add(gp);
            keptS = keptS.add(gq);
            FloatVector w = forward ? gp : gq;
            FloatVector term = forward ? w.mul(d) : w.mul(d.neg());
            acc = acc.add(term.blend(0f, w.eq(0f)));
        }
        sums[0] += VectorMath.sumLanes(keptT);
        sums[1] += VectorMath.sumLanes(keptS);
        sums[2] += VectorMath.sumLanes(acc);
    }

    /**
     * The student gradient into {@code sc.grad} and {@code {sum dL/dg dg/dl, sum dL/dg dg/du}}.
     * Forward: {@code dL/dx_s = g (q / A_s - p / A_t)},
     * {@code dL/dg = (p / A_t)(d - mean - 1) + q / A_s}. Reverse, with {@code e = -d}:
     * {@code dL/dx_s = (g q / A_s)(e - mean)}, {@code dL/dg = (q / A_s)(e - mean - 1) + p / A_t}.
     */
    private static double[] gradient(Scratch sc, float lseS, float lseT, boolean forward, float invSumS,
                                     float invSumT, float mean, float coef) {
        double[] bounds = new double[2];
        for (int from = 0; from < sc.padded; from += BLOCK) {
            gradient(sc, lseS, lseT, forward, invSumS, invSumT, mean, coef, from, Math.min(sc.padded, from + BLOCK),
                    bounds);
        }
        return bounds;
    }

    /** {@link #gradient} of classes {@code [from, to)}, the bound sums added to {@code bounds}. */
    private static void gradient(Scratch sc, float lseS, float lseT, boolean forward, float invSumS, float invSumT,
                                 float mean, float coef, int from, int to, double[] bounds) {
        FloatVector dl = FloatVector.zero(F);
        FloatVector du = FloatVector.zero(F);
        for (int i = from; i < to; i += F.length()) {
            FloatVector g = FloatVector.fromArray(F, sc.gate, i);
            FloatVector pt = FloatVector.fromArray(F, sc.et, i).mul(invSumT); // p / A_t
            FloatVector qs = FloatVector.fromArray(F, sc.es, i).mul(invSumS); // q / A_s
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
        bounds[0] += VectorMath.sumLanes(dl);
        bounds[1] += VectorMath.sumLanes(du);
    }
}
