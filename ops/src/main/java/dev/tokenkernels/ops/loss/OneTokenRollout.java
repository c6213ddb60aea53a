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
 * One-token rollout (OTR; "One-Token Rollout: Guiding Supervised Fine-Tuning of LLMs with Policy
 * Gradient", arXiv:2509.26313, 2025): supervised fine-tuning recast as a one-step
 * policy gradient at every token. At each position of an SFT sequence the policy draws {@code K}
 * tokens, the ground-truth token rewards the draws that hit it, and REINFORCE turns the rewards
 * into a gradient, so the update comes from on-policy samples rather than from the fixed data
 * alone.
 *
 * <p>Per token {@code t} with logits {@code z_t [V]}, ground truth {@code y_t},
 * {@code pi = softmax(z_t / T)} and samples {@code a_{t,1..K}} drawn from {@code pi} by
 * {@link TokenSampler} (same seed, positions and method, so the same draws):
 * <pre>
 *   r_k = 1 if a_k == y_t, else -beta
 *   l_t = -(1/K) sum_k r_k log pi(a_k)
 *   d l_t / d z_t = -(1/K) sum_k r_k (onehot(a_k) - pi) / T
 * </pre>
 * The samples are constants of the gradient (the score-function estimator). Tokens whose target
 * is the ignore index do not count (nothing drawn, zero gradient); the loss is the token mean
 * {@code sum_t l_t / n} over the {@code n} counted tokens (or {@code / normalizer} when given), and
 * the gradient {@code gradScale} times its derivative. Rows whose logits hold NaN or {@code +inf},
 * or a finite logit whose {@code z / T} overflows fp32, or are all {@code -inf}, have NaN loss and
 * gradient and samples -1.
 *
 * <p>Defaults (this project's choice; the paper's exact settings are not given here): {@code K = 4}
 * (one Philox call per vocabulary entry gives all four draws), {@code beta = 0.1} (a missed draw
 * costs a tenth of a hit's reward: the update stays led by the ground truth while still pushing
 * probability away from sampled mistakes), {@code T = 1}
 * (on-policy: the samples and the log-probabilities come from the policy itself). Change the seed
 * every step to draw fresh samples.
 *
 * <p>One fused pass per row ({@code kernels/loss/one_token_rollout.cu}, {@code OneTokenRolloutCpu}):
 * a sweep for the log-sum-exp and the largest entry, one sweep from cache per group of four draws
 * (noise only for the entries that can win, as in {@link TokenSampler}), then the gradient
 * {@code (gradScale w_t / (T K)) ((sum_k r_k) pi - sum_{k: a_k = v} r_k)} from cache (L2 on a GPU).
 * The row is read from memory once and the gradient written once.
 */
public final class OneTokenRollout {

    /**
     * Options of one call; start from {@link #defaults()}.
     *
     * @param samples {@code K}, 1 to {@link TokenSampler#MAX_SAMPLES}
     * @param beta the penalty of a draw that misses the ground truth (reward {@code -beta}), finite
     * @param seed the Philox key of the draws
     * @param firstPosition the position of row 0 in the draws' counter
     * @param normalizer the token mean's denominator, 0 for the number of counted tokens
     */
    public record Options(int samples, float beta, float temperature, long seed, long firstPosition, long normalizer,
                          long ignoreIndex, Backend backend) {

        /** K = 4, beta = 0.1, T = 1, seed 0, positions from 0, mean over counted tokens, ignore index -100. */
        public static Options defaults() {
            return new Options(4, 0.1f, 1f, 0L, 0L, 0L, LogitStats.DEFAULT_IGNORE_INDEX, null);
        }

        /** Draws per token {@code K}, 1 to {@link TokenSampler#MAX_SAMPLES} (default 4). */
        public Options withSamples(int k) {
            return new Options(k, beta, temperature, seed, firstPosition, normalizer, ignoreIndex, backend);
        }

        /** Penalty {@code beta} of a draw that misses the ground truth, finite (default 0.1). */
        public Options withBeta(float b) {
            return new Options(samples, b, temperature, seed, firstPosition, normalizer, ignoreIndex, backend);
        }

        /**
         * Softmax temperature {@code T} of the draws and log-probabilities (default 1): see {@link Checks#temperature}.
         */
        public Options withTemperature(float t) {
            return new Options(samples, beta, t, seed, firstPosition, normalizer, ignoreIndex, backend);
        }

        /** Philox key of the draws (default 0); change it every step to draw fresh samples. */
        public Options withSeed(long s) {
            return new Options(samples, beta, temperature, s, firstPosition, normalizer, ignoreIndex, backend);
        }

        /** Position of row 0 in the draws' counter (default 0), as in {@link TokenSampler.Options#firstPosition()}. */
        public Options withFirstPosition(long p) {
            return new Options(samples, beta, temperature, seed, p, normalizer, ignoreIndex, backend);
        }

        /** Divide the token sum by {@code n} (e.g. the tokens of the whole global batch); 0 for the counted tokens. */
        public Options withNormalizer(long n) {
            return new Options(samples, beta, temperature, seed, firstPosition, n, ignoreIndex, backend);
        }

        /** Target value of the tokens that do not count (default {@link LogitStats#DEFAULT_IGNORE_INDEX}). */
        public Options withIgnoreIndex(long index) {
            return new Options(samples, beta, temperature, seed, firstPosition, normalizer, index, backend);
        }

        /** Runs on {@code b}; null (the default) means {@link Backends#defaultBackend()}. */
        public Options on(Backend b) {
            return new Options(samples, beta, temperature, seed, firstPosition, normalizer, ignoreIndex, b);
        }
    }

    /**
     * The loss, the gradient ({@code [N, V]}, null when not asked for), the draws (I32
     * {@code [N, K]}, -1 for tokens that do not count or have no distribution), their
     * log-probabilities (F32 {@code [N, K]}, 0 for tokens that do not count), per token loss (F32
     * {@code [N]}, 0 for tokens that do not count), the counted tokens and the fraction of their
     * draws that hit the ground truth. Closing closes what the call allocated.
     */
    public static final class Result implements AutoCloseable {
        private final float loss;
        private final Tensor gradient;
        private final boolean ownsGradient;
        private final Tensor samples;
        private final Tensor sampleLogProb;
        private final Tensor tokenLoss;
        private final long tokens;
        private final double hitRate;

        Result(float loss, Tensor gradient, boolean ownsGradient, Tensor samples, Tensor sampleLogProb, Tensor tokenLoss,
               long tokens, double hitRate) {
            this.loss = loss;
            this.gradient = gradient;
            this.ownsGradient = ownsGradient;
            this.samples = samples;
            this.sampleLogProb = sampleLogProb;
            this.tokenLoss = tokenLoss;
            this.tokens = tokens;
            this.hitRate = hitRate;
        }

        /**
         * The loss: the sum of {@link #tokenLoss()} over the counted tokens divided by their number, or by the
         * normalizer when given.
         */
        public float loss() {
            return loss;
        }

        /** {@code gradScale} times the gradient w.r.t. the logits, {@code [N, V]}, or null when not asked for. */
        public Tensor gradient() {
            return gradient;
        }

        /** The draws, I32 {@code [N, K]}; -1 for tokens that do not count or have no distribution. */
        public Tensor samples() {
            return samples;
        }

        /** Log-probabilities of the draws, F32 {@code [N, K]}; 0 for tokens that do not count. */
        public Tensor sampleLogProb() {
            return sampleLogProb;
        }

        /** Per token loss {@code l_t}, F32 {@code [N]}; 0 for tokens that do not count. */
        public Tensor tokenLoss() {
            return tokenLoss;
        }

        /** Number of counted tokens. */
        public long tokens() {
            return tokens;
        }

        /** Fraction of the counted tokens' draws that hit the ground truth. */
        public double hitRate() {
            return hitRate;
        }

        @Override
        public void close() {
            samples.close();
            sampleLogProb.close();
            tokenLoss.close();
            if (ownsGradient && gradient != null) {
                gradient.close();
            }
        }
    }

    /**
     * One validated call as the backends see it: the draws (with the rows to draw), per row the
     * ground truth (-1 when it does not count) and the gradient's factor
     * {@code gradScale * w_t / (T K)}.
     */
    record RolloutRows(TokenSampler.Draw draw, int[] targets, float beta, float[] coefficient, Tensor gradient) {
        int rows() {
            return draw.rows();
        }

        int vocab() {
            return draw.vocab();
        }
    }

    private OneTokenRollout() {
    }

    /** The loss and the draws only. */
    public static Result compute(Tensor logits, Tensor targets, Options options) {
        return run(logits, targets, options, 0f, null, false);
    }

    /** With {@code gradScale} times the gradient w.r.t. the logits, in a new F32 tensor. */
    public static Result computeWithGradient(Tensor logits, Tensor targets, Options options, float gradScale) {
        return run(logits, targets, options, gradScale, null, true);
    }

    /**
     * With {@code gradScale} times the gradient written into {@code gradient} ({@code [N, V]}, not
     * the logits; F32, F16 or BF16: each value formed in fp32 and rounded once, to nearest even).
     */
    public static Result computeWithGradient(Tensor logits, Tensor targets, Options options, float gradScale,
                                             Tensor gradient) {
        Checks.notNull("gradient", gradient);
        return run(logits, targets, options, gradScale, gradient, true);
    }

    private static Result run(Tensor logits, Tensor targets, Options o, float gradScale, Tensor gradientOut,
                              boolean withGradient) {
        Checks.notNull("logits", logits);
        Checks.notNull("targets", targets);
        if (o == null) {
            throw new IllegalArgumentException("options: expected Options (e.g. Options.defaults()), got null");
        }
        int rows = TokenSampler.checkLogits(logits);
        long vocab = logits.dim(1);
        TokenSampler.checkSampling(o.samples(), o.temperature());
        Checks.require(Float.isFinite(o.beta()), "beta", "a finite penalty", o.beta());
        Checks.require(o.normalizer() >= 0, "normalizer", "a count >= 0 (0 for the counted tokens)", o.normalizer());
        Checks.require(Float.isFinite(gradScale), "gradScale", "a finite number", gradScale);
        if (withGradient && gradientOut != null) {
            Checks.apart("gradient", gradientOut, "logits", logits, false);
            Checks.rank("gradient", gradientOut, 2, "[N, V]");
            Checks.dtype("gradient", gradientOut, DType.F32, DType.F16, DType.BF16);
            Checks.dim("gradient", gradientOut, 0, rows, "N, the rows of logits");
            Checks.dim("gradient", gradientOut, 1, vocab, "V, the columns of logits");
        }
        float[] weights = Divergence.rowWeights(null, targets, o.ignoreIndex(), rows, vocab, "logits");
        int[] target = new int[rows];
        boolean[] counted = new boolean[rows];
        long count = 0;
        for (int t = 0; t < rows; t++) {
            counted[t] = weights[t] != 0f;
            target[t] = counted[t] ? (int) targets.getLong(t) : -1;
            count += counted[t] ? 1 : 0;
        }
        int k = o.samples();
        double weight = 1.0 / (o.normalizer() > 0 ? o.normalizer() : Math.max(count, 1));
        float[] coefficient = new float[rows];
        // d loss / d z carries 1/T: a tiny T with a large gradScale would overflow it to inf.
        float perToken = (float) (gradScale * weight / (o.temperature() * (double) k));
        Checks.require(!withGradient || Float.isFinite(perToken), "gradScale",
                "a value for which gradScale / (T k n) is a finite float (T = " + o.temperature() + ", k = " + k + ")",
                gradScale);
        for (int t = 0; t < rows; t++) {
            coefficient[t] = counted[t] ? perToken : 0f;
        }
        logits.segment(); // closed tensors fail here, before any work
        if (gradientOut != null) {
            gradientOut.segment();
        }
        TokenSampler.Draw draw = TokenSampler.draw(logits, k, o.temperature(), o.seed(), o.firstPosition(), counted);
        Tensor gradient = withGradient ? (gradientOut != null ? gradientOut : Tensor.allocate(DType.F32, rows, vocab))
                : null;
        boolean owns = withGradient && gradientOut == null;
        try {
            RolloutRows job = new RolloutRows(draw, target, o.beta(), coefficient, gradient);
            Backend backend = Backends.select(o.backend());
            if (backend instanceof CpuBackend cpu) {
                OneTokenRolloutCpu.run(cpu, job);
            } else if (backend instanceof KernelBackend gpu) {
                OneTokenRolloutKernel.run(gpu, job);
            } else {
                throw new TokenKernelsException("one-token rollout cannot run on backend '" + backend.name()
                        + "': it is neither the cpu backend nor a kernel backend");
            }
            float[] tokenLoss = new float[rows];
            double loss = 0;
            long hits = 0;
            for (int t = 0; t < rows; t++) {
                if (!counted[t]) {
                    continue;
                }
                double sum = 0;
                for (int s = 0; s < k; s++) {
                    int a = draw.sample()[t * k + s];
                    boolean hit = a == target[t];
                    hits += hit ? 1 : 0;
                    sum += (hit ? 1.0 : -(double) o.beta()) * draw.logProb()[t * k + s]; // NaN for a special row
                }
                double l = -sum / k;
                tokenLoss[t] = (float) l;
                loss += weight * l;
            }
            return new Result((float) loss, gradient, owns, Tensor.ofInts(draw.sample(), rows, k),
                    Tensor.of(draw.logProb(), rows, k), Tensor.of(tokenLoss, rows), count,
                    count == 0 ? 0 : hits / ((double) count * k));
        } catch (RuntimeException | Error e) {
            if (owns) {
                gradient.close();
            }
            throw e;
        }
    }

    /** The reward of a draw {@code a} for ground truth {@code y}. */
    static float reward(int a, int y, float beta) {
        return a == y ? 1f : -beta;
    }
}
