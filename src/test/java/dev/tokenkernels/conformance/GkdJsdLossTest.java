package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.tokenkernels.methods.GkdJsdLoss;
import dev.tokenkernels.ops.loss.Divergence.Kind;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** GKD's generalized JSD loss against a float64 composition of the paper's formula. */
class GkdJsdLossTest {

    @Test
    void matchesTheFloat64CompositionOnEveryBackend() {
        int rows = 5;
        int vocab = 300;
        SplittableRandom random = new SplittableRandom(11);
        float[] s = new float[rows * vocab];
        float[] t = new float[rows * vocab];
        for (int i = 0; i < s.length; i++) {
            s[i] = (float) (random.nextGaussian() * 2);
            t[i] = (float) (s[i] + random.nextGaussian());
        }
        int[] labels = {3, -100, 7, 0, -100};
        float beta = 0.3f;
        float temperature = 0.8f;
        float gradScale = 1.5f;
        // The paper's loss: the mean over labelled tokens of the per-token generalized JSD.
        double total = 0;
        int counted = 0;
        double[][] gradient = new double[rows][];
        for (int i = 0; i < rows; i++) {
            if (labels[i] == -100) {
                continue;
            }
            double[] zs = new double[vocab];
            double[] zt = new double[vocab];
            for (int j = 0; j < vocab; j++) {
                zs[j] = s[i * vocab + j];
                zt[j] = t[i * vocab + j];
            }
            DivergenceReference.Row row = DivergenceReference.row(zs, zt, Kind.JSD, beta, temperature);
            total += row.loss();
            gradient[i] = row.gradient();
            counted++;
        }
        double expected = total / counted;
        try (Tensor student = Tensor.of(s, rows, vocab); Tensor teacher = Tensor.of(t, rows, vocab);
             Tensor y = Tensor.ofInts(labels, rows)) {
            for (Backend b : ConformanceBackends.all()) {
                try (var r = new GkdJsdLoss(beta, temperature, b).compute(student, teacher, y, gradScale)) {
                    Approx.assertClose(b + " loss", expected, r.value(), 1e-5 * (1 + Math.abs(expected)));
                    for (int i = 0; i < rows; i++) {
                        for (int j = 0; j < vocab; j++) {
                            double g = gradient[i] == null ? 0 : gradScale * gradient[i][j] / counted;
                            Approx.assertClose(b + " gradient[" + i + "," + j + "]", g,
                                    r.gradient().getFloat((long) i * vocab + j), 1e-6 + 1e-4 * Math.abs(g));
                        }
                    }
                }
            }
        }
    }

    @Test
    void badParametersAreClearErrors() {
        assertThrows(IllegalArgumentException.class, () -> new GkdJsdLoss(1.5f, 1f, null));
        assertThrows(IllegalArgumentException.class, () -> new GkdJsdLoss(0.5f, 0f, null));
        assertThrows(IllegalArgumentException.class, () -> GkdJsdLoss.defaults().compute(null, null, null, 1f));
        // the mean is over labelled tokens: no labels is an error, not a mean over every row
        try (Tensor s = Tensor.of(new float[] {0, 1, 2, 3, 0, 0}, 2, 3);
             Tensor t = Tensor.of(new float[] {1, 0, 2, 0, 3, 0}, 2, 3)) {
            BadInput.expect(() -> GkdJsdLoss.defaults().compute(s, t, null, 1f).close(), "labels");
        }
    }
}
