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
 * Elementwise per-token terms of entropy-aware RL methods, over F32 {@code [N]} vectors, each a
 * Vector API loop and a kernel of {@code kernels/select/token_terms.cu}; every product and sum is
 * rounded separately on both, so cpu and cuda-emu agree bit for bit.
 *
 * <ul>
 * <li>{@link #adaptiveTemperature}: HAPO's Adaptive Temperature Sampling (Liu et al., 2025,
 *     arXiv:2509.16591), {@code T_t = T0 (1 + tau clamp(h_hat_t, -1, 1))}, with {@code T0 > 0}
 *     and {@code 0 <= tau < 1} so that {@code T_t > 0} (the paper: T0 = 1, tau = 0.05).</li>
 * <li>{@link #adaptiveClipping}: HAPO's Asymmetric Adaptive Clipping and Differential Advantage
 *     Redistribution. With {@code A_ent = A (1 + beta h_hat)}:
 *     <pre>{@code
 *       h_hat <= 0:  eps_low' = eps_low (1 - alpha h_hat),  eps_high' = eps_high,
 *                    inside = A_ent,  outside = A
 *       h_hat >  0:  eps_low' = eps_low,  eps_high' = eps_high (1 + alpha h_hat),
 *                    inside = A,  outside = A_ent
 *     }</pre>
 *     (alpha = beta = 1, eps = 0.2 in the paper). "Inside" is the advantage a token uses while
 *     its ratio is in the neutral zone, which the authors' released code takes as the open
 *     interval {@code (1 - eps_low' / 2, 1 + eps_high' / 2)} of the adapted ranges, "outside"
 *     elsewhere; {@code PolicyLoss.Options.withClipPerToken(eps_low', eps_high')} takes the ranges.
 *     {@code h_hat} is not clamped here ({@link EntropyNormalization} gives it in [-1, 1]). With
 *     {@code alpha >= 0} both ranges stay {@code >= eps} for any {@code h_hat}; the hazard is the
 *     advantage: {@code A_ent = A (1 + beta h_hat)} changes sign when {@code h_hat < -1/beta}, so a
 *     low-entropy token would be pushed against its advantage. With {@code h_hat in [-1, 1]} that
 *     needs {@code beta > 1} ({@code beta = 1}, the paper's, gives {@code A_ent = 0} at {@code h_hat = -1});
 *     the op computes the formula as given and does not guard it.</li>
 * <li>{@link #advantageEntropyScore}: D^3S's token score {@code |A_t| H_t} (Wang et al., 2025,
 *     arXiv:2509.22115), ranked by {@link TokenSelection#topK}.</li>
 * </ul>
 * Inputs must be finite (a clear error names the first that is not); entropies must be {@code >= 0}.
 */
public final class TokenTerms {

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

    /** HAPO's per-token clip ranges and zone advantages (F32 [N] each); closing closes all four. */
    public record Clipping(Tensor epsLow, Tensor epsHigh, Tensor advantageInside, Tensor advantageOutside)
            implements AutoCloseable {
        @Override
        public void close() {
            epsLow.close();
            epsHigh.close();
            advantageInside.close();
            advantageOutside.close();
        }
    }

    /** Which term, with its scalars, as the backends see it. */
    enum Kind {
        TEMPERATURE,
        CLIPPING,
        SCORE
    }

    record Job(Kind kind, Tensor first, Tensor second, float[] scalars, Tensor[] outputs) {
        int n() {
            return (int) first.dim(0);
        }
    }

    private TokenTerms() {
    }

    /** {@code T0 (1 + tau clamp(h_hat, -1, 1))} per token, F32 [N]. */
    public static Tensor adaptiveTemperature(Tensor hHat, float t0, float tau, Options options) {
        TokenVectors.vector("hHat", hHat, null, null);
        TokenVectors.options(options);
        Checks.positiveFinite("t0", t0);
        Checks.require(tau >= 0f && tau < 1f, "tau", "a value in [0, 1) (so the temperature stays > 0)", tau);
        TokenVectors.finite("hHat", hHat, null, "a finite h_hat");
        // the largest temperature, in the backends' fp32 arithmetic (h_hat clamped to 1): fl(1 + tau) t0
        Checks.require(Float.isFinite((1f + tau) * t0), "t0", "a value for which t0 (1 + tau) stays finite", t0);
        Tensor out = Tensor.allocate(DType.F32, hHat.dim(0));
        return run(new Job(Kind.TEMPERATURE, hHat, null, new float[] {t0, tau}, new Tensor[] {out}), options)[0];
    }

    /** HAPO's clip ranges and zone advantages per token; see the class doc. */
    public static Clipping adaptiveClipping(Tensor hHat, Tensor advantages, float epsLow, float epsHigh, float alpha,
                                            float beta, Options options) {
        TokenVectors.vector("hHat", hHat, null, null);
        TokenVectors.vector("advantages", advantages, hHat, "hHat");
        TokenVectors.options(options);
        nonNegative("epsLow", epsLow);
        nonNegative("epsHigh", epsHigh);
        nonNegative("alpha", alpha);
        nonNegative("beta", beta);
        TokenVectors.finite("hHat", hHat, null, "a finite h_hat");
        TokenVectors.finite("advantages", advantages, null, "a finite advantage");
        // |h_hat| <= 1 from EntropyNormalization, but any finite h_hat is taken: bound by the largest,
        // in the backends' fp32 arithmetic (rounding is monotone, so the largest |h| and |A| give the
        // largest results): eps fl(1 + fl(alpha |h|)) and |A| fl(1 + fl(beta |h|)).
        float h = TokenVectors.maxAbs(hHat);
        Checks.require(Float.isFinite(Math.max(epsLow, epsHigh) * (alpha * h + 1f)), "alpha",
                "a value for which eps (1 + alpha |h_hat|) stays finite (max |h_hat| " + h + ")", alpha);
        float a = TokenVectors.maxAbs(advantages);
        Checks.require(Float.isFinite(a * (beta * h + 1f)), "beta",
                "a value for which A (1 + beta |h_hat|) stays finite (max |A| " + a + ", max |h_hat| " + h + ")", beta);
        long n = hHat.dim(0);
        Tensor[] out = new Tensor[4];
        try {
            for (int k = 0; k < 4; k++) {
                out[k] = Tensor.allocate(DType.F32, n);
            }
        } catch (RuntimeException | Error e) { // close what was allocated before the failure
            for (Tensor t : out) {
                if (t != null) {
                    t.close();
                }
            }
            throw e;
        }
        run(new Job(Kind.CLIPPING, hHat, advantages, new float[] {epsLow, epsHigh, alpha, beta}, out), options);
        return new Clipping(out[0], out[1], out[2], out[3]);
    }

    private static void nonNegative(String name, float value) {
        Checks.require(Float.isFinite(value) && value >= 0f, name, "a finite value >= 0", value);
    }

    /** {@code |A_t| H_t} per token, F32 [N]: D^3S's token score. */
    public static Tensor advantageEntropyScore(Tensor advantages, Tensor entropy, Options options) {
        TokenVectors.vector("advantages", advantages, null, null);
        TokenVectors.vector("entropy", entropy, advantages, "advantages");
        TokenVectors.options(options);
        TokenVectors.finite("advantages", advantages, null, "a finite advantage");
        TokenVectors.finite("entropy", entropy, null, "a finite entropy");
        TokenTermsCpu.requireNonNegative("entropy", entropy);
        Tensor out = Tensor.allocate(DType.F32, advantages.dim(0));
        return run(new Job(Kind.SCORE, advantages, entropy, new float[0], new Tensor[] {out}), options)[0];
    }

    private static Tensor[] run(Job job, Options options) {
        try {
            Backend backend = Backends.select(options.backend());
            if (backend instanceof CpuBackend cpu) {
                TokenTermsCpu.run(cpu, job);
            } else if (backend instanceof KernelBackend gpu) {
                TokenTermsKernel.run(gpu, job);
            } else {
                throw new TokenKernelsException("token terms cannot run on backend '" + backend.name()
                        + "': it is neither the cpu backend nor a kernel backend");
            }
            return job.outputs();
        } catch (RuntimeException | Error e) {
            for (Tensor t : job.outputs()) {
                t.close();
            }
            throw e;
        }
    }
}
