package dev.tokenkernels.ops.loss;

import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Backends;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.Tensor;
import dev.tokenkernels.runtime.TokenKernelsException;

/**
 * Draws {@code K} tokens per row from {@code softmax(z / T)}, reproducibly and <em>identically on
 * every backend</em>, with their log-probabilities: the on-policy sampling of token-level RL losses
 * such as one-token rollout ({@link OneTokenRollout}).
 *
 * <p><b>Method: an exponential race with counter-based noise.</b> With {@code m} the row's largest
 * {@code x = z * (1/T)}, sample {@code k} of row {@code i} is
 * <pre>  a_{i,k} = argmin_v ( E_{i,k,v} * r_v ),   E = -log u_{i,k,v},   r_v = 1 / e^(x_v - m)</pre>
 * ties broken by the lowest index: the first arrival among independent exponential clocks of rates
 * {@code e^(x_v - m)}, which is class {@code v} with probability {@code softmax(x)_v}. It is the
 * Gumbel-max trick ({@code argmax_v x_v - log E_v}; Gumbel, 1954; Maddison, Tarlow and Minka,
 * "A* sampling", 2014) with the decreasing map {@code exp(m - .)} applied to the scores, so in exact
 * arithmetic it picks the same entry from the same uniforms, but it needs one log per draw instead
 * of two, and one exponential and one division per vocabulary entry, shared by the group's
 * samples. (This is a change of the sampler's definition: until it, the sampler took the fp32
 * argmax of {@code x_v - log E_v}. The two roundings differ, so where two entries' scores are
 * within fp32 rounding of each other a seed may now draw the other one; elsewhere the draws are
 * unchanged, and the distribution is the same.) The uniforms come from Philox4x32-10 (Salmon et al., SC 2011;
 * {@link dev.tokenkernels.ops.cpu.Philox}) keyed by the 64-bit {@code seed}, with the counter
 * {@code (v, k / 4, p mod 2^32, p / 2^32)} for position {@code p = firstPosition + i}; word
 * {@code k mod 4} of the output gives {@code u_{i,k,v} = (2 m + 1) 2^-24} with {@code m} its top 23
 * bits. So a row's draws depend only on the seed, its position, the sample number and its logits:
 * splitting a batch into chunks (each with its {@code firstPosition}) or asking for more samples
 * leaves the earlier samples unchanged.
 *
 * <p><b>Why not inverse-CDF sampling.</b> It compares {@code u} with prefix sums of the
 * probabilities, whose last bits depend on the summation order (SIMD lanes on the CPU, a block
 * scan on a GPU); a draw near a boundary would then differ between backends. The race needs no
 * sum: every backend computes {@code x_v} (one fp32 product), {@code d = x_v - m}, the weight
 * {@code e^d} (the polynomial {@code VectorMath.expNonPositive} in Java, its twin
 * {@code tk::twin_exp_nonpositive}), {@code r = 1 / e^d}, {@code E = -log u} ({@code VectorMath.log},
 * twin {@code tk::twin_log}) and the score {@code E * r} by the same sequence of correctly rounded
 * IEEE operations (the twins in {@code kernels/include/vector_math.cuh} are written with explicit
 * {@code __fmaf_rn}/{@code __fmul_rn}/{@code __fdiv_rn} so that NVRTC's fma contraction cannot change
 * a bit; Java's lane-wise fma is exactly rounded too), and the argmin with lowest-index ties is a
 * total order, so the order in which lanes, threads or warps combine does not matter. The samples
 * are therefore bit-identical on {@code cpu} (any thread count), {@code cuda-emu} and {@code cuda};
 * the log-probabilities (which use the library {@code exp} of each backend) agree to fp32 rounding
 * only. Exponential races in integer arithmetic would also be exact, but need a fixed-point
 * exponent of the logits; the float route keeps the logits as they are.
 *
 * <p><b>Cost.</b> Up to {@code V * ceil(K / 4)} Philox calls, {@code K V} logs and
 * {@code V * ceil(K / 4)} exponentials and divisions per row: one Philox call gives the uniforms of
 * four samples, computed a vector of lanes at a time (8 on AVX2, 16 on AVX-512). Two things keep it
 * down: every exponential is at least 5.9e-8, so an entry whose {@code 5.9e-8 * r_v} exceeds the
 * largest score the row's largest entry reaches over a group of four samples cannot win or tie; every
 * backend draws noise only for the other entries (a cut on {@code x_v - m} near
 * {@code -log(T / 5.9e-8)}, with a margin that covers the roundings: on rows shaped like a trained
 * model's, most of the vocabulary is further down and costs one comparison; on flat rows nothing is
 * saved; no draw changes), and the row is read from memory once (a first sweep takes its
 * log-sum-exp and largest entry; each group of four samples sweeps it again from cache).
 *
 * <p><b>Precision.</b> The uniforms take 2^23 values in {@code [2^-24, 1 - 2^-24]}, so {@code E}
 * lies in about {@code [5.96e-8, 16.64]}: an entry more than {@code log(16.64 / 5.96e-8) = 19.45}
 * below the row's largest {@code x} is never drawn (its probability is below
 * {@code e^-19.45 = 3.6e-9}; all such entries together below {@code V e^-19.45}, 4.6e-4 at
 * V = 128256 in the worst case), the same limit as the earlier Gumbel-max scores had, and within
 * that range the noise is quantized at 23 bits. This is the precision of the usual fp32 samplers
 * that draw {@code -log u} from a 24-bit uniform. {@code e^d} never underflows for an entry that can
 * win ({@code d >= -19.5 > -86}), and no score overflows ({@code E * r < 16.7 e^19.5}).
 *
 * <p>Special rows (a NaN or {@code +inf} in {@code x}, or all {@code -inf}) have no distribution:
 * their samples are -1 and their log-probabilities NaN. An entry with {@code x = -inf} is never
 * drawn.
 */
public final class TokenSampler {
    /** The most samples per row one call draws. */
    public static final int MAX_SAMPLES = 64;

    /**
     * Options of one call; start from {@link #defaults()}.
     *
     * @param samples {@code K}, 1 to {@link #MAX_SAMPLES}
     * @param seed the Philox key: change it for every training step to draw fresh samples
     * @param firstPosition the position of row 0 in the counter (rows are consecutive positions)
     */
    public record Options(int samples, float temperature, long seed, long firstPosition, Backend backend) {
        /** One sample at temperature 1, seed 0, positions from 0. */
        public static Options defaults() {
            return new Options(1, 1f, 0L, 0L, null);
        }

        /** Samples per row {@code K}, 1 to {@link #MAX_SAMPLES} (default 1). */
        public Options withSamples(int k) {
            return new Options(k, temperature, seed, firstPosition, backend);
        }

        /** Softmax temperature {@code T} of the draws (default 1): see {@link Checks#temperature}. */
        public Options withTemperature(float t) {
            return new Options(samples, t, seed, firstPosition, backend);
        }

        /** Philox key of the draws (default 0); change it for every training step to draw fresh samples. */
        public Options withSeed(long s) {
            return new Options(samples, temperature, s, firstPosition, backend);
        }

        /** Position of row 0 in the counter (default 0); rows are consecutive positions. */
        public Options withFirstPosition(long p) {
            return new Options(samples, temperature, seed, p, backend);
        }

        /** Runs on {@code b}; null (the default) means {@link Backends#defaultBackend()}. */
        public Options on(Backend b) {
            return new Options(samples, temperature, seed, firstPosition, b);
        }
    }

    /** The samples (I32 {@code [N, K]}) and their log-probabilities under {@code softmax(z / T)} (F32 {@code [N, K]}). */
    public record Result(Tensor samples, Tensor logProb) implements AutoCloseable {
        @Override
        public void close() {
            samples.close();
            logProb.close();
        }
    }

    /**
     * One validated call as the backends see it: the Philox key, the first position, and per row
     * {@code K} samples and log-probabilities to fill (row-major {@code [N, K]}).
     *
     * @param rowsToSample per row whether it is drawn (null: all); others get -1 and log-probability 0
     */
    record Draw(Tensor logits, int samples, float invT, int key0, int key1, long firstPosition,
                boolean[] rowsToSample, int[] sample, float[] logProb) {
        int rows() {
            return (int) logits.dim(0);
        }

        int vocab() {
            return (int) logits.dim(1);
        }

        boolean drawn(int row) {
            return rowsToSample == null || rowsToSample[row];
        }
    }

    private TokenSampler() {
    }

    /** {@code K} samples per row of {@code logits [N, V]} (F32, F16 or BF16) and their log-probabilities. */
    public static Result sample(Tensor logits, Options options) {
        Checks.notNull("logits", logits);
        if (options == null) {
            throw new IllegalArgumentException("options: expected Options (e.g. Options.defaults()), got null");
        }
        int rows = checkLogits(logits);
        checkSampling(options.samples(), options.temperature());
        logits.segment(); // closed tensors fail here, before any work
        Draw draw = draw(logits, options.samples(), options.temperature(), options.seed(), options.firstPosition(),
                null);
        Backend backend = Backends.select(options.backend());
        if (backend instanceof CpuBackend cpu) {
            TokenSamplerCpu.run(cpu, draw);
        } else if (backend instanceof KernelBackend gpu) {
            TokenSamplerKernel.run(gpu, draw);
        } else {
            throw new TokenKernelsException("the token sampler cannot run on backend '" + backend.name()
                    + "': it is neither the cpu backend nor a kernel backend");
        }
        int k = options.samples();
        return new Result(Tensor.ofInts(draw.sample(), rows, k), Tensor.of(draw.logProb(), rows, k));
    }

    /** Validates {@code [N, V]} logits and returns N. */
    static int checkLogits(Tensor logits) {
        Checks.rank("logits", logits, 2, "[N, V]");
        Checks.dtype("logits", logits, DType.F32, DType.F16, DType.BF16);
        long rows = logits.dim(0);
        long vocab = logits.dim(1);
        Checks.require(rows <= Integer.MAX_VALUE, "logits", "N < 2^31 rows", rows);
        Checks.require(vocab >= 1 && vocab <= Integer.MAX_VALUE, "logits", "1 <= V < 2^31 columns", vocab);
        return (int) rows;
    }

    static void checkSampling(int samples, float temperature) {
        Checks.require(samples >= 1 && samples <= MAX_SAMPLES, "samples", "K in [1, " + MAX_SAMPLES + "]", samples);
        Checks.temperature("temperature", temperature);
    }

    static Draw draw(Tensor logits, int samples, float temperature, long seed, long firstPosition,
                     boolean[] rowsToSample) {
        int rows = (int) logits.dim(0);
        Checks.require((long) rows * samples <= Integer.MAX_VALUE, "samples", "N * K < 2^31 draws",
                (long) rows * samples);
        return new Draw(logits, samples, 1f / temperature, (int) seed, (int) (seed >>> 32), firstPosition, rowsToSample,
                new int[rows * samples], new float[rows * samples]);
    }
}
