package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.tokenkernels.methods.DacKlLoss;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** DAC-KL's loss (cross-entropy plus the band-clipped KL) against a float64 composition. */
class DacKlLossTest {

    @Test
    void matchesTheFloat64CompositionOnEveryBackend() {
        int[] labels = {3, -100, 7, 0, 399, -100};
        float[] lower = {0.05f, 0f, 0.2f, 0f, 0.1f, 0.5f};
        float[] upper = {0.9f, 1f, 0.7f, 1f, 0.95f, 0.6f};
        check(labels, lower, upper, 0.5f, 0.02f, 1.5f, true);
    }

    /** The hard band, whose bounds get no gradient, with and without the label kept. */
    @Test
    void hardBandWithAndWithoutTheLabelKept() {
        int[] labels = {12, 5, -100, 250, 0, 77};
        float[] lower = {0f, 0.3f, 0.4f, 0.1f, 0.02f, 0.6f};
        float[] upper = {0.8f, 1f, 0.5f, 0.6f, 0.5f, 0.95f};
        check(labels, lower, upper, 0.7f, 0f, 1f, true);
        check(labels, lower, upper, 0.7f, 0f, 1f, false);
        check(labels, lower, upper, 1.2f, 0.05f, 2f, false);
    }

    /** No labelled token: both means are over nothing, so the loss and every gradient are 0. */
    @Test
    void aBatchWithoutLabelledTokensIsZero() {
        int[] labels = {-100, -100, -100, -100, -100, -100};
        float[] lower = {0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f};
        float[] upper = {0.9f, 0.9f, 0.9f, 0.9f, 0.9f, 0.9f};
        check(labels, lower, upper, 0.5f, 0.02f, 1.5f, true);
    }

    private static void check(int[] labels, float[] lower, float[] upper, float klWeight, float gamma, float temperature,
                              boolean labelKept) {
        int rows = labels.length;
        int vocab = 400;
        SplittableRandom random = new SplittableRandom(5);
        float[] s = new float[rows * vocab];
        float[] t = new float[rows * vocab];
        for (int i = 0; i < s.length; i++) {
            t[i] = (float) (random.nextGaussian() * 3);
            s[i] = (float) (t[i] + random.nextGaussian());
        }
        float gradScale = 2f;
        // The paper's composition: mean CE over labelled tokens + lambda * mean clipped KL over them.
        int labelled = 0;
        for (int label : labels) {
            labelled += label == -100 ? 0 : 1;
        }
        double ce = 0;
        double kl = 0;
        double[][] gradient = new double[rows][vocab];
        double[] dl = new double[rows];
        double[] du = new double[rows];
        for (int i = 0; i < rows; i++) {
            if (labels[i] == -100) {
                continue;
            }
            double[] logp = TargetLogProbProperties.reference(s, i * vocab, vocab, 1f, labels[i]);
            var band = ClippedKlReference.row(s, t, i * vocab, vocab, temperature, false, gamma, lower[i], upper[i],
                    labelKept ? labels[i] : -1);
            ce -= logp[0];
            kl += band.loss();
            for (int j = 0; j < vocab; j++) {
                gradient[i][j] = gradScale * (-logp[1 + j] + klWeight * band.gradient()[j]) / labelled;
            }
            dl[i] = gradScale * klWeight * band.lowerGradient() / labelled;
            du[i] = gradScale * klWeight * band.upperGradient() / labelled;
        }
        double expectedCe = labelled == 0 ? 0 : ce / labelled;
        double expectedKl = labelled == 0 ? 0 : kl / labelled;
        String config = "gamma=" + gamma + " kept=" + labelKept + " labelled=" + labelled;
        for (Backend backend : ConformanceBackends.all()) {
            DacKlLoss on = new DacKlLoss(klWeight, gamma, temperature, labelKept, backend);
            String at = backend + " " + config;
            try (Tensor student = Tensor.of(s, rows, vocab); Tensor teacher = Tensor.of(t, rows, vocab);
                 Tensor y = Tensor.ofInts(labels, rows); Tensor l = Tensor.of(lower, rows); Tensor u = Tensor.of(upper, rows);
                 DacKlLoss.Result r = on.compute(student, teacher, y, l, u, gradScale)) {
                Approx.assertClose(at + " cross-entropy", expectedCe, r.crossEntropy(), 1e-5 * (1 + expectedCe));
                Approx.assertClose(at + " clipped KL", expectedKl, r.clippedKl(), 1e-4 * (1 + expectedKl));
                Approx.assertClose(at + " loss", expectedCe + klWeight * expectedKl, r.loss(),
                        1e-4 * (1 + expectedCe + expectedKl));
                for (int i = 0; i < rows; i++) {
                    for (int j = 0; j < vocab; j++) {
                        Approx.assertClose(at + " gradient[" + i + "][" + j + "]", gradient[i][j],
                                r.gradient().getFloat((long) i * vocab + j), 2e-6);
                    }
                    Approx.assertClose(at + " dL/dl[" + i + "]", dl[i], r.lowerGradient().getFloat(i),
                            1e-4 * (1 + Math.abs(dl[i])));
                    Approx.assertClose(at + " dL/du[" + i + "]", du[i], r.upperGradient().getFloat(i),
                            1e-4 * (1 + Math.abs(du[i])));
                }
            }
        }
    }

    @Test
    void badArgumentsAreClearErrors() {
        float gamma = 0.02f;
        float temperature = 1.5f;
        int rows = 2;
        int vocab = 4;
        float[] s = new float[rows * vocab];
        int[] labels = {1, 2};
        float[] lower = {0.2f, 0.3f};
        float[] upper = {0.1f, 0.9f};
        DacKlLoss loss = new DacKlLoss(1f, gamma, temperature, true, null);
        assertThrows(IllegalArgumentException.class, () -> new DacKlLoss(-1f, gamma, temperature, true, null));
        assertThrows(IllegalArgumentException.class, () -> new DacKlLoss(1f, Float.NaN, temperature, true, null));
        try (Tensor student = Tensor.of(s, rows, vocab); Tensor y = Tensor.ofInts(labels, rows);
             Tensor l = Tensor.of(lower, rows); Tensor u = Tensor.of(upper, rows)) {
            assertThrows(IllegalArgumentException.class, () -> loss.compute(student, student, y, l, u, 1f),
                    "lower above upper");
        }
    }
}
