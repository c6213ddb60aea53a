package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.methods.EntropyQuantileSelector;
import dev.tokenkernels.methods.LpRegLoss;
import dev.tokenkernels.methods.SteerLoss;
import dev.tokenkernels.ops.loss.LogitStats;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.ProxyDistribution;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Backends;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.Tensor;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * Adversarial review (issue 5) of STEER, Lp-Reg's proxy, entropy-quantile selection and the
 * PolicyLoss options they use. Where a test's doc starts "Was:", it failed on the code as
 * reviewed (the defect described is fixed); the others pin behaviour checked and found correct.
 */
class PolicyMethodsEdgeInputsTest {

    /**
     * Was: SteerLoss accepts w_min = 0 for the linear map ("a finite value >= 0"), but
     * {@code w_max - (Omega_max - Omega_min) * ((w_max - w_min) / (Omega_max - Omega_min))} can round
     * one ulp below 0 for the token with the largest Omega (about 1 batch in 70 with random Omega
     * ranges): the weight is -2.2e-16 and PolicyLoss then refuses the batch with
     * "tokenWeights[1]: expected a value >= 0". The largest-Omega token must get exactly w_min.
     */
    @Test
    void steerLinearMapWithZeroMinimumWeightNeverGivesANegativeWeight() {
        float[] z = {0f, 1f, 0f, 0f, 0f, 0f, 2f, 0f};
        for (Backend backend : ConformanceBackends.all()) {
            SteerLoss steer = new SteerLoss(0.2f, 3f, 0f, 1.2f, SteerLoss.Mapping.LINEAR, 1f, backend);
            List<String> failures = new ArrayList<>();
            for (int k = 0; k < 400; k++) {
                float a1 = 0.5f + k * 0.0137f; // Omega_min = 0 (A = 0), Omega_max proportional to a1
                try (Tensor logits = Tensor.of(z, 2, 4); Tensor y = Tensor.ofInts(new int[] {1, 0}, 2);
                     Tensor old = Tensor.of(new float[] {-1f, -1f}, 2);
                     Tensor adv = Tensor.of(new float[] {0f, a1}, 2);
                     Tensor w = steer.weights(logits, y, old, adv)) {
                    if (w.getFloat(1) < 0f) {
                        failures.add("A = " + a1 + ": w = " + w.getFloat(1));
                        continue;
                    }
                    try (PolicyLoss.Result r = steer.compute(logits, y, old, adv, new int[] {0, 2}, 1f)) {
                        assertTrue(Float.isFinite(r.loss()));
                    } catch (IllegalArgumentException e) {
                        failures.add("A = " + a1 + ": " + e.getMessage());
                    }
                }
            }
            assertTrue(failures.isEmpty(), backend + ": weights below w_min = 0 / refused batches: " + failures);
        }
    }

    /**
     * Was: EntropyQuantileSelector documents {@code keep_t = H_t >= quantile(H, 1 - rho)} with
     * "tokens tied with the quantile are all kept", but it inherits TokenSelection's IEEE total
     * order, where -0.0 is below +0.0: with entropies {-0.0, 0, 0, 0, 0} and rho = 0.2 the
     * quantile is 0 and all five satisfy H >= 0, yet the -0.0 token is dropped. PolicyLoss on the
     * cpu backend writes -0.0 as the entropy of a one-hot row (see the next test), cuda-emu and
     * LogitStats +0.0, so such mixes come from the library itself.
     */
    @Test
    void entropyQuantileKeepsANegativeZeroTiedWithTheQuantile() {
        float[] h = {-0.0f, 0f, 0f, 0f, 0f};
        boolean[] expected = EntropyQuantileSelectorTest.reference(h, null, 0.2);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor entropy = Tensor.of(h, h.length);
                 Tensor keep = new EntropyQuantileSelector(0.2, backend).keep(entropy, null)) {
                boolean[] actual = new boolean[h.length];
                for (int t = 0; t < h.length; t++) {
                    actual[t] = keep.getLong(t) != 0;
                }
                assertArrayEquals(expected, actual, backend + ": H >= quantile keeps every token here");
            }
        }
    }

    /**
     * Was (cpu): The entropy of a row with one finite logit is 0; PolicyLoss's cpu path returns
     * -0.0 (the negated +0.0 sum of p log p), cuda-emu and LogitStats return +0.0. Bitwise the
     * backends disagree, and downstream the total-order selection ops rank the cpu's -0.0 below a
     * +0.0 from any other source (see the test above).
     */
    @Test
    void policyLossEntropyOfAOneHotRowIsPositiveZeroOnEveryBackend() {
        float ninf = Float.NEGATIVE_INFINITY;
        float[] z = {ninf, 3f, ninf, ninf};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor logits = Tensor.of(z, 1, 4); Tensor y = Tensor.ofInts(new int[] {1}, 1);
                 Tensor old = Tensor.of(new float[] {0f}, 1); Tensor adv = Tensor.of(new float[] {1f}, 1);
                 PolicyLoss.Result r = PolicyLoss.compute(logits, y, old, adv, null, new int[] {0, 1},
                         PolicyLoss.Options.defaults().on(backend));
                 LogitStats.Result stats = LogitStats.compute(logits, y, LogitStats.Options.defaults().on(backend))) {
                assertEquals(Float.floatToRawIntBits(stats.entropy().getFloat(0)),
                        Float.floatToRawIntBits(r.entropy().getFloat(0)),
                        backend + ": PolicyLoss entropy " + r.entropy().getFloat(0) + " vs LogitStats "
                                + stats.entropy().getFloat(0));
                assertEquals(0, Float.floatToRawIntBits(r.entropy().getFloat(0)), backend + ": entropy bits");
            }
        }
    }

    /**
     * Was: the kernel's comment said both backends keep the same classes in FIXED mode, but the
     * row's lse (the cut's reference) is summed in another order on each (cpu: fp32 lanes, then
     * double; kernel: fp32 per thread, block-reduced) and differs in its last bit on many rows, so
     * a class sitting on the cut is kept on one backend and dropped on the other (a seeded search
     * found such rows). The docs now say so; this checks the bound they give: the references agree
     * within 2 ulps, and a class farther than that from the cut has the same fate everywhere.
     */
    @Test
    void fixedModeProxyReferencesAgreeWithinTheDocumentedBound() {
        Backend cpu = CpuBackend.withThreads(1);
        Backend emu = Backends.named("cuda-emu");
        SplittableRandom random = new SplittableRandom(5);
        int differing = 0;
        for (int trial = 0; trial < 60; trial++) {
            int vocab = 300 + random.nextInt(3000);
            float[] z = new float[vocab];
            for (int i = 0; i < vocab; i++) {
                z[i] = (float) (random.nextGaussian() * 2);
            }
            float lseCpu;
            float lseEmu;
            try (Tensor logits = Tensor.of(z, 1, vocab); Tensor y = Tensor.ofInts(new int[] {0}, 1);
                 ProxyDistribution.Result c = ProxyDistribution.compute(logits, y,
                         ProxyDistribution.Options.fixed(1e-37f).on(cpu));
                 ProxyDistribution.Result e = ProxyDistribution.compute(logits, y,
                         ProxyDistribution.Options.fixed(1e-37f).on(emu))) {
                // tau 1e-37 keeps every class: the kept lse is the FIXED reference itself
                lseCpu = c.keptLse().getFloat(0);
                lseEmu = e.keptLse().getFloat(0);
            }
            differing += lseCpu == lseEmu ? 0 : 1;
            assertTrue(Math.abs(lseCpu - lseEmu) <= 2 * Math.ulp(Math.abs(lseCpu)),
                    "trial " + trial + ": references " + lseCpu + " and " + lseEmu);
            // a cut 8 ulps of the reference to either side of class 0: the same fate on both
            for (int side = -1; side <= 1; side += 2) {
                float cut = z[0] - lseCpu + side * 8 * Math.ulp(Math.abs(lseCpu));
                float tau = (float) Math.exp(cut);
                if (!(tau > 0f && tau <= 1f)) {
                    continue;
                }
                try (Tensor logits = Tensor.of(z, 1, vocab); Tensor y = Tensor.ofInts(new int[] {0}, 1);
                     ProxyDistribution.Result c = ProxyDistribution.compute(logits, y,
                             ProxyDistribution.Options.fixed(tau).on(cpu));
                     ProxyDistribution.Result e = ProxyDistribution.compute(logits, y,
                             ProxyDistribution.Options.fixed(tau).on(emu))) {
                    assertEquals(Float.isInfinite(c.logProb().getFloat(0)), Float.isInfinite(e.logProb().getFloat(0)),
                            "trial " + trial + " tau " + tau + ": kept on one backend only");
                }
            }
        }
        assertTrue(differing > 0, "rows whose references differ in the last bit (what the bound is about)");
    }

    /**
     * Was (a missing bad-input check): The normalizer is documented as TOKEN_MEAN's numItems or
     * SEQ_MEAN_TOKEN_SUM_NORM's maxLength; given with any other aggregation it is silently
     * ignored, so a caller who writes withAggregation(SEQ_MEAN_TOKEN_SUM, 4096) expecting Dr.
     * GRPO's normalization gets a loss 4096/B times larger without an error.
     */
    @Test
    void aNormalizerTheAggregationDoesNotUseIsRefused() {
        float[] z = {1f, 2f, 3f, 0f, 0f, 0f};
        for (PolicyLoss.Aggregation a : new PolicyLoss.Aggregation[] {PolicyLoss.Aggregation.SEQ_MEAN_TOKEN_MEAN,
                PolicyLoss.Aggregation.SEQ_MEAN_TOKEN_SUM, PolicyLoss.Aggregation.DEGRPO}) {
            try (Tensor logits = Tensor.of(z, 2, 3); Tensor y = Tensor.ofInts(new int[] {0, 2}, 2);
                 Tensor old = Tensor.of(new float[] {-1f, -1f}, 2); Tensor adv = Tensor.of(new float[] {-1f, 1f}, 2)) {
                BadInput.expect(() -> PolicyLoss.compute(logits, y, old, adv, null, new int[] {0, 2},
                        PolicyLoss.Options.defaults().withAggregation(a, 4096)).close(), "normalizer");
            }
        }
    }

    /**
     * Was (missing bad-input checks): LpRegLoss.regularized is public, but unlike the
     * constructor it does not check rho, nor the arrays: rho = 2 silently selects every negative,
     * rho = NaN or -1 silently selects none, and arrays of different lengths or a null array end in
     * ArrayIndexOutOfBoundsException / NullPointerException instead of a clear
     * IllegalArgumentException.
     */
    @Test
    void lpRegSelectionRefusesBadArguments() {
        float[] logp = {-5f, -4f, -3f, -2f};
        float[] proxy = {-1f, -1f, -1f, -1f};
        float[] a = {-1f, -1f, -1f, -1f};
        boolean[] counted = {true, true, true, true};
        BadInput.expect(() -> LpRegLoss.regularized(logp, proxy, a, counted, 2f), "rho");
        BadInput.expect(() -> LpRegLoss.regularized(logp, proxy, a, counted, Float.NaN), "rho");
        BadInput.expect(() -> LpRegLoss.regularized(logp, proxy, a, counted, -1f), "rho");
        BadInput.expect(() -> LpRegLoss.regularized(logp, new float[] {-1f, -1f}, a, counted, 1f), "proxy");
        BadInput.expect(() -> LpRegLoss.regularized(logp, proxy, new float[] {-1f}, counted, 1f), "advantages");
        BadInput.expect(() -> LpRegLoss.regularized(logp, null, a, counted, 1f), "proxy");
    }

    /**
     * Passes: STEER, Lp-Reg (with a filtered target and ties at the bottom of the ranking) and
     * DeGRPO on F32, F16 and BF16 logits agree across backends (loss to 1e-5, gradient to 1e-6
     * absolute); every loss is finite.
     */
    @Test
    void methodsOnHalfLogitsAgreeAcrossBackends() {
        int rows = 40;
        int vocab = 33;
        SplittableRandom random = new SplittableRandom(77);
        float[] z = new float[rows * vocab];
        float[] zOld = new float[rows * vocab];
        for (int i = 0; i < z.length; i++) {
            z[i] = (float) (random.nextGaussian() * 3);
            zOld[i] = z[i] + (float) (random.nextGaussian() * 0.2);
        }
        int[] y = new int[rows];
        float[] a = new float[rows];
        float[] old = new float[rows];
        for (int t = 0; t < rows; t++) {
            y[t] = t % 9 == 4 ? -100 : random.nextInt(vocab);
            a[t] = (float) (random.nextDouble() < 0.7 ? -random.nextDouble(0.1, 2) : random.nextDouble(0.1, 2));
            old[t] = (float) -random.nextDouble(0.5, 6);
        }
        y[0] = y[1] = 7; // identical rows: a tie in Lp-Reg's ranking
        System.arraycopy(z, 0, z, vocab, vocab);
        z[2 * vocab + 3] = -40f; // target far below the old policy's min-p cut: filtered (-inf proxy)
        y[2] = 3;
        a[0] = a[1] = a[2] = -1f;
        int[] starts = {0, 13, 27, rows};
        for (dev.tokenkernels.runtime.DType dtype : new dev.tokenkernels.runtime.DType[] {
                dev.tokenkernels.runtime.DType.F32, dev.tokenkernels.runtime.DType.F16,
                dev.tokenkernels.runtime.DType.BF16}) {
            float[][] losses = new float[3][];
            float[][][] grads = new float[3][][];
            List<Backend> backends = ConformanceBackends.all();
            for (int bi = 0; bi < backends.size(); bi++) {
                Backend b = backends.get(bi);
                float[] l = new float[3];
                float[][] g = new float[3][];
                try (Tensor logits = Tensor.ofFloats(z, dtype, rows, vocab);
                     Tensor oldLogits = Tensor.ofFloats(zOld, dtype, rows, vocab);
                     Tensor targets = Tensor.ofInts(y, rows); Tensor o = Tensor.of(old, rows); Tensor adv = Tensor.of(a, rows);
                     PolicyLoss.Result steer = new SteerLoss(0.2f, 3f, 0.8f, 1.2f, SteerLoss.Mapping.LINEAR, 1f, b)
                             .compute(logits, targets, o, adv, starts, 1f);
                     PolicyLoss.Result lp = new LpRegLoss(0.2f, 0.02f, 1f, 0.2f, 0.28f, 1f, b)
                             .compute(logits, oldLogits, targets, o, adv, starts, 1f);
                     PolicyLoss.Result de = new dev.tokenkernels.methods.DeGrpoLoss(0.001f, 0.2f, 1f, b)
                             .compute(logits, targets, o, adv, starts, 1f)) {
                    l[0] = steer.loss();
                    l[1] = lp.loss();
                    l[2] = de.loss();
                    g[0] = steer.gradient().toFloatArray();
                    g[1] = lp.gradient().toFloatArray();
                    g[2] = de.gradient().toFloatArray();
                }
                for (int m = 0; m < 3; m++) {
                    assertTrue(Float.isFinite(l[m]), b + " " + dtype + " method " + m + " loss " + l[m]);
                    if (bi == 0) {
                        losses[m] = new float[] {l[m]};
                        grads[m] = new float[][] {g[m]};
                    } else {
                        assertEquals(losses[m][0], l[m], 1e-5 * (1 + Math.abs(l[m])), b + " " + dtype + " method " + m);
                        for (int i = 0; i < g[m].length; i++) {
                            assertEquals(grads[m][0][i], g[m][i], 1e-6, b + " " + dtype + " method " + m + " grad " + i);
                        }
                    }
                }
            }
        }
    }

    /**
     * Passes: empty sequences, L = 0, all tokens ignored (with NaN in their inputs) give loss 0,
     * statistics 0 and gradient 0 on every aggregation and backend; the numbers by hand for two
     * tokens in a batch with two empty sequences (token 0 clipped low: a < 0, r = 0.245).
     */
    @Test
    void emptyAndFullyIgnoredBatchesAreZeroAndAggregationsMatchByHand() {
        float[] z = {1f, 2f, 3f, 0f, 0f, 0f};
        double l0 = 0.8; // a = -1, r = exp(1 - lse(1,2,3) + 1) < 0.8: clipped, 0.8 |a|
        double r1 = Math.exp(-Math.log(3) + 1);
        double l1 = -r1; // a = 1, r inside the clip range
        for (Backend b : ConformanceBackends.all()) {
            for (PolicyLoss.Aggregation ag : PolicyLoss.Aggregation.values()) {
                try (Tensor logits = Tensor.of(z, 2, 3); Tensor y = Tensor.ofInts(new int[] {-100, -100}, 2);
                     Tensor old = Tensor.of(new float[] {Float.NaN, Float.NaN}, 2);
                     Tensor adv = Tensor.of(new float[] {Float.NaN, 1f}, 2);
                     PolicyLoss.Result r = PolicyLoss.computeWithGradient(logits, y, old, adv, null,
                             new int[] {0, 0, 2, 2}, PolicyLoss.Options.defaults().withAggregation(ag).on(b), 1f)) {
                    assertEquals(0f, r.loss(), b + " " + ag);
                    assertEquals(0.0, r.meanRatio() + r.meanEntropy() + r.clipFractionLow() + r.clipFractionHigh());
                    for (float g : r.gradient().toFloatArray()) {
                        assertEquals(0f, g, b + " " + ag);
                    }
                }
                try (Tensor logits = Tensor.of(z, 2, 3); Tensor y = Tensor.ofInts(new int[] {0, 2}, 2);
                     Tensor old = Tensor.of(new float[] {-1f, -1f}, 2); Tensor adv = Tensor.of(new float[] {-1f, 1f}, 2);
                     PolicyLoss.Result r = PolicyLoss.computeWithGradient(logits, y, old, adv, null,
                             new int[] {0, 0, 2, 2}, PolicyLoss.Options.defaults().withAggregation(ag).on(b), 1f)) {
                    double expected = switch (ag) {
                        case TOKEN_MEAN, SEQ_MEAN_TOKEN_MEAN -> (l0 + l1) / 2;
                        case SEQ_MEAN_TOKEN_SUM -> (l0 + l1) / 3;
                        case SEQ_MEAN_TOKEN_SUM_NORM -> (l0 + l1) / (3 * 2);
                        case DEGRPO -> 0.001 * l0 + l1;
                    };
                    assertEquals(expected, r.loss(), 1e-6, b + " " + ag);
                    assertEquals(0.5, r.clipFractionLow(), b + " " + ag);
                    assertEquals(0.0, r.clipFractionHigh(), b + " " + ag);
                }
            }
        }
    }
}
