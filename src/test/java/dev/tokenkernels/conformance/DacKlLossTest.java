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
        int rows = 6;
        int vocab = 400;
        SplittableRandom random = new SplittableRandom(5);
        float[] s = new float[rows * vocab];
        float[] t = new float[rows * vocab];
        for (int i = 0; i < s.length; i++) {
            t[i] = (float) (random.nextGaussian() * 3);
            s[i] = (float) (t[i] + random.nextGaussian());
        }
        int[] labels = {3, -100, 7, 0, 399, -100};
        float[] lower = {0.05f, 0f, 0.2f, 0f, 0.1f, 0.5f};
        float[] upper = {0.9f, 1f, 0.7f, 1f, 0.95f, 0.6f};
        float klWeight = 0.5f;
        float gamma = 0.02f;
        float temperature = 1.5f;
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
                    labels[i]);
            ce -= logp[0];
            kl += band.loss();
            for (int j = 0; j < vocab; j++) {
                gradient[i][j] = gradScale * (-logp[1 + j] + klWeight * band.gradient()[j]) / labelled;
            }
            dl[i] = gradScale * klWeight * band.lowerGradient() / labelled;
            du[i] = gradScale * klWeight * band.upperGradient() / labelled;
        }
        double expectedCe = ce / labelled;
        double expectedKl = kl / labelled;
        DacKlLoss loss = new DacKlLoss(klWeight, gamma, temperature, true, null);
        for (Backend backend : ConformanceBackends.all()) {
            DacKlLoss on = new DacKlLoss(klWeight, gamma, temperature, true, backend);
            try (Tensor student = Tensor.of(s, rows, vocab); Tensor teacher = Tensor.of(t, rows, vocab);
                 Tensor y = Tensor.ofInts(labels, rows); Tensor l = Tensor.of(lower, rows); Tensor u = Tensor.of(upper, rows);
                 DacKlLoss.Result r = on.compute(student, teacher, y, l, u, gradScale)) {
                Approx.assertClose(backend + " cross-entropy", expectedCe, r.crossEntropy(), 1e-5 * (1 + expectedCe));
                Approx.assertClose(backend + " clipped KL", expectedKl, r.clippedKl(), 1e-4 * (1 + expectedKl));
                Approx.assertClose(backend + " loss", expectedCe + klWeight * expectedKl, r.loss(),
                        1e-4 * (1 + expectedCe + expectedKl));
                for (int i = 0; i < rows; i++) {
                    for (int j = 0; j < vocab; j++) {
                        Approx.assertClose(backend + " gradient[" + i + "][" + j + "]", gradient[i][j],
                                r.gradient().getFloat((long) i * vocab + j), 2e-6);
                    }
                    Approx.assertClose(backend + " dL/dl[" + i + "]", dl[i], r.lowerGradient().getFloat(i),
                            1e-4 * (1 + Math.abs(dl[i])));
                    Approx.assertClose(backend + " dL/du[" + i + "]", du[i], r.upperGradient().getFloat(i),
                            1e-4 * (1 + Math.abs(du[i])));
                }
            }
        }
        assertThrows(IllegalArgumentException.class, () -> new DacKlLoss(-1f, gamma, temperature, true, null));
        assertThrows(IllegalArgumentException.class, () -> new DacKlLoss(1f, Float.NaN, temperature, true, null));
        try (Tensor student = Tensor.of(s, rows, vocab); Tensor y = Tensor.ofInts(labels, rows);
             Tensor l = Tensor.of(upper, rows); Tensor u = Tensor.of(lower, rows)) {
            assertThrows(IllegalArgumentException.class, () -> loss.compute(student, student, y, l, u, 1f),
                    "lower above upper");
        }
    }
}
