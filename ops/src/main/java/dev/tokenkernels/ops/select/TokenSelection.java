package dev.tokenkernels.ops.select;

import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Backends;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.Tensor;
import dev.tokenkernels.runtime.TokenKernelsException;
import java.math.BigDecimal;
import java.math.RoundingMode;

/**
 * Exact order statistics of a per-token score vector and the selection masks built on them: the
 * k-th smallest or largest masked score, its nearest-rank quantile, "keep the top k" and "keep the
 * scores at or above a quantile". The building block of token selection in RL losses (D^3S's
 * {@code |A| H} top-K, entropy-quantile selection, HAPO's entropy pivot).
 *
 * <p><b>Order.</b> Over the masked entries of F32 {@code scores [N]} (mask U8 {@code [N]}, nonzero
 * = counted; null counts every entry), entries are ordered by value in the IEEE total order
 * ({@code -inf < ... < -0.0 < +0.0 < ... < +inf}) and ties by index, lower first. That order is
 * total, so the element of rank {@code k} is one well-defined index on every backend: cpu and
 * cuda-emu (and cuda) return the same index and the same bits. {@link Order#LARGEST} orders by
 * value descending and still breaks ties by the lower index, so "the top k" keeps, among equal
 * scores at the threshold, the lowest indices, and exactly {@code min(k, n)} entries are kept.
 * A NaN score at a masked entry is an {@link IllegalArgumentException} (NaN has no rank); NaN at
 * an entry the mask excludes is ignored.
 *
 * <p><b>Quantiles.</b> With {@code n} masked entries, the q-quantile is the element of 1-based
 * ascending rank {@link #rank(double, long, Rank)}: {@link Rank#NEAREST_RANK} {@code max(1,
 * ceil(q n))} (q = 0 gives the smallest, q = 1 the largest), {@link Rank#ROUND_LINEAR}
 * {@code 1 + rint(q (n - 1))} (numpy/torch {@code interpolation='nearest'}, ties to even, as
 * HAPO's released code), or {@link Rank#LINEAR_CEILING} {@code 1 + ceil(q (n - 1))} (the smallest
 * entry at or above numpy/torch's default linear quantile). All are computed on the host, in
 * exact decimal arithmetic on the decimal {@code q} prints as ({@code 0.07 * 100} is 7, not the
 * 7.000000000000001 of float64, whose ceiling would be one rank too far),
 * identically for every backend. With {@code n = 0} there is no quantile:
 * {@link Element#index()} is -1 and the value NaN; the masks keep nothing.
 *
 * <p><b>Method and cost.</b> Scores become order-preserving unsigned keys ({@code bits ^ 0x80000000}
 * for a positive sign, {@code ~bits} for a negative one; complemented for LARGEST) and the element
 * of rank k is found by radix select on 8-bit digits. On a GPU ({@code kernels/select/token_selection.cu})
 * each pass is a multi-block histogram of the digit over the entries whose higher digits match the
 * prefix found so far (shared-memory histograms, one atomic add per block and bin) and a one-block
 * scan that picks the digit and the residual rank; 4 passes over the key, then ceil(log2(N) / 8)
 * passes over the index digits among the entries with the chosen key, so ties resolve to the
 * lower index without a sort: {@code 4 + ceil(log2 N / 8)} reads of the scores and mask (7 at
 * N = 10^6), no extra memory but a 256-bin histogram. On the CPU the first pass builds the keys
 * with the Vector API and compacts the masked entries in index order; each radix pass then keeps
 * only the candidates of the chosen bin, stably, so the last candidates hold the chosen key in
 * index order and the residual rank indexes them: one read of the scores and a few passes over a
 * shrinking candidate list. A mask costs one more vector pass over the scores (both backends).
 * Validation (the masked count and the NaN check) is one vector pass on the host.
 */
public final class TokenSelection {

    /** Which end rank 1 is: the smallest score or the largest. */
    public enum Order {
        /** Rank 1 is the smallest score. */
        SMALLEST,
        /** Rank 1 is the largest score. */
        LARGEST
    }

    /** How a quantile q in [0, 1] becomes a rank among n entries; see {@link #rank(double, long, Rank)}. */
    public enum Rank {
        /** {@code max(1, ceil(q n))}: the smallest value with at least a fraction q of the entries at or below it. */
        NEAREST_RANK,
        /** {@code 1 + rint(q (n - 1))}: numpy/torch's {@code 'nearest'} interpolation (ties to even). */
        ROUND_LINEAR,
        /**
         * {@code 1 + ceil(q (n - 1))}: the smallest entry at or above numpy/torch's default
         * {@code 'linear'} quantile, which interpolates between ranks {@code floor} and {@code ceil}
         * of {@code 1 + q (n - 1)}; keeping the entries at or above it keeps exactly those at or
         * above the interpolated value.
         */
        LINEAR_CEILING
    }

    /** The backend; start from {@link #defaults()}. */
    public record Options(Backend backend) {
        /** The default backend. */
        public static Options defaults() {
            return new Options(null);
        }

        /** Runs on {@code b}; null (the default) means {@link Backends#defaultBackend()}. */
        public Options on(Backend b) {
            return new Options(b);
        }
    }

    /**
     * One selected entry.
     *
     * @param index its index in {@code [0, N)}, or -1 when nothing is masked
     * @param value its score (NaN when nothing is masked)
     * @param rank its 1-based rank in the order asked for (0 when nothing is masked)
     * @param count the masked entries {@code n}
     */
    public record Element(long index, float value, long rank, long count) {
        /** Whether an entry was selected: false when nothing is masked. */
        public boolean found() {
            return index >= 0;
        }
    }

    /** What a mask keeps. */
    enum MaskMode {
        /** entries ordered at or before the selected one, in the selection's order */
        UP_TO,
        /** entries whose ascending key is at least the selected one's (all ties kept) */
        AT_LEAST_VALUE
    }

    /**
     * One validated call as the backends see it.
     *
     * @param mask U8 [N] or null for all entries
     * @param count the masked entries
     * @param rank the 1-based rank to find, in {@code [1, count]}
     */
    record Job(Tensor scores, Tensor mask, int count, long rank, boolean largest) {
        int n() {
            return (int) scores.dim(0);
        }
    }

    private TokenSelection() {
    }

    /** The 1-based ascending rank of the q-quantile among {@code n >= 1} entries; see the class doc. */
    public static long rank(double q, long n, Rank rule) {
        Checks.require(q >= 0 && q <= 1, "q", "a quantile in [0, 1]", q);
        Checks.require(n >= 1, "n", "at least one entry", n);
        Checks.require(rule != null, "rank", "a Rank rule", "null");
        BigDecimal exact = BigDecimal.valueOf(q); // the decimal q prints as
        long r = switch (rule) {
            case NEAREST_RANK -> exact.multiply(BigDecimal.valueOf(n)).setScale(0, RoundingMode.CEILING).longValue();
            case ROUND_LINEAR -> 1 + exact.multiply(BigDecimal.valueOf(n - 1)).setScale(0, RoundingMode.HALF_EVEN)
                    .longValue();
            case LINEAR_CEILING -> 1 + exact.multiply(BigDecimal.valueOf(n - 1)).setScale(0, RoundingMode.CEILING)
                    .longValue();
        };
        return Math.max(1, Math.min(n, r));
    }

    /**
     * The masked entry of 1-based rank {@code k} in {@code order} ({@code 1 <= k <= n}; with
     * {@code n = 0} any k gives the not-found element).
     */
    public static Element kth(Tensor scores, Tensor mask, long k, Order order, Options options) {
        Checks.require(order != null, "order", "an Order", "null");
        int n = validate(scores, mask, options);
        if (n == 0) {
            return new Element(-1, Float.NaN, 0, 0);
        }
        Checks.require(k >= 1 && k <= n, "k", "a rank in [1, " + n + "] (the masked entries)", k);
        return select(new Job(scores, mask, n, k, order == Order.LARGEST), options);
    }

    /** The q-quantile of the masked scores (ascending rank {@link #rank(double, long, Rank)}). */
    public static Element quantile(Tensor scores, Tensor mask, double q, Rank rule, Options options) {
        Checks.require(q >= 0 && q <= 1, "q", "a quantile in [0, 1]", q);
        Checks.require(rule != null, "rank", "a Rank rule", "null");
        int n = validate(scores, mask, options);
        if (n == 0) {
            return new Element(-1, Float.NaN, 0, 0);
        }
        return select(new Job(scores, mask, n, rank(q, n, rule), false), options);
    }

    /**
     * U8 {@code [N]}: 1 at the {@code min(k, n)} masked entries that come first in {@code order}
     * (the k largest for LARGEST; ties at the threshold go to the lower index), 0 elsewhere.
     */
    public static Tensor keep(Tensor scores, Tensor mask, long k, Order order, Options options) {
        Checks.require(order != null, "order", "an Order", "null");
        Checks.require(k >= 0, "k", "a count >= 0", k);
        int n = validate(scores, mask, options);
        boolean largest = order == Order.LARGEST;
        if (k == 0 || n == 0) {
            return Tensor.allocate(DType.U8, scores.dim(0));
        }
        if (k >= n) {
            return TokenSelectionCpu.copyMask(scores, mask);
        }
        return mask(new Job(scores, mask, n, k, largest), MaskMode.UP_TO, options);
    }

    /** {@link #keep} with {@link Order#LARGEST}: exactly {@code min(k, n)} entries, the top k. */
    public static Tensor topK(Tensor scores, Tensor mask, long k, Options options) {
        return keep(scores, mask, k, Order.LARGEST, options);
    }

    /**
     * U8 {@code [N]}: 1 at every masked entry whose score is at or above the q-quantile of the
     * masked scores (in the total order: -0.0 is below +0.0), so all entries equal to the quantile
     * are kept and at least {@code n - rank + 1} entries are. With {@code q = 1 - rho} this is
     * "keep the top rho fraction by value" (entropy-quantile selection). Nothing is kept when
     * {@code n = 0}.
     */
    public static Tensor atLeastQuantile(Tensor scores, Tensor mask, double q, Rank rule, Options options) {
        Checks.require(q >= 0 && q <= 1, "q", "a quantile in [0, 1]", q);
        Checks.require(rule != null, "rank", "a Rank rule", "null");
        int n = validate(scores, mask, options);
        if (n == 0) {
            return Tensor.allocate(DType.U8, scores.dim(0));
        }
        return mask(new Job(scores, mask, n, rank(q, n, rule), false), MaskMode.AT_LEAST_VALUE, options);
    }

    /**
     * A copy of {@code targets} (I32 or I64 {@code [N]}) with {@code ignoreIndex} wherever
     * {@code keep} (U8 {@code [N]}) is 0: how a selection mask reaches any loss that takes targets
     * with an ignore index ({@code PolicyLoss}, {@code TargetLogProb}, {@code LogitStats}, ...),
     * e.g. {@code ignoreUnselected(targets, topK(...), LogitStats.DEFAULT_IGNORE_INDEX)}. A
     * target that is already ignored stays ignored. The caller closes the result.
     */
    public static Tensor ignoreUnselected(Tensor targets, Tensor keep, long ignoreIndex) {
        Checks.notNull("targets", targets);
        Checks.notNull("keep", keep);
        Checks.rank("targets", targets, 1, "[N]");
        Checks.dtype("targets", targets, DType.I32, DType.I64);
        Checks.rank("keep", keep, 1, "[N]");
        Checks.dtype("keep", keep, DType.U8);
        Checks.dim("keep", keep, 0, targets.dim(0), "N, the entries of targets");
        boolean wide = targets.dtype() == DType.I64;
        Checks.require(wide || (ignoreIndex >= Integer.MIN_VALUE && ignoreIndex <= Integer.MAX_VALUE), "ignoreIndex",
                "a value that fits the I32 targets", ignoreIndex);
        Tensor out = Tensor.allocate(targets.dtype(), targets.dim(0));
        java.lang.foreign.MemorySegment in = targets.segment();
        java.lang.foreign.MemorySegment k = keep.segment();
        java.lang.foreign.MemorySegment o = out.segment();
        o.copyFrom(in);
        for (long i = 0; i < targets.dim(0); i++) {
            if (k.get(java.lang.foreign.ValueLayout.JAVA_BYTE, i) == 0) {
                if (wide) {
                    o.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, i, ignoreIndex);
                } else {
                    o.setAtIndex(java.lang.foreign.ValueLayout.JAVA_INT, i, (int) ignoreIndex);
                }
            }
        }
        return out;
    }

    /**
     * A U8 {@code [N]} mask, 1 where {@code targets} (I32 or I64 {@code [N]}) is not {@code ignoreIndex}:
     * the inverse bridge of {@link #ignoreUnselected}, from a loss's targets to the masks the
     * selection and normalization ops take. The caller closes the result.
     */
    public static Tensor countedMask(Tensor targets, long ignoreIndex) {
        Checks.notNull("targets", targets);
        Checks.rank("targets", targets, 1, "[N]");
        Checks.dtype("targets", targets, DType.I32, DType.I64);
        long n = targets.dim(0);
        Tensor mask = Tensor.allocate(DType.U8, n);
        java.lang.foreign.MemorySegment m = mask.segment();
        for (long i = 0; i < n; i++) {
            m.set(java.lang.foreign.ValueLayout.JAVA_BYTE, i, (byte) (targets.getLong(i) != ignoreIndex ? 1 : 0));
        }
        return mask;
    }

    /** The masked count, after checking shapes, dtypes and that no masked score is NaN. */
    static int validate(Tensor scores, Tensor mask, Options options) {
        Checks.notNull("scores", scores);
        if (options == null) {
            throw new IllegalArgumentException("options: expected Options (e.g. Options.defaults()), got null");
        }
        Checks.rank("scores", scores, 1, "[N]");
        Checks.dtype("scores", scores, DType.F32);
        Checks.require(scores.dim(0) <= Integer.MAX_VALUE - 64, "scores", "N < 2^31 - 64 entries", scores.dim(0));
        if (mask != null) {
            Checks.rank("mask", mask, 1, "[N]");
            Checks.dtype("mask", mask, DType.U8);
            Checks.dim("mask", mask, 0, scores.dim(0), "N, the entries of scores");
            mask.segment(); // closed tensors fail here, before any work
        }
        scores.segment();
        long[] countAndNan = TokenSelectionCpu.countAndFirstNan(scores, mask);
        if (countAndNan[1] >= 0) {
            throw new IllegalArgumentException("scores[" + countAndNan[1] + "]: expected a number at a masked entry"
                    + " (NaN has no rank), got NaN");
        }
        return (int) countAndNan[0];
    }

    private static Element select(Job job, Options options) {
        long index = run(job, null, null, options);
        return new Element(index, job.scores().getFloat(index), job.rank(), job.count());
    }

    private static Tensor mask(Job job, MaskMode mode, Options options) {
        Tensor out = Tensor.allocate(DType.U8, job.scores().dim(0));
        try {
            run(job, mode, out, options);
            return out;
        } catch (RuntimeException | Error e) {
            out.close();
            throw e;
        }
    }

    /** Finds the entry of the job's rank (and writes the mask {@code mode} into {@code out} when given); its index. */
    private static long run(Job job, MaskMode mode, Tensor out, Options options) {
        Backend backend = Backends.select(options.backend());
        if (backend instanceof CpuBackend cpu) {
            return TokenSelectionCpu.run(cpu, job, mode, out);
        } else if (backend instanceof KernelBackend gpu) {
            return TokenSelectionKernel.run(gpu, job, mode, out);
        }
        throw new TokenKernelsException("token selection cannot run on backend '" + backend.name()
                + "': it is neither the cpu backend nor a kernel backend");
    }
}
