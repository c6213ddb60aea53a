package dev.tokenkernels.ops.select;

import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Backends;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.Tensor;
import dev.tokenkernels.runtime.TokenKernelsException;

/**
 * HAPO's normalized token entropy {@code h_hat in [-1, 1]}, the control signal of its adaptive
 * temperature, clipping and advantage redistribution (Liu et al., 2025, "From Uniform to
 * Heterogeneous: Tailoring Policy Optimization to Every Token's Nature", arXiv:2509.16591).
 *
 * <p>Over the masked tokens {@code M} ({@code n = |M|}) of per-token entropies {@code H [N]}:
 * <pre>
 *   e_t   = ln(max(H_t, 1e-8))
 *   pivot = e_p, p = the q-quantile of H over M (q = 0.8, {@link TokenSelection}; ln is monotone,
 *           so e_p is the q-quantile of e)
 *   s     = sqrt(max(mean_M (e_t - pivot)^2, 1e-8)),   h_t = (e_t - pivot) / s
 *   P     = max(1e-8, max_M h_t),   Q = max(1e-8, -min_M h_t)
 *   h_hat = h_t / P for h_t > 0,   h_t / Q for h_t &lt;= 0        (so h_hat in [-1, 1])
 * </pre>
 * Tokens outside the mask get {@code h_hat = 0} (neutral). Degenerate cases give no NaN: no
 * masked token gives all zeros (pivot 0, s = 1e-4); all equal {@code e} give {@code h = 0}
 * everywhere (the variance floor keeps {@code s = 1e-4}); no positive (negative) {@code h} leaves
 * {@code P} ({@code Q}) at its floor, unused. The floors are the released code's.
 *
 * <p>{@link Options#releasedCodeSigns()}: the authors' released code (github.com/starriver030515/HAPO,
 * {@code compute_entropy_h}) divides {@code h <= 0} by {@code min h} itself, a negative number,
 * so there {@code h_hat = |h| / Q >= 0}: below-pivot tokens get a positive {@code h_hat} like
 * above-pivot ones, where the paper's formula gives a negative one. The flag reproduces that
 * (all of {@code h_hat} in {@code [0, 1]}); off (default), the paper's signs. The pivot's rank is
 * 'nearest' as the released code's {@code torch.quantile} takes it,
 * {@link TokenSelection.Rank#ROUND_LINEAR} ({@code 1 + rint(q (n - 1))}; of {1, 2, 3, 4} at q = 0.8
 * the third), by default; {@link Options#withRank} selects {@link TokenSelection.Rank#NEAREST_RANK}
 * ({@code ceil(q n)}, there the fourth: the largest, which leaves no token above the pivot).
 *
 * <p>Input validation: masked entropies must be finite (negative values are clamped by the
 * {@code 1e-8} floor). Exactness: the pivot token is the same on every backend (an exact
 * selection). {@code e_t - pivot} is not a difference of two logs: with {@code f} the floored
 * entropies it is {@code ln(w) u / (w - 1)}, {@code w = f_t / f_p}, {@code u = (f_t - f_p) / f_p},
 * accurate to a few ulps of itself wherever {@code w} is a normal float (so entropies that cluster
 * within a few ulps keep their order and spacing, where a difference of two logs rounded at
 * {@code |e|} turned them into noise), and {@code ln f_t - pivot} where the ratio leaves the float
 * range ({@code |e_t - pivot| > 87}). Each backend takes its own {@code log} (Vector API on the CPU,
 * {@code logf} in CUDA), so {@code h_hat} agrees across backends to about 1e-6 relative, with the
 * same sign on every backend; tokens whose floored entropy equals the pivot's
 * get exactly 0 on each. Cost: the selection, then two passes over
 * {@code [N]} (the sum of squares and extremes per block, the output), {@code kernels/select/entropy_normalization.cu}.
 */
public final class EntropyNormalization {
    /** Floor of the entropy before its log: {@code e_t = ln(max(H_t, 1e-8))}. */
    public static final float ENTROPY_FLOOR = 1e-8f;
    /** Floor of the variance: {@code s = sqrt(max(mean_M (e_t - pivot)^2, 1e-8))}. */
    public static final double VARIANCE_FLOOR = 1e-8;
    /** Floor of the scales {@code P} and {@code Q}. */
    public static final float SCALE_FLOOR = 1e-8f;

    /**
     * Options of one call; start from {@link #defaults()}.
     *
     * @param pivotQuantile q of the pivot, in [0, 1] (0.8 in the paper)
     * @param rank how q becomes a rank
     * @param releasedCodeSigns reproduce the released code's non-negative {@code h_hat} for {@code h <= 0}
     */
    public record Options(double pivotQuantile, TokenSelection.Rank rank, boolean releasedCodeSigns, Backend backend) {
        /** Pivot quantile 0.8, {@link TokenSelection.Rank#ROUND_LINEAR}, the paper's signs, the default backend. */
        public static Options defaults() {
            return new Options(0.8, TokenSelection.Rank.ROUND_LINEAR, false, null);
        }

        /** Quantile {@code q} of the pivot, in [0, 1] (default 0.8). */
        public Options withPivotQuantile(double q) {
            return new Options(q, rank, releasedCodeSigns, backend);
        }

        /** How {@code q} becomes a rank (default {@link TokenSelection.Rank#ROUND_LINEAR}, as the released code). */
        public Options withRank(TokenSelection.Rank r) {
            return new Options(pivotQuantile, r, releasedCodeSigns, backend);
        }

        /** Whether to reproduce the released code's non-negative {@code h_hat} for {@code h <= 0} (default false). */
        public Options withReleasedCodeSigns(boolean released) {
            return new Options(pivotQuantile, rank, released, backend);
        }

        /** Runs on {@code b}; null (the default) means {@link Backends#defaultBackend()}. */
        public Options on(Backend b) {
            return new Options(pivotQuantile, rank, releasedCodeSigns, b);
        }
    }

    /**
     * {@code h_hat} (F32 [N]) and the statistics: the pivot's token index (-1 without masked
     * tokens), its floored entropy {@code f_p = max(H_p, 1e-8)} and {@code e_p = ln f_p}, {@code s},
     * {@code P}, {@code Q} and {@code n}. Closing closes {@code h_hat}; the statistics stay usable by
     * {@link #apply}.
     */
    public record Result(Tensor normalized, long pivotIndex, float pivotEntropy, float pivot, float std,
                         float positiveMax, float negativeMax, long count) implements AutoCloseable {
        @Override
        public void close() {
            normalized.close();
        }
    }

    /** One validated call as the backends see it. */
    record Job(Tensor entropy, Tensor mask, float pivotEntropy, float pivot, boolean releasedSigns, Tensor out) {
        int n() {
            return (int) entropy.dim(0);
        }
    }

    /** The pass-one statistics of the masked tokens: {@code sum (e - pivot)^2}, max and min of {@code e - pivot}. */
    record Stats(double sumSquares, float max, float min) {
    }

    private EntropyNormalization() {
    }

    /**
     * {@code h_hat} of {@code entropy} (F32 {@code [N]}) over the tokens where {@code mask} (U8 {@code [N]}) is
     * non-zero, or over all tokens when it is null.
     */
    public static Result compute(Tensor entropy, Tensor mask, Options options) {
        int n = TokenVectors.vector("entropy", entropy, null, null);
        TokenVectors.mask(mask, n, "entropy");
        TokenVectors.options(options);
        Checks.require(options.pivotQuantile() >= 0 && options.pivotQuantile() <= 1, "pivotQuantile",
                "a quantile in [0, 1]", options.pivotQuantile());
        Checks.require(options.rank() != null, "rank", "a Rank rule", "null");
        int count = TokenVectors.finite("entropy", entropy, mask, "a finite entropy at a masked token");
        Tensor out = Tensor.allocate(DType.F32, n);
        if (count == 0) {
            return new Result(out, -1, 1f, 0f, (float) Math.sqrt(VARIANCE_FLOOR), SCALE_FLOOR, SCALE_FLOOR, 0);
        }
        try {
            TokenSelection.Element pivot = TokenSelection.quantile(entropy, mask, options.pivotQuantile(),
                    options.rank(), TokenSelection.Options.defaults().on(options.backend()));
            float pivotEntropy = Math.max(entropy.getFloat(pivot.index()), ENTROPY_FLOOR);
            // in float64, rounded once, the same on every backend and JIT tier
            float e = (float) StrictMath.log(pivotEntropy);
            Job job = new Job(entropy, mask, pivotEntropy, e, options.releasedCodeSigns(), out);
            Backend backend = backend(options);
            Stats stats = backend instanceof CpuBackend cpu ? EntropyNormalizationCpu.stats(cpu, job)
                    : EntropyNormalizationKernel.stats((KernelBackend) backend, job);
            float s = (float) Math.sqrt(Math.max(stats.sumSquares() / count, VARIANCE_FLOOR));
            // fl(d / s) is monotone in d, so these are the max and min of the h the second pass computes.
            float p = Math.max(SCALE_FLOOR, stats.max() / s);
            float q = Math.max(SCALE_FLOOR, -(stats.min() / s));
            normalize(backend, job, s, p, q);
            return new Result(out, pivot.index(), pivotEntropy, e, s, p, q, count);
        } catch (RuntimeException | Error e) {
            out.close();
            throw e;
        }
    }

    /**
     * {@code h_hat} (F32 [N]) of new tokens' {@code entropy} under an earlier batch's statistics
     * ({@code f_p}, {@code e_p}, {@code s}, {@code P}, {@code Q} of {@code statistics}, which may be
     * closed), 0 outside {@code mask}: how HAPO's released sampler gives each token of a rollout its
     * temperature from the last training batch, where normalizing over one decoding step's few
     * tokens would not. Values may leave {@code [-1, 1]} ({@link TokenTerms#adaptiveTemperature}
     * clamps them); statistics of a batch without masked tokens give 0 everywhere. Applied to the
     * batch that made them, it gives that batch's {@code h_hat} bit for bit. The signs follow
     * {@code options}' {@link Options#releasedCodeSigns()}; its quantile and rank are not used.
     */
    public static Tensor apply(Tensor entropy, Tensor mask, Result statistics, Options options) {
        int n = TokenVectors.vector("entropy", entropy, null, null);
        TokenVectors.mask(mask, n, "entropy");
        TokenVectors.options(options);
        Checks.require(statistics != null, "statistics", "an EntropyNormalization.Result", "null");
        Checks.require(Float.isFinite(statistics.pivotEntropy()) && statistics.pivotEntropy() >= ENTROPY_FLOOR,
                "statistics.pivotEntropy", "a finite value >= 1e-8", statistics.pivotEntropy());
        float lnPivot = (float) StrictMath.log(statistics.pivotEntropy());
        Checks.require(statistics.pivot() == lnPivot, "statistics.pivot",
                "ln(pivotEntropy) = " + lnPivot + ", as compute gives it", statistics.pivot());
        // compute's floors: s >= 1e-4, P and Q >= 1e-8, so that h_hat stays finite
        float stdFloor = (float) Math.sqrt(VARIANCE_FLOOR);
        Checks.require(Float.isFinite(statistics.std()) && statistics.std() >= stdFloor, "statistics.std",
                "a finite value >= " + stdFloor, statistics.std());
        Checks.require(Float.isFinite(statistics.positiveMax()) && statistics.positiveMax() >= SCALE_FLOOR,
                "statistics.positiveMax", "a finite value >= 1e-8", statistics.positiveMax());
        Checks.require(Float.isFinite(statistics.negativeMax()) && statistics.negativeMax() >= SCALE_FLOOR,
                "statistics.negativeMax", "a finite value >= 1e-8", statistics.negativeMax());
        TokenVectors.finite("entropy", entropy, mask, "a finite entropy at a masked token");
        Tensor out = Tensor.allocate(DType.F32, n);
        if (statistics.count() == 0) {
            return out; // no statistics: every token neutral
        }
        try {
            Job job = new Job(entropy, mask, statistics.pivotEntropy(), statistics.pivot(), options.releasedCodeSigns(),
                    out);
            Backend backend = backend(options);
            if (backend instanceof CpuBackend cpu) {
                EntropyNormalizationCpu.stats(cpu, job); // leaves e - pivot in out for normalize
            }
            normalize(backend, job, statistics.std(), statistics.positiveMax(), statistics.negativeMax());
            return out;
        } catch (RuntimeException | Error e) {
            out.close();
            throw e;
        }
    }

    private static Backend backend(Options options) {
        Backend backend = Backends.select(options.backend());
        if (!(backend instanceof CpuBackend) && !(backend instanceof KernelBackend)) {
            throw new TokenKernelsException("entropy normalization cannot run on backend '" + backend.name()
                    + "': it is neither the cpu backend nor a kernel backend");
        }
        return backend;
    }

    private static void normalize(Backend backend, Job job, float s, float p, float q) {
        if (backend instanceof CpuBackend cpu) {
            EntropyNormalizationCpu.normalize(cpu, job, s, p, q);
        } else {
            EntropyNormalizationKernel.normalize((KernelBackend) backend, job, s, p, q);
        }
    }
}
