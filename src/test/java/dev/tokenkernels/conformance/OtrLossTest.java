package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.methods.OtrLoss;
import dev.tokenkernels.ops.loss.OneTokenRollout;
import dev.tokenkernels.ops.loss.TokenSampler;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** OtrLoss against a float64 composition of the paper's formulas: label shift, prompt mask, draws, rewards, CE. */
class OtrLossTest {

    @Test
    void matchesTheFloat64Composition() {
        int sequences = 2;
        int length = 6;
        int vocab = 13;
        int rows = sequences * length;
        SplittableRandom random = new SplittableRandom(17);
        float[] values = new float[rows * vocab];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (1.5 * random.nextGaussian());
        }
        int[] tokens = new int[rows];
        for (int i = 0; i < rows; i++) {
            tokens[i] = random.nextInt(vocab);
        }
        tokens[11] = -1; // padding at the end of sequence 1
        int[] prompts = {2, 0};
        float temperature = 0.9f;
        float lambda = 0.5f;
        float gradScale = 2f;
        long step = 7;
        long firstPosition = 3 * rows; // the fourth micro-batch of the step
        OneTokenRollout.Options base = OneTokenRollout.Options.defaults().withSamples(6).withBeta(0.3f)
                .withTemperature(temperature).withSeed(1234);
        // The composition: row b L + t predicts token t + 1 of sequence b, from the prompt length on.
        int[] targets = new int[rows];
        int counted = 0;
        for (int b = 0; b < sequences; b++) {
            for (int t = 0; t < length; t++) {
                int next = t + 1 < length ? tokens[b * length + t + 1] : -1;
                targets[b * length + t] = t + 1 >= prompts[b] ? next : -1;
                counted += targets[b * length + t] >= 0 ? 1 : 0;
            }
        }
        long seed = OtrLoss.stepSeed(1234, step);
        assertNotEquals(OtrLoss.stepSeed(1234, step + 1), seed, "each step draws anew");
        for (Backend backend : ConformanceBackends.all()) {
            OtrLoss loss = new OtrLoss(base.on(backend), lambda);
            try (Tensor logits = Tensor.of(values, rows, vocab); Tensor y = Tensor.ofInts(tokens, sequences, length);
                 TokenSampler.Result drawn = TokenSampler.sample(logits, TokenSampler.Options.defaults().withSamples(6)
                         .withTemperature(temperature).withSeed(seed).withFirstPosition(firstPosition).on(backend));
                 OtrLoss.Result r = loss.compute(logits, y, prompts, step, firstPosition, gradScale)) {
                int[] draws = TokenSamplerTest.ints(drawn.samples());
                double otr = 0;
                double ce = 0;
                double[] expectedGradient = new double[rows * vocab];
                for (int t = 0; t < rows; t++) {
                    if (targets[t] < 0) {
                        continue;
                    }
                    double[] z = new double[vocab];
                    for (int v = 0; v < vocab; v++) {
                        z[v] = values[t * vocab + v];
                    }
                    double[] row = OneTokenRolloutReference.row(z, vocab, temperature,
                            java.util.Arrays.copyOfRange(draws, t * 6, t * 6 + 6), targets[t], 0.3, false);
                    double[] logSoftmax = DivergenceReference.logSoftmax(z, temperature);
                    otr += row[0] / counted;
                    ce -= logSoftmax[targets[t]] / counted;
                    for (int v = 0; v < vocab; v++) {
                        double dCe = -((v == targets[t] ? 1 : 0) - Math.exp(logSoftmax[v])) / temperature / counted;
                        expectedGradient[t * vocab + v] = gradScale * (row[1 + v] / counted + lambda * dCe);
                    }
                }
                assertEquals(counted, r.tokens(), backend + " learned tokens");
                assertEquals(otr, r.rolloutLoss(), 1e-5, backend + " OTR part");
                assertEquals(ce, r.crossEntropy(), 1e-5, backend + " cross-entropy part");
                assertEquals(otr + lambda * ce, r.loss(), 2e-5, backend + " loss");
                float[] got = r.gradient().toFloatArray();
                for (int i = 0; i < got.length; i++) {
                    Approx.assertClose(backend + " gradient[" + i + "]", expectedGradient[i], got[i], 2e-6);
                }
            }
        }
    }

    /**
     * Two micro-batches of one step (the same rows at different positions) draw different noise,
     * and the same seed, step and position draw the same again. Before positions were passed, row
     * {@code r} of every micro-batch of a step drew identical uniforms.
     */
    @Test
    void microBatchesOfOneStepDrawDifferentlyAndReproducibly() {
        int sequences = 2;
        int length = 8;
        int vocab = 6;
        int rows = sequences * length;
        float[] values = new float[rows * vocab]; // flat rows: every draw is decided by the noise alone
        int[] tokens = new int[rows];
        for (int i = 0; i < rows; i++) {
            tokens[i] = i % vocab;
        }
        int[] prompts = {0, 0};
        OtrLoss loss = new OtrLoss(OneTokenRollout.Options.defaults().withSamples(8).withSeed(99), 0f);
        try (Tensor logits = Tensor.of(values, rows, vocab); Tensor y = Tensor.ofInts(tokens, sequences, length);
             OtrLoss.Result first = loss.compute(logits, y, prompts, 5, 0, 1f);
             OtrLoss.Result second = loss.compute(logits, y, prompts, 5, rows, 1f);
             OtrLoss.Result again = loss.compute(logits, y, prompts, 5, rows, 1f)) {
            float[] a = first.gradient().toFloatArray();
            float[] b = second.gradient().toFloatArray();
            org.junit.jupiter.api.Assertions.assertArrayEquals(b, again.gradient().toFloatArray(),
                    "the same seed, step and position draw the same");
            int differingRows = 0;
            for (int r = 0; r < rows; r++) {
                differingRows += java.util.Arrays.equals(a, r * vocab, (r + 1) * vocab, b, r * vocab, (r + 1) * vocab) ? 0 : 1;
            }
            // flat rows, 8 draws over 6 classes: two learned rows drawing the same multiset has probability about 4e-4
            assertTrue(differingRows >= rows - 2 - 1, "micro-batches of one step must draw anew: only "
                    + differingRows + " of " + (rows - 2) + " learned rows differ");
        }
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor logits = Tensor.of(new float[4 * 3], 4, 3); Tensor tokens = Tensor.ofInts(new int[] {0, 1, 2, 1}, 2, 2);
             Tensor flat = Tensor.ofInts(new int[4], 4)) {
            OtrLoss loss = OtrLoss.defaults();
            expect(() -> loss.compute(logits, flat, new int[] {0, 0}, 0, 0, 1f), "tokens: expected rank 2");
            expect(() -> loss.compute(logits, tokens, new int[] {0}, 0, 0, 1f), "promptLengths");
            expect(() -> loss.compute(logits, tokens, new int[] {0, 3}, 0, 0, 1f), "promptLengths[1]");
            expect(() -> loss.compute(logits, tokens, null, 0, 0, 1f), "promptLengths");
            expect(() -> new OtrLoss(OneTokenRollout.Options.defaults(), -1f), "sftWeight");
            expect(() -> new OtrLoss(null, 0f), "options");
            expect(() -> loss.compute(logits, tokens, new int[] {0, 0}, 0, -1, 1f), "firstPosition");
            try (Tensor big = Tensor.ofLongs(new long[] {0, 1, 2, (1L << 32) + 1}, 2, 2)) { // not class 1 after narrowing
                expect(() -> loss.compute(logits, big, new int[] {0, 0}, 0, 0, 1f), "tokens[1, 1]: expected a token in [0, 3)");
            }
            try (Tensor negative = Tensor.ofInts(new int[] {0, -2, 2, 1}, 2, 2)) {
                expect(() -> loss.compute(logits, negative, new int[] {0, 0}, 0, 0, 1f), "tokens[0, 1]");
            }
            try (Tensor wide = Tensor.of(new float[6 * 3], 6, 3)) {
                expect(() -> loss.compute(wide, tokens, new int[] {0, 0}, 0, 0, 1f), "logits");
            }
        }
    }
}
