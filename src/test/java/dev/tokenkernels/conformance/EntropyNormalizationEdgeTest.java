package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import dev.tokenkernels.ops.select.EntropyNormalization;
import dev.tokenkernels.ops.select.EntropyNormalization.Options;
import dev.tokenkernels.ops.select.TokenTerms;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.Tensor;
import java.util.List;
import java.util.SplittableRandom;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;

/**
 * EntropyNormalization's ratio form of e - pivot, its apply, and TokenTerms' overflow checks on
 * edge inputs (a review of session 12's diff). Where a test's doc starts "Was:", it failed on the
 * code as reviewed (the defect described is fixed).
 */
class EntropyNormalizationEdgeTest {

    /**
     * Was: EntropyNormalization's Javadoc: "h_hat agrees across backends to about 1e-6 relative". Away
     * from the ratio window e - pivot = ln f - pivot is a difference of two logs of about 18
     * (the pivot at the 1e-8 floor: most tokens confident) rounded by different logs, and
     * d >= 0.405 there: 1 ulp of 18 is 4.7e-6 of d. Measured cpu vs cuda-emu 4.5e-6 relative.
     */
    @Test
    void backendsAgreeWithin1e6RelativeWithThePivotAtTheFloor() {
        SplittableRandom random = new SplittableRandom(1);
        int n = 20000;
        float[] h = new float[n];
        for (int i = 0; i < n; i++) {
            h[i] = i < n * 85 / 100 ? 1e-8f : (float) (1e-8f * (1.5 + 1.5 * random.nextDouble()));
        }
        double[] ref = EntropyNormalizationReference.compute(h, null, 0.8, true, false);
        List<Backend> backends = ConformanceBackends.all();
        float[][] got = new float[backends.size()][];
        for (int b = 0; b < backends.size(); b++) {
            try (Tensor e = Tensor.of(h, n);
                 EntropyNormalization.Result r = EntropyNormalization.compute(e, null, Options.defaults().on(backends.get(b)))) {
                got[b] = r.normalized().toFloatArray();
            }
        }
        for (int b = 1; b < backends.size(); b++) {
            for (int i = 0; i < n; i++) {
                // "about 1e-6": allow twice that
                assertEquals(got[0][i], got[b][i], 2e-6 * Math.abs(ref[i]) + 1e-9,
                        backends.get(0) + " vs " + backends.get(b) + " h_hat[" + i + "] (h " + h[i] + ")");
            }
        }
    }

    /**
     * Was: The Javadoc: near the pivot the ratio form keeps "entropies that cluster within a few ulps
     * [in] their order and spacing". A cluster of consecutive floats that straddles w = f / f_p = 1.5
     * switches from the ratio form (accurate) to ln f - pivot (off by ulps of |ln f| ~ 17): the
     * larger entropy gets the smaller h_hat (here 0x1.2c0c58p-24 below 0x1.2c0c56p-24 by 1.8e-7),
     * on the CPU and on cuda-emu alike.
     */
    @Test
    void clusteredEntropiesKeepTheirOrderAcrossTheRatios() {
        float fp = 0x1.901076p-25f;
        float edge = (float) (1.5 * fp);
        while (edge / fp >= 1.5f) {
            edge = Math.nextDown(edge);
        }
        while (edge / fp < 1.5f) {
            edge = Math.nextUp(edge); // the first float outside the window
        }
        int n = 400;
        float[] h = new float[n];
        for (int i = 0; i < 330; i++) {
            h[i] = fp; // the pivot (and most tokens)
        }
        float v = edge;
        for (int k = 0; k < 32; k++) {
            v = Math.nextDown(v);
        }
        for (int i = 330; i < 394; i++) { // 64 consecutive floats, 32 inside the window and 32 outside
            h[i] = v;
            v = Math.nextUp(v);
        }
        for (int i = 394; i < n; i++) {
            h[i] = 100 * fp;
        }
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor e = Tensor.of(h, n);
                 EntropyNormalization.Result r = EntropyNormalization.compute(e, null, Options.defaults().on(backend))) {
                float[] out = r.normalized().toFloatArray();
                for (int i = 331; i < 394; i++) {
                    assertTrue(out[i] >= out[i - 1], backend + ": h " + Float.toHexString(h[i]) + " > "
                            + Float.toHexString(h[i - 1]) + " but h_hat " + out[i] + " < " + out[i - 1]);
                }
            }
        }
    }

    /**
     * Masks of every length mod 8 (the byte vector's lanes) and mod 4 (128-bit float vectors), run
     * often enough for C2 to compile the B2I widening (a fromLong route once gave all-false masks
     * only once compiled): zeros outside the mask, the float64 reference inside; apply gives the
     * batch's own h_hat bit for bit.
     */
    @Test
    void everyMaskLengthMatchesTheReferenceOnceCompiled() {
        SplittableRandom random = new SplittableRandom(5);
        try (CpuBackend cpu = CpuBackend.withThreads(1)) {
            for (int round = 0; round < 400; round++) {
                for (int n = 1; n <= 41; n += (round < 399 ? 8 : 1)) {
                    float[] h = new float[n];
                    boolean[] keep = new boolean[n];
                    for (int i = 0; i < n; i++) {
                        keep[i] = random.nextInt(3) != 0;
                        h[i] = keep[i] ? (float) Math.exp(random.nextGaussian() * 2) : Float.NaN;
                    }
                    double[] ref = EntropyNormalizationReference.compute(h, keep, 0.8, true, false);
                    try (Tensor e = Tensor.of(h, n); Tensor mask = TokenSelectionTest.maskOf(keep);
                         EntropyNormalization.Result r = EntropyNormalization.compute(e, mask, Options.defaults().on(cpu));
                         Tensor again = EntropyNormalization.apply(e, mask, r, Options.defaults().on(cpu))) {
                        float[] out = r.normalized().toFloatArray();
                        for (int i = 0; i < n; i++) {
                            if (!keep[i]) {
                                assertEquals(0f, out[i], "round " + round + " n " + n + " unmasked " + i);
                            } else {
                                Approx.assertClose("round " + round + " n " + n + " h_hat[" + i + "]", ref[i], out[i],
                                        1e-5 * Math.abs(ref[i]) + 1e-5);
                            }
                        }
                        assertArrayEquals(out, again.toFloatArray(), "apply on its own batch, n " + n);
                    }
                }
            }
        }
    }

    /**
     * Was: apply takes a public Result whose f_p and e_p are redundant (e_p = ln f_p) but checks each
     * only for range: with f_p = e^2 and e_p = 0 it mixes the ratio form (relative to e^2) with
     * ln f - 0 and returns garbage silently: a larger entropy (1.5 e^2, e - pivot 2.41 by ln f - 0)
     * against 1.49 e^2 (0.40 by the ratio). A stored or hand-made Result should be refused.
     */
    @Test
    void applyRefusesStatisticsWhosePivotDisagreesWithItsEntropy() {
        float fp = (float) Math.exp(2);
        EntropyNormalization.Result inconsistent = new EntropyNormalization.Result(
                Tensor.of(new float[] {0f}, 1), 0, fp, 0f, 1f, 1f, 1f, 10);
        inconsistent.close();
        try (Tensor h = Tensor.of(new float[] {1.49f * fp, 1.5f * fp, 3f * fp}, 3)) {
            BadInput.expect(() -> EntropyNormalization.apply(h, null, inconsistent, Options.defaults()).close(),
                    "statistics.pivot");
        }
    }

    /** Edge entropies (0, -0, negative, subnormal, the floor, huge) on every backend against float64. */
    @Test
    void edgeEntropiesMatchTheReference() {
        float[] h = {0f, -0f, -3f, Float.MIN_VALUE, 1e-8f, 1.5e-8f, 5e-9f, 2e-8f, 1e-7f, 0.3f, 1f, 7f,
                Float.MAX_VALUE, 1e38f, 3e38f, 12f, 11.5f, 1e-3f};
        double[] ref = EntropyNormalizationReference.compute(h, null, 0.8, true, false);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor e = Tensor.of(h, h.length);
                 EntropyNormalization.Result r = EntropyNormalization.compute(e, null, Options.defaults().on(backend))) {
                for (int i = 0; i < h.length; i++) {
                    Approx.assertClose(backend + " h_hat[" + i + "] (h " + h[i] + ")", ref[i], r.normalized().getFloat(i),
                            1e-5 * Math.abs(ref[i]) + 1e-6);
                }
            }
        }
    }

    /** Runs {@code call}: it must either refuse {@code name} or return only finite values. */
    private static void refusedOrFinite(String name, Supplier<float[]> call, String what) {
        float[] out;
        try {
            out = call.get();
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage().contains(name), e.getMessage());
            return;
        }
        for (int i = 0; i < out.length; i++) {
            if (!Float.isFinite(out[i])) {
                fail(what + "[" + i + "] = " + out[i] + ": neither refused by '" + name + "' nor finite");
            }
        }
    }

    private static final float HUGE = Math.nextDown(Float.MAX_VALUE);
    /** Just above 2^-24: 1 + TINY rounds up to 1 + 2^-23 in fp32, while the checks add it in float64. */
    private static final float TINY = Math.nextUp(0x1p-24f);

    /**
     * Was: TokenTerms.adaptiveTemperature refuses t0 with t0 (1 + tau) > MAX in float64, but the
     * backends form fl(1 + tau h) in fp32, which rounds 1 + tau up: t0 = nextDown(MAX), tau just
     * above 2^-24, h_hat = 1 gives +inf on every backend.
     */
    @Test
    void temperatureOverflowInFp32IsRefusedByT0() {
        for (Backend backend : ConformanceBackends.all()) {
            refusedOrFinite("t0", () -> {
                try (Tensor h = Tensor.of(new float[] {1f, -1f, 0f}, 3);
                     Tensor t = TokenTerms.adaptiveTemperature(h, HUGE, TINY, TokenTerms.Options.defaults().on(backend))) {
                    return t.toFloatArray();
                }
            }, backend + " temperature");
        }
    }

    /** Was: the same rounding gap in adaptiveClipping's alpha check: eps_high (1 + alpha h) = +inf. */
    @Test
    void clipRangeOverflowInFp32IsRefusedByAlpha() {
        for (Backend backend : ConformanceBackends.all()) {
            refusedOrFinite("alpha", () -> {
                try (Tensor h = Tensor.of(new float[] {1f, -1f}, 2); Tensor a = Tensor.of(new float[] {1f, 1f}, 2);
                     TokenTerms.Clipping c = TokenTerms.adaptiveClipping(h, a, HUGE, HUGE, TINY, 0f,
                             TokenTerms.Options.defaults().on(backend))) {
                    float[] low = c.epsLow().toFloatArray();
                    float[] high = c.epsHigh().toFloatArray();
                    return new float[] {low[0], low[1], high[0], high[1]};
                }
            }, backend + " eps (low 0-1, high 0-1)");
        }
    }

    /** Was: and in the beta check: A (1 + beta |h|) = +inf for A = nextDown(MAX). */
    @Test
    void advantageOverflowInFp32IsRefusedByBeta() {
        for (Backend backend : ConformanceBackends.all()) {
            refusedOrFinite("beta", () -> {
                try (Tensor h = Tensor.of(new float[] {1f, -1f}, 2); Tensor a = Tensor.of(new float[] {HUGE, HUGE}, 2);
                     TokenTerms.Clipping c = TokenTerms.adaptiveClipping(h, a, 0.2f, 0.2f, 0f, TINY,
                             TokenTerms.Options.defaults().on(backend))) {
                    float[] in = c.advantageInside().toFloatArray();
                    float[] out = c.advantageOutside().toFloatArray();
                    return new float[] {in[0], in[1], out[0], out[1]};
                }
            }, backend + " advantages (inside 0-1, outside 0-1)");
        }
    }
}
