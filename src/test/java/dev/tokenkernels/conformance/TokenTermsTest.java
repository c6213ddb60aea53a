package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.tokenkernels.ops.select.TokenTerms;
import dev.tokenkernels.ops.select.TokenTerms.Options;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import org.junit.jupiter.api.Test;

/** HAPO's temperature and clipping terms and D^3S's score: by hand, against float64, bit-equal across backends, bad inputs. */
class TokenTermsTest {

    @Test
    void hapoTermsByHand() {
        float[] h = {-1f, -0.5f, 0f, 0.5f, 2f};
        float[] a = {1f, -2f, 3f, 4f, -1f};
        for (Backend backend : ConformanceBackends.all()) {
            Options o = Options.defaults().on(backend);
            try (Tensor hHat = Tensor.of(h, 5); Tensor adv = Tensor.of(a, 5);
                 Tensor t = TokenTerms.adaptiveTemperature(hHat, 1f, 0.05f, o);
                 TokenTerms.Clipping c = TokenTerms.adaptiveClipping(hHat, adv, 0.2f, 0.28f, 1f, 1f, o)) {
                float[] temperature = {0.95f, 0.975f, 1f, 1.025f, 1.05f}; // h = 2 is clamped to 1
                float[] low = {0.4f, 0.3f, 0.2f, 0.2f, 0.2f};
                float[] high = {0.28f, 0.28f, 0.28f, 0.42f, 0.84f};
                float[] inside = {0f, -1f, 3f, 4f, -1f};
                float[] outside = {1f, -2f, 3f, 6f, -3f};
                for (int i = 0; i < 5; i++) {
                    String at = backend + " token " + i;
                    assertEquals(temperature[i], t.getFloat(i), 1e-6f, at);
                    assertEquals(low[i], c.epsLow().getFloat(i), 1e-6f, at + " eps_low'");
                    assertEquals(high[i], c.epsHigh().getFloat(i), 1e-6f, at + " eps_high'");
                    assertEquals(inside[i], c.advantageInside().getFloat(i), 1e-6f, at + " inside");
                    assertEquals(outside[i], c.advantageOutside().getFloat(i), 1e-6f, at + " outside");
                }
            }
        }
    }

    @Property(tries = 40)
    void matchFloat64AndAgreeBitForBit(@ForAll("sizes") int n, @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] h = new float[n];
        float[] a = new float[n];
        float[] entropy = new float[n];
        for (int i = 0; i < n; i++) {
            h[i] = random.nextInt(8) == 0 ? 0f : (float) random.nextDouble(-1.5, 1.5);
            a[i] = (float) random.nextGaussian() * 3;
            entropy[i] = random.nextInt(8) == 0 ? 0f : (float) random.nextDouble(0, 8);
        }
        float t0 = (float) random.nextDouble(0.5, 1.5);
        float tau = (float) random.nextDouble(0, 0.5);
        float epsLow = (float) random.nextDouble(0, 0.4);
        float epsHigh = (float) random.nextDouble(0, 0.4);
        float alpha = (float) random.nextDouble(0, 1.5);
        float beta = (float) random.nextDouble(0, 1.5);
        float[][] first = null;
        try (Tensor hHat = Tensor.of(h, n); Tensor adv = Tensor.of(a, n); Tensor ent = Tensor.of(entropy, n)) {
            for (Backend backend : ConformanceBackends.all()) {
                Options o = Options.defaults().on(backend);
                try (Tensor t = TokenTerms.adaptiveTemperature(hHat, t0, tau, o);
                     TokenTerms.Clipping c = TokenTerms.adaptiveClipping(hHat, adv, epsLow, epsHigh, alpha, beta, o);
                     Tensor score = TokenTerms.advantageEntropyScore(adv, ent, o)) {
                    float[][] got = {t.toFloatArray(), c.epsLow().toFloatArray(), c.epsHigh().toFloatArray(),
                            c.advantageInside().toFloatArray(), c.advantageOutside().toFloatArray(), score.toFloatArray()};
                    for (int i = 0; i < n; i++) {
                        String at = backend + " n=" + n + " token " + i;
                        double hh = h[i];
                        double aEnt = a[i] * (1 + (double) beta * hh);
                        boolean pos = hh > 0;
                        double[] expected = {t0 * (1 + tau * Math.max(-1, Math.min(1, hh))),
                                pos ? epsLow : epsLow * (1 - alpha * hh), pos ? epsHigh * (1 + alpha * hh) : epsHigh,
                                pos ? a[i] : aEnt, pos ? aEnt : a[i], Math.abs((double) a[i]) * entropy[i]};
                        // each term rounds 3 times in fp32: bounded by the magnitudes of its parts
                        double aParts = Math.abs(a[i]) * (1 + Math.abs(beta * hh));
                        double[] magnitude = {t0 * (1 + tau), epsLow * (1 + Math.abs(alpha * hh)),
                                epsHigh * (1 + Math.abs(alpha * hh)), aParts, aParts, Math.abs(expected[5])};
                        for (int k = 0; k < expected.length; k++) {
                            Approx.assertClose(at + " term " + k, expected[k], got[k][i], 4 * 0x1p-24 * magnitude[k] + 1e-30);
                        }
                    }
                    if (first == null) {
                        first = got;
                    } else {
                        for (int k = 0; k < got.length; k++) {
                            org.junit.jupiter.api.Assertions.assertArrayEquals(first[k], got[k], 0f,
                                    backend + " term " + k + " is bit-equal to the first backend's");
                        }
                    }
                }
            }
        }
    }

    @Provide
    Arbitrary<Integer> sizes() {
        return Arbitraries.oneOf(Arbitraries.integers().between(0, 40), Arbitraries.integers().between(41, 3000),
                Arbitraries.of(1, 16, 17, 65537));
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor h = Tensor.of(new float[] {0f, Float.NaN}, 2); Tensor ok = Tensor.of(new float[] {0f, 1f}, 2);
             Tensor negative = Tensor.of(new float[] {0f, -1f}, 2); Tensor three = Tensor.of(new float[3], 3)) {
            Options o = Options.defaults();
            expect(() -> TokenTerms.adaptiveTemperature(h, 1f, 0.05f, o), "hHat[1]");
            expect(() -> TokenTerms.adaptiveTemperature(ok, 0f, 0.05f, o), "t0");
            expect(() -> TokenTerms.adaptiveTemperature(ok, 1f, 1f, o), "tau");
            expect(() -> TokenTerms.adaptiveTemperature(ok, 1f, 0.05f, null), "options");
            expect(() -> TokenTerms.adaptiveClipping(ok, three, 0.2f, 0.2f, 1f, 1f, o), "advantages: expected dimension 0 = 2");
            expect(() -> TokenTerms.adaptiveClipping(ok, h, 0.2f, 0.2f, 1f, 1f, o), "advantages[1]");
            expect(() -> TokenTerms.adaptiveClipping(ok, ok, -0.2f, 0.2f, 1f, 1f, o), "epsLow");
            expect(() -> TokenTerms.adaptiveClipping(ok, ok, 0.2f, Float.NaN, 1f, 1f, o), "epsHigh");
            expect(() -> TokenTerms.adaptiveClipping(ok, ok, 0.2f, 0.2f, -1f, 1f, o), "alpha");
            expect(() -> TokenTerms.adaptiveClipping(ok, ok, 0.2f, 0.2f, 1f, Float.POSITIVE_INFINITY, o), "beta");
            expect(() -> TokenTerms.advantageEntropyScore(ok, negative, o), "entropy[1]: expected a value >= 0");
            expect(() -> TokenTerms.advantageEntropyScore(ok, h, o), "entropy[1]");
            expect(() -> TokenTerms.advantageEntropyScore(null, ok, o), "advantages");
        }
    }
}
