package dev.tokenkernels.ops.loss;

import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;

/**
 * Pairwise preference losses on a policy's logits with token weights: DPO (Rafailov et al., 2023,
 * "Direct Preference Optimization"), its label-smoothed ("conservative") form (Mitchell, 2023, "A
 * note on DPO with noisy preferences"), IPO (Azar et al., 2023, "A General Theoretical Paradigm to
 * Understand Learning from Human Preferences") and SimPO (Meng et al., 2024, "SimPO: Simple
 * Preference Optimization with a Reference-Free Reward"), with the gradient w.r.t. the logits of
 * the chosen and of the rejected responses.
 *
 * <p>Pair {@code b} is chosen sequence {@code b} ({@code w}) and rejected sequence {@code b}
 * ({@code l}), each a run of tokens given by offsets {@code [B + 1]} over its own logits. Per
 * counted token (target not the ignore index) {@code logp_t = log softmax(z_t / T)[y_t]}, its
 * weight {@code w_t} (1 unless given) and, with reference log-probabilities, the log-ratio
 * {@code rho_t = logp_t - ref_t}. A token of weight 0 adds nothing (even where {@code rho} is
 * infinite). Per pair, with {@code h = sum_w w_t rho_t - sum_l w_t rho_t}:
 * <pre>
 *   DPO:   m = beta h,                                          l = -(1 - eps) log sigma(m) - eps log sigma(-m)
 *   IPO:                                                        l = (h - 1 / (2 tau))^2
 *   SimPO: m = beta (sum_w w_t logp_t / n_w - sum_l w_t logp_t / n_l) - gamma,   l as DPO's
 * </pre>
 * {@code n} is the number of counted tokens of the response, those whose target is not the
 * ignore index, whatever their weight: a token of weight 0 still counts in {@code n}; to leave a
 * token out of the length, give it the ignore index (SimPO needs no reference and every response
 * to have a counted token). {@code eps} is the label smoothing (0 by default; it is what is often
 * called "conservative DPO", not the critical-token cDPO of {@code dev.tokenkernels.methods.CdpoLoss}).
 * The loss is the mean over the {@code B} pairs. Token weights make the token-weighted variants
 * (TGDPO, cDPO) and a length-normalized IPO ({@code w = 1 / n}); they are constants of the loss.
 *
 * <p>Rewards per pair: DPO {@code beta sum w rho} of each response, IPO {@code sum w rho}, SimPO
 * {@code beta sum w logp / n}; the margin is chosen minus rejected and the accuracy the fraction
 * of pairs with a positive margin. {@code log sigma} is evaluated as {@code min(m, 0) - log1p(exp(-|m|))}.
 *
 * <p>Two passes over each logits tensor, both {@link TargetLogProb}: the log-probabilities, then on
 * the host each pair's {@code dl/dh}, then the gradient {@code (gradScale / B) dl/dlogp_t (onehot -
 * softmax) / T} written into (or added to) the gradient buffers. No other {@code [N, V]} buffer.
 * A pair whose {@code dl/dh} is not finite gets a NaN gradient on every row of both its responses:
 * NaN logits, a masked target ({@code logp = -inf}) on both sides (then {@code h = -inf - (-inf) =
 * NaN}), or IPO with an infinite {@code h}. A masked target on one side only gives DPO and SimPO
 * {@code h = -inf} on the chosen side, an infinite loss with a finite gradient, and {@code h = +inf}
 * on the rejected side, a loss and gradient of 0 (with label smoothing {@code eps > 0} an infinite
 * loss and a finite gradient again). A reference log-probability or weight that is not finite at a counted
 * token is refused ({@link IllegalArgumentException}), not turned into a NaN gradient, and so are
 * finite weights, beta or gradScale so large (or an IPO {@code h} so large) that a gradient
 * coefficient overflows fp32.
 */
public final class PreferenceLoss {

    /** The pairwise loss on the preference margin. */
    public enum Kind {
        /** Direct Preference Optimization, with optional label smoothing. */
        DPO,
        /** Identity Preference Optimization: squared distance of the margin to {@code 1 / (2 tau)}. */
        IPO,
        /** SimPO: reference-free, length-normalized rewards and a target margin {@code gamma}. */
        SIMPO
    }

    /**
     * The responses of one side of the pairs. A padded batch of {@code B} responses of {@code L}
     * positions is {@code Responses.of(logits.reshape(B * L, V), targets.reshape(B * L), offsets,
     * referenceLogProb.reshape(B * L))} with offsets {@code 0, L, ..., B L} and the ignore index at
     * the prompt and padding positions of {@code targets}.
     *
     * @param logits the policy's logits {@code [N, V]} (F32, F16 or BF16)
     * @param targets {@code [N]} I32/I64 response tokens, the ignore index for prompt and padding
     * @param sequenceStarts offsets {@code [B + 1]} from 0 to N: response {@code b} is rows {@code [s_b, s_b+1)}
     * @param referenceLogProb F32 {@code [N]} {@code logp_ref(y_t)} (DPO, IPO), null for SimPO
     * @param weights F32 {@code [N]} per-token weights, null for 1
     */
    public record Responses(Tensor logits, Tensor targets, int[] sequenceStarts, Tensor referenceLogProb,
                            Tensor weights) {
        /** Unweighted responses with reference log-probabilities (null for SimPO). */
        public static Responses of(Tensor logits, Tensor targets, int[] sequenceStarts, Tensor referenceLogProb) {
            return new Responses(logits, targets, sequenceStarts, referenceLogProb, null);
        }

        /** The same responses with per-token weights {@code w} (F32 {@code [N]}, finite at counted tokens). */
        public Responses withWeights(Tensor w) {
            return new Responses(logits, targets, sequenceStarts, referenceLogProb, w);
        }
    }

    /**
     * Options of one call; start from {@link #dpo}, {@link #ipo} or {@link #simpo}.
     *
     * @param beta DPO's and SimPO's scale, finite and {@code > 0}
     * @param tau IPO's regularization, finite and {@code > 0}
     * @param gamma SimPO's target margin, finite
     * @param labelSmoothing {@code eps} in {@code [0, 0.5)} (DPO, SimPO)
     * @param accumulate add the gradients to the caller's buffers instead of overwriting them
     */
    public record Options(Kind kind, float beta, float tau, float gamma, float labelSmoothing, float temperature,
                          long ignoreIndex, boolean accumulate, Backend backend) {

        /**
         * DPO with scale {@code beta} (finite, > 0): no label smoothing, temperature 1, ignore index
         * {@link LogitStats#DEFAULT_IGNORE_INDEX}, gradients overwrite, the default backend.
         */
        public static Options dpo(float beta) {
            return new Options(Kind.DPO, beta, 1f, 0f, 0f, 1f, LogitStats.DEFAULT_IGNORE_INDEX, false, null);
        }

        /** IPO with regularization {@code tau} (finite, > 0); the other defaults as {@link #dpo}. */
        public static Options ipo(float tau) {
            return new Options(Kind.IPO, 1f, tau, 0f, 0f, 1f, LogitStats.DEFAULT_IGNORE_INDEX, false, null);
        }

        /**
         * SimPO with scale {@code beta} (finite, > 0) and target margin {@code gamma} (finite); the other defaults as
         * {@link #dpo}.
         */
        public static Options simpo(float beta, float gamma) {
            return new Options(Kind.SIMPO, beta, 1f, gamma, 0f, 1f, LogitStats.DEFAULT_IGNORE_INDEX, false, null);
        }

        /** DPO's or SimPO's label smoothing {@code eps}: the preference is taken as flipped with probability eps. */
        public Options withLabelSmoothing(float eps) {
            return new Options(kind, beta, tau, gamma, eps, temperature, ignoreIndex, accumulate, backend);
        }

        /** Softmax temperature {@code T} of the log-probabilities (default 1): see {@link Checks#temperature}. */
        public Options withTemperature(float t) {
            return new Options(kind, beta, tau, gamma, labelSmoothing, t, ignoreIndex, accumulate, backend);
        }

        /** Target value of the tokens that do not count (default {@link LogitStats#DEFAULT_IGNORE_INDEX}). */
        public Options withIgnoreIndex(long index) {
            return new Options(kind, beta, tau, gamma, labelSmoothing, temperature, index, accumulate, backend);
        }

        /** Adds the gradients to the caller's buffers (needs them) instead of overwriting them. */
        public Options accumulating() {
            return new Options(kind, beta, tau, gamma, labelSmoothing, temperature, ignoreIndex, true, backend);
        }

        /** Runs on {@code b}; null (the default) means the default backend. */
        public Options on(Backend b) {
            return new Options(kind, beta, tau, gamma, labelSmoothing, temperature, ignoreIndex, accumulate, b);
        }
    }

    /**
     * The mean loss; the gradients w.r.t. the chosen and rejected logits (null when not asked
     * for); per pair (F32 {@code [B]}) the loss, the two rewards and the margin; per token
     * (F32 {@code [N]}) the policy's {@code logp} (0 for tokens that do not count); the accuracy and
     * the mean margin. Closing closes what the call allocated, not a caller's gradient buffers.
     */
    public static final class Result implements AutoCloseable {
        private final float loss;
        private final Tensor chosenGradient;
        private final Tensor rejectedGradient;
        private final boolean ownsGradients;
        private final Tensor pairLoss;
        private final Tensor chosenReward;
        private final Tensor rejectedReward;
        private final Tensor margin;
        private final Tensor chosenLogProb;
        private final Tensor rejectedLogProb;
        private final double accuracy;
        private final double meanMargin;

        Result(float loss, Tensor chosenGradient, Tensor rejectedGradient, boolean ownsGradients, Tensor pairLoss,
               Tensor chosenReward, Tensor rejectedReward, Tensor margin, Tensor chosenLogProb, Tensor rejectedLogProb,
               double accuracy, double meanMargin) {
            this.loss = loss;
            this.chosenGradient = chosenGradient;
            this.rejectedGradient = rejectedGradient;
            this.ownsGradients = ownsGradients;
            this.pairLoss = pairLoss;
            this.chosenReward = chosenReward;
            this.rejectedReward = rejectedReward;
            this.margin = margin;
            this.chosenLogProb = chosenLogProb;
            this.rejectedLogProb = rejectedLogProb;
            this.accuracy = accuracy;
            this.meanMargin = meanMargin;
        }

        /** The loss: the mean of {@link #pairLoss()} over the {@code B} pairs. */
        public float loss() {
            return loss;
        }

        /**
         * {@code gradScale} times the gradient w.r.t. the chosen logits, {@code [N_w, V]}, or null when not asked for.
         */
        public Tensor chosenGradient() {
            return chosenGradient;
        }

        /**
         * {@code gradScale} times the gradient w.r.t. the rejected logits, {@code [N_l, V]}, or null when not asked
         * for.
         */
        public Tensor rejectedGradient() {
            return rejectedGradient;
        }

        /** Each pair's loss, F32 {@code [B]}. */
        public Tensor pairLoss() {
            return pairLoss;
        }

        /** Each pair's chosen reward, F32 {@code [B]} (see the class description for each kind's reward). */
        public Tensor chosenReward() {
            return chosenReward;
        }

        /** Each pair's rejected reward, F32 {@code [B]}. */
        public Tensor rejectedReward() {
            return rejectedReward;
        }

        /** Chosen minus rejected reward per pair. */
        public Tensor margin() {
            return margin;
        }

        /** The policy's {@code logp} of each chosen token, F32 {@code [N_w]}, 0 for tokens that do not count. */
        public Tensor chosenLogProb() {
            return chosenLogProb;
        }

        /** The policy's {@code logp} of each rejected token, F32 {@code [N_l]}, 0 for tokens that do not count. */
        public Tensor rejectedLogProb() {
            return rejectedLogProb;
        }

        /** The fraction of pairs whose chosen reward exceeds the rejected one. */
        public double accuracy() {
            return accuracy;
        }

        /** The mean of {@link #margin()} over the pairs. */
        public double meanMargin() {
            return meanMargin;
        }

        @Override
        public void close() {
            pairLoss.close();
            chosenReward.close();
            rejectedReward.close();
            margin.close();
            chosenLogProb.close();
            rejectedLogProb.close();
            if (ownsGradients && chosenGradient != null) {
                chosenGradient.close();
                rejectedGradient.close();
            }
        }
    }

    private PreferenceLoss() {
    }

    /** The loss and statistics only (one pass over each logits tensor). */
    public static Result compute(Responses chosen, Responses rejected, Options options) {
        return run(chosen, rejected, options, 0f, null, null, false);
    }

    /** With {@code gradScale} times the gradients, in new F32 tensors. */
    public static Result computeWithGradient(Responses chosen, Responses rejected, Options options, float gradScale) {
        return run(chosen, rejected, options, gradScale, null, null, true);
    }

    /**
     * With {@code gradScale} times the gradients written into (or, accumulating, added to) the
     * caller's buffers, {@code [N_w, V]} and {@code [N_l, V]}, neither of them a logits tensor (F32,
     * or F16/BF16: each value formed in fp32 and rounded once, as {@link TargetLogProb} stores it).
     */
    public static Result computeWithGradient(Responses chosen, Responses rejected, Options options, float gradScale,
                                             Tensor chosenGradient, Tensor rejectedGradient) {
        Checks.notNull("chosenGradient", chosenGradient);
        Checks.notNull("rejectedGradient", rejectedGradient);
        return run(chosen, rejected, options, gradScale, chosenGradient, rejectedGradient, true);
    }

    /** One side, validated: per token whether it counts, its weight and reference, and the sequences. */
    private record Side(String name, Responses r, int rows, boolean[] counted, float[] weight, float[] reference,
                        int[] starts, int[] tokens) {
    }

    private static Result run(Responses chosen, Responses rejected, Options o, float gradScale, Tensor chosenOut,
                              Tensor rejectedOut, boolean withGradient) {
        if (o == null) {
            throw new IllegalArgumentException("options: expected Options (e.g. Options.dpo(0.1f)), got null");
        }
        Checks.require(o.kind() != null, "kind", "a Kind", "null");
        Checks.require(Float.isFinite(o.beta()) && o.beta() > 0f, "beta", "a finite value > 0", o.beta());
        Checks.require(Float.isFinite(o.tau()) && o.tau() > 0f, "tau", "a finite value > 0", o.tau());
        Checks.require(Float.isFinite(o.gamma()), "gamma", "a finite number", o.gamma());
        Checks.require(o.labelSmoothing() >= 0f && o.labelSmoothing() < 0.5f, "labelSmoothing", "a value in [0, 0.5)",
                o.labelSmoothing());
        Checks.require(o.kind() != Kind.IPO || o.labelSmoothing() == 0f, "labelSmoothing",
                "0 for IPO (it smooths DPO's and SimPO's sigmoid)", o.labelSmoothing());
        Checks.temperature("temperature", o.temperature());
        Checks.require(Float.isFinite(gradScale), "gradScale", "a finite number", gradScale);
        boolean reference = o.kind() != Kind.SIMPO;
        Side w = side("chosen", chosen, o, reference);
        Side l = side("rejected", rejected, o, reference);
        Checks.require(w.starts().length == l.starts().length, "rejected.sequenceStarts",
                "B + 1 = " + w.starts().length + " offsets like chosen's (one rejected response per chosen one)",
                l.starts().length);
        long vocab = chosen.logits().dim(1);
        Checks.dim("rejected.logits", rejected.logits(), 1, vocab, "V, the columns of chosen.logits");
        if (o.kind() == Kind.SIMPO) {
            for (Side s : new Side[] {w, l}) {
                for (int b = 0; b < s.tokens().length; b++) {
                    Checks.require(s.tokens()[b] > 0, s.name() + ".sequenceStarts",
                            "a counted token in every response for SimPO's length normalization",
                            "none in response " + b);
                }
            }
        }
        if (withGradient) {
            Checks.require(!o.accumulate() || chosenOut != null, "chosenGradient", "caller buffers to accumulate into",
                    "none");
            if (chosenOut != null) {
                gradientBuffer("chosenGradient", chosenOut, w, vocab);
                gradientBuffer("rejectedGradient", rejectedOut, l, vocab);
                Checks.apart("rejectedGradient", rejectedOut, "chosenGradient", chosenOut, false);
                for (Tensor logits : new Tensor[] {chosen.logits(), rejected.logits()}) { // pass 2 reads them
                    Checks.apart("chosenGradient", chosenOut, "the logits", logits, false);
                    Checks.apart("rejectedGradient", rejectedOut, "the logits", logits, false);
                }
            }
        } else {
            Checks.require(!o.accumulate(), "accumulate", "gradients to accumulate into", "compute without gradients");
        }

        TargetLogProb.Options pass = TargetLogProb.Options.defaults().withTemperature(o.temperature())
                .withIgnoreIndex(o.ignoreIndex()).on(o.backend());
        float[] logpW;
        float[] logpL;
        try (TargetLogProb.Result a = TargetLogProb.compute(chosen.logits(), chosen.targets(), pass);
             TargetLogProb.Result b = TargetLogProb.compute(rejected.logits(), rejected.targets(), pass)) {
            logpW = a.logProb().toFloatArray();
            logpL = b.logProb().toFloatArray();
        }

        int pairs = w.starts().length - 1;
        double[] pairLoss = new double[pairs];
        double[] slope = new double[pairs]; // dl_b / dh_b, h the per-response sums the kind takes
        float[] rewardW = new float[pairs];
        float[] rewardL = new float[pairs];
        float[] margin = new float[pairs];
        double loss = 0;
        double marginSum = 0;
        int correct = 0;
        double eps = o.labelSmoothing();
        for (int b = 0; b < pairs; b++) {
            double sw = weightedSum(w, logpW, b);
            double sl = weightedSum(l, logpL, b);
            double rw;
            double rl;
            if (o.kind() == Kind.IPO) {
                rw = sw;
                rl = sl;
                double d = sw - sl - 1 / (2.0 * o.tau());
                pairLoss[b] = d * d;
                slope[b] = 2 * d;
            } else {
                double scaleW = o.kind() == Kind.SIMPO ? o.beta() / (double) w.tokens()[b] : o.beta();
                double scaleL = o.kind() == Kind.SIMPO ? o.beta() / (double) l.tokens()[b] : o.beta();
                rw = scaleW * sw;
                rl = scaleL * sl;
                double m = rw - rl - (o.kind() == Kind.SIMPO ? o.gamma() : 0);
                pairLoss[b] = -(1 - eps) * logSigmoid(m) - (eps == 0 ? 0 : eps * logSigmoid(-m));
                slope[b] = -(1 - eps) * sigmoid(-m) + eps * sigmoid(m); // dl/dm; the scales follow per token
            }
            rewardW[b] = (float) rw;
            rewardL[b] = (float) rl;
            margin[b] = (float) (rw - rl);
            loss += pairLoss[b];
            marginSum += rw - rl;
            correct += rw > rl ? 1 : 0;
        }

        Tensor gradW = null;
        Tensor gradL = null;
        boolean owns = withGradient && chosenOut == null;
        if (withGradient) {
            double perPair = gradScale / (double) pairs;
            // both sides' coefficients before any write: an overflow leaves the caller's buffers untouched
            float[] cW = coefficients(w, o, slope, perPair, 1);
            float[] cL = coefficients(l, o, slope, perPair, -1);
            try {
                gradW = chosenOut != null ? chosenOut : Tensor.allocate(DType.F32, w.rows(), vocab);
                gradL = rejectedOut != null ? rejectedOut : Tensor.allocate(DType.F32, l.rows(), vocab);
                TargetLogProb.Options second = o.accumulate() ? pass.accumulating() : pass;
                gradientPass(w, cW, slope, second, gradW);
                gradientPass(l, cL, slope, second, gradL);
            } catch (RuntimeException | Error e) {
                if (owns) {
                    if (gradW != null) {
                        gradW.close();
                    }
                    if (gradL != null) {
                        gradL.close();
                    }
                }
                throw e;
            }
        }
        float[] pairLossF = new float[pairs];
        for (int b = 0; b < pairs; b++) {
            pairLossF[b] = (float) pairLoss[b];
        }
        return new Result((float) (loss / pairs), gradW, gradL, owns, Tensor.of(pairLossF, pairs),
                Tensor.of(rewardW, pairs), Tensor.of(rewardL, pairs), Tensor.of(margin, pairs),
                Tensor.of(logpW, w.rows()), Tensor.of(logpL, l.rows()), correct / (double) pairs,
                marginSum / pairs);
    }

    /** {@code sum w (logp - ref)} (or {@code sum w logp} without a reference) over response {@code b}'s counted tokens. */
    private static double weightedSum(Side s, float[] logp, int b) {
        double sum = 0;
        for (int t = s.starts()[b]; t < s.starts()[b + 1]; t++) {
            if (s.counted()[t] && s.weight()[t] != 0f) {
                sum += s.weight()[t] * ((double) logp[t] - (s.reference() == null ? 0 : s.reference()[t]));
            }
        }
        return sum;
    }

    /**
     * {@code c_t = perPair * sign * dl/dh * dh/dlogp_t} for one side (0 for pairs whose {@code dl/dh}
     * is not finite: their rows become NaN after the pass). A coefficient that overflows fp32 (huge
     * weights or beta, or IPO with a huge {@code h}) is refused here naming what the caller passed,
     * not left for TargetLogProb to report as a tensor the caller never saw.
     */
    private static float[] coefficients(Side s, Options o, double[] slope, double perPair, int sign) {
        float[] c = new float[s.rows()];
        for (int b = 0; b < slope.length; b++) {
            if (!Double.isFinite(slope[b])) {
                continue;
            }
            double scale = switch (o.kind()) {
                case IPO -> 1;
                case DPO -> o.beta();
                case SIMPO -> o.beta() / (double) s.tokens()[b];
            };
            for (int t = s.starts()[b]; t < s.starts()[b + 1]; t++) {
                c[t] = s.counted()[t] ? (float) (perPair * sign * slope[b] * scale * s.weight()[t]) : 0f;
                if (!Float.isFinite(c[t])) {
                    throw new IllegalArgumentException(s.name() + ".weights[" + t + "], beta " + o.beta()
                            + (o.kind() == Kind.IPO ? ", the IPO margin h - 1/(2 tau) = " + slope[b] / 2 : "")
                            + ", gradScale: expected a gradient coefficient gradScale/B * dl/dh * scale * w_t within"
                            + " fp32, got " + perPair * sign * slope[b] * scale * s.weight()[t] + " (weight "
                            + s.weight()[t] + ")");
                }
            }
        }
        return c;
    }

    /** Pass 2 for one side through {@link TargetLogProb}; then NaN over the rows of pairs whose {@code dl/dh} is not finite. */
    private static void gradientPass(Side s, float[] c, double[] slope, TargetLogProb.Options pass, Tensor gradient) {
        int pairs = slope.length;
        try (Tensor coefficients = Tensor.of(c, s.rows())) {
            // pass 1 kept the log-probabilities: only the gradient is wanted here
            TargetLogProb.computeWithGradient(s.r().logits(), s.r().targets(), coefficients, pass, gradient).close();
            long vocab = gradient.dim(1);
            for (int b = 0; b < pairs; b++) {
                if (!Double.isFinite(slope[b])) {
                    long from = s.starts()[b] * vocab;
                    long to = s.starts()[b + 1] * vocab;
                    for (long k = from; k < to; k++) {
                        gradient.setFloat(k, Float.NaN);
                    }
                }
            }
        }
    }

    private static Side side(String name, Responses r, Options o, boolean reference) {
        if (r == null) {
            throw new IllegalArgumentException(name + ": expected Responses, got null");
        }
        Tensor logits = Checks.notNull(name + ".logits", r.logits());
        Checks.notNull(name + ".targets", r.targets());
        Checks.rank(name + ".logits", logits, 2, "[N, V]");
        Checks.dtype(name + ".logits", logits, DType.F32, DType.F16, DType.BF16);
        long n = logits.dim(0);
        Checks.require(n <= Integer.MAX_VALUE, name + ".logits", "N < 2^31 rows", n);
        int rows = (int) n;
        Checks.rank(name + ".targets", r.targets(), 1, "[N]");
        Checks.dim(name + ".targets", r.targets(), 0, rows, "N, the rows of " + name + ".logits");
        Checks.dtype(name + ".targets", r.targets(), DType.I32, DType.I64);
        boolean[] counted = new boolean[rows];
        long vocab = logits.dim(1);
        for (int t = 0; t < rows; t++) {
            long y = r.targets().getLong(t);
            Checks.require(y == o.ignoreIndex() || (y >= 0 && y < vocab), name + ".targets[" + t + "]",
                    "a class index in [0, " + vocab + ") or ignoreIndex " + o.ignoreIndex(), y);
            counted[t] = y != o.ignoreIndex();
        }
        int[] starts = Checks.offsets(name + ".sequenceStarts", r.sequenceStarts(), rows);
        int[] tokens = new int[starts.length - 1];
        for (int b = 0; b + 1 < starts.length; b++) {
            for (int t = starts[b]; t < starts[b + 1]; t++) {
                tokens[b] += counted[t] ? 1 : 0;
            }
        }
        float[] ref = null;
        if (reference) {
            ref = perToken(name + ".referenceLogProb",
                    Checks.notNull(name + ".referenceLogProb (needed by " + o.kind() + ")", r.referenceLogProb()),
                    rows, counted);
        } else {
            Checks.require(r.referenceLogProb() == null, name + ".referenceLogProb", "none for SimPO (reference-free)",
                    "a tensor");
        }
        float[] weight = new float[rows];
        if (r.weights() == null) {
            java.util.Arrays.fill(weight, 1f);
        } else {
            weight = perToken(name + ".weights", r.weights(), rows, counted);
        }
        logits.segment(); // closed tensors fail here, before any work
        return new Side(name, r, rows, counted, weight, ref, starts, tokens);
    }

    /** An F32 [N] tensor, finite at every counted token (the others are not read). */
    private static float[] perToken(String name, Tensor t, int rows, boolean[] counted) {
        Checks.rank(name, t, 1, "[N]");
        Checks.dtype(name, t, DType.F32);
        Checks.dim(name, t, 0, rows, "N, the rows of the logits");
        float[] v = t.toFloatArray();
        for (int i = 0; i < rows; i++) {
            Checks.require(!counted[i] || Float.isFinite(v[i]), name + "[" + i + "]", "a finite number", v[i]);
        }
        return v;
    }

    private static void gradientBuffer(String name, Tensor g, Side s, long vocab) {
        Checks.notNull(name, g);
        Checks.rank(name, g, 2, "[N, V]");
        Checks.dtype(name, g, DType.F32, DType.F16, DType.BF16);
        Checks.dim(name, g, 0, s.rows(), "N, the rows of " + s.name() + ".logits");
        Checks.dim(name, g, 1, vocab, "V, the columns of the logits");
    }

    /** {@code log sigma(x) = min(x, 0) - log1p(exp(-|x|))}: no overflow, no cancellation for large |x|. */
    static double logSigmoid(double x) {
        if (Double.isNaN(x)) {
            return x;
        }
        return Math.min(x, 0) - Math.log1p(Math.exp(-Math.abs(x)));
    }

    /** {@code sigma(x)} without overflow on either side. */
    static double sigmoid(double x) {
        if (x >= 0) {
            return 1 / (1 + Math.exp(-x));
        }
        double e = Math.exp(x);
        return e / (1 + e);
    }
}
