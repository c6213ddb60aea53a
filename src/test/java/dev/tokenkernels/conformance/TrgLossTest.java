package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.tokenkernels.methods.TrgLoss;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** TRG's relation term against a float64 composition: lambda times the mean row KL over the valid tokens. */
class TrgLossTest {

    @Test
    void matchesTheFloat64CompositionOnEveryBackend() {
        int batch = 3;
        int tokens = 6;
        int ds = 5;
        int dt = 4;
        int[] lengths = {6, 4, 1};
        SplittableRandom random = new SplittableRandom(8);
        float[] hs = new float[batch * tokens * ds];
        float[] ht = new float[batch * tokens * dt];
        for (int k = 0; k < hs.length; k++) {
            hs[k] = (float) random.nextGaussian();
        }
        for (int k = 0; k < ht.length; k++) {
            ht[k] = (float) random.nextGaussian();
        }
        float weight = 0.7f;
        float tau = 0.2f;
        float gradScale = 1.5f;
        int valid = 11;
        double total = 0;
        double[][][] gradient = new double[batch][][];
        double maxGradient = 0;
        for (int b = 0; b < batch; b++) {
            var sequence = RelationGraphKlReference.sequence(hs, ht, b, tokens, ds, dt, lengths[b], tau, false,
                    gradScale * weight / valid);
            for (double rowLoss : sequence.loss()) {
                total += rowLoss;
            }
            gradient[b] = sequence.gradient();
            for (double[] row : sequence.gradient()) {
                for (double g : row) {
                    maxGradient = Math.max(maxGradient, Math.abs(g));
                }
            }
        }
        double expected = weight * total / valid;
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor s = Tensor.of(hs, batch, tokens, ds); Tensor t = Tensor.of(ht, batch, tokens, dt);
                 Tensor n = Tensor.ofInts(lengths, batch);
                 TrgLoss.Result r = new TrgLoss(weight, tau, false, backend).compute(s, t, n, gradScale)) {
                assertEquals(valid, r.validTokens(), backend + " valid tokens");
                assertEquals(expected, r.loss(), 1e-5 * (1 + expected), backend + " loss");
                for (int b = 0; b < batch; b++) {
                    for (int i = 0; i < tokens; i++) {
                        for (int x = 0; x < ds; x++) {
                            double want = i < lengths[b] ? gradient[b][i][x] : 0;
                            assertEquals(want, r.gradient().getFloat(((long) b * tokens + i) * ds + x),
                                    1e-5 * maxGradient, backend + " gradient[" + b + "][" + i + "][" + x + "]");
                        }
                    }
                }
            }
        }
        assertThrows(IllegalArgumentException.class, () -> new TrgLoss(-1f, tau, false, null));
        assertThrows(IllegalArgumentException.class, () -> new TrgLoss(1f, 0f, false, null));
    }
}
