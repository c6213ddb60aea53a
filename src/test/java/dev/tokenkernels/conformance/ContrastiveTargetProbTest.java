package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.ContrastiveTargetProb;
import dev.tokenkernels.ops.loss.ContrastiveTargetProb.Options;
import dev.tokenkernels.ops.loss.TargetLogProb;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Worked examples, special rows and bad inputs of ContrastiveTargetProb, on every backend. */
class ContrastiveTargetProbTest {

    /**
     * z_pos = (1, 0), z_neg = (0, 0), lambda 1: x = 2 z_pos - z_neg = (2, 0), p(0) = 1 / (1 + e^-2);
     * at T = 2, x = (1, 0) and p(1) = 1 / (1 + e).
     */
    @Test
    void twoClassesByHand() {
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor zp = Tensor.of(new float[] {1f, 0f, 1f, 0f}, 2, 2); Tensor zn = Tensor.of(new float[4], 2, 2);
                 Tensor y = Tensor.ofInts(new int[] {0, 1}, 2);
                 ContrastiveTargetProb.Result r = ContrastiveTargetProb.compute(zp, zn, y, Options.defaults().on(backend));
                 ContrastiveTargetProb.Result warm = ContrastiveTargetProb.compute(zp, zn, y,
                         Options.defaults().withTemperature(2f).on(backend))) {
                assertEquals(1 / (1 + Math.exp(-2)), r.prob().getFloat(0), 1e-6, backend + " p(0)");
                assertEquals(-Math.log1p(Math.exp(-2)), r.logProb().getFloat(0), 1e-6, backend + " logp(0)");
                assertEquals(1 / (1 + Math.exp(2)), r.prob().getFloat(1), 1e-6, backend + " p(1)");
                assertEquals(1 / (1 + Math.E), warm.prob().getFloat(1), 1e-6, backend + " p(1) at T = 2");
            }
        }
    }

    /**
     * lambda 0 is the positive model's own softmax: the same log-probabilities as TargetLogProb, whatever
     * classes the negative model masks.
     */
    @Test
    void lambdaZeroIsThePositiveModel() {
        SplittableRandom random = new SplittableRandom(3);
        int rows = 5;
        int vocab = 300;
        float[] zp = LogitStatsProperties.randomLogits(random, rows, vocab, 3f);
        float[] zn = LogitStatsProperties.randomLogits(random, rows, vocab, 3f);
        for (int k = 0; k < zn.length; k += 7) {
            zn[k] = Float.NEGATIVE_INFINITY; // the targets 0, 17 and 100 among them: masked in z_neg only
        }
        int[] targets = {0, 17, 299, 5, 100};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor p = Tensor.ofFloats(zp, DType.BF16, rows, vocab); Tensor n = Tensor.of(zn, rows, vocab);
                 Tensor y = Tensor.ofInts(targets, rows);
                 ContrastiveTargetProb.Result r = ContrastiveTargetProb.compute(p, n, y,
                         Options.defaults().withLambda(0f).on(backend));
                 TargetLogProb.Result t = TargetLogProb.compute(p, y, TargetLogProb.Options.defaults().on(backend))) {
                for (int i = 0; i < rows; i++) {
                    float expected = Math.min(t.logProb().getFloat(i), 0f);
                    Approx.assertClose(backend + " row " + i, expected, r.logProb().getFloat(i),
                            1e-6 * (1 + Math.abs(expected)));
                }
            }
        }
    }

    /**
     * A class masked in the negative model is masked in the contrast (not +inf) when lambda > 0 and
     * plays no part at lambda 0; NaN or +inf in either input gives NaN (+inf masked in the other model
     * included); a row with every class masked has logp -inf and p 0; an ignored row is 0 in both outputs.
     */
    @Test
    void specialRows() {
        float inf = Float.NEGATIVE_INFINITY;
        float pinf = Float.POSITIVE_INFINITY;
        float[] p = {0f, 0f, 0f, 1f, 2f, 3f, inf, inf, inf, 5f, 5f, 5f, 0f, 0f, 0f, 0f, pinf, 0f, 0f, 0f, 0f};
        float[] n = {0f, inf, 0f, 1f, Float.NaN, 3f, 0f, 0f, 0f, 0f, 0f, 0f, 0f, inf, 0f, 0f, inf, 0f, 0f, pinf, 0f};
        int[] targets = {0, 0, 1, -100, 1, 0, 0};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor zp = Tensor.of(p, 7, 3); Tensor zn = Tensor.of(n, 7, 3);
                 Tensor y = Tensor.ofInts(targets, 7);
                 ContrastiveTargetProb.Result r = ContrastiveTargetProb.compute(zp, zn, y, Options.defaults().on(backend));
                 ContrastiveTargetProb.Result zero = ContrastiveTargetProb.compute(zp, zn, y,
                         Options.defaults().withLambda(0f).on(backend))) {
                assertEquals(0.5f, r.prob().getFloat(0), 1e-6, backend + " masked in the negative model");
                assertEquals(1 / 3f, zero.prob().getFloat(0), 1e-6, backend + " z_neg's mask plays no part at lambda 0");
                assertEquals(1 / 3f, zero.prob().getFloat(4), 1e-6, backend + " a masked target in z_neg, lambda 0");
                for (ContrastiveTargetProb.Result any : new ContrastiveTargetProb.Result[] {r, zero}) {
                    String at = backend + (any == r ? " lambda 1" : " lambda 0");
                    assertTrue(Float.isNaN(any.logProb().getFloat(1)) && Float.isNaN(any.prob().getFloat(1)), at + " NaN");
                    assertEquals(Float.NEGATIVE_INFINITY, any.logProb().getFloat(2), at + " all masked");
                    assertEquals(0f, any.prob().getFloat(2), at + " all masked p");
                    assertEquals(0f, any.logProb().getFloat(3), at + " ignored");
                    assertEquals(0f, any.prob().getFloat(3), at + " ignored p");
                    assertTrue(Float.isNaN(any.logProb().getFloat(5)) && Float.isNaN(any.prob().getFloat(5)),
                            at + " +inf in z_pos where z_neg masks: NaN, got " + any.logProb().getFloat(5));
                    assertTrue(Float.isNaN(any.logProb().getFloat(6)) && Float.isNaN(any.prob().getFloat(6)),
                            at + " +inf in z_neg: NaN, got " + any.logProb().getFloat(6));
                }
                assertEquals(Float.NEGATIVE_INFINITY, r.logProb().getFloat(4), backend + " a masked target");
            }
        }
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor z = Tensor.of(new float[6], 2, 3); Tensor y = Tensor.ofInts(new int[] {0, 2}, 2);
             Tensor badY = Tensor.ofInts(new int[] {0, 3}, 2); Tensor narrow = Tensor.of(new float[4], 2, 2);
             Tensor shortRows = Tensor.of(new float[3], 1, 3); Tensor flat = Tensor.of(new float[6], 6);
             Tensor ints = Tensor.ofInts(new int[6], 2, 3)) {
            Options o = Options.defaults();
            expect(() -> ContrastiveTargetProb.compute(flat, z, y, o), "positive: expected rank 2");
            expect(() -> ContrastiveTargetProb.compute(z, narrow, y, o), "negative");
            expect(() -> ContrastiveTargetProb.compute(z, shortRows, y, o), "negative");
            expect(() -> ContrastiveTargetProb.compute(z, ints, y, o), "negative: expected dtype");
            expect(() -> ContrastiveTargetProb.compute(z, z, badY, o), "targets[1]");
            expect(() -> ContrastiveTargetProb.compute(z, null, y, o), "negative");
            expect(() -> ContrastiveTargetProb.compute(z, z, null, o), "targets");
            expect(() -> ContrastiveTargetProb.compute(z, z, y, null), "options");
            expect(() -> ContrastiveTargetProb.compute(z, z, y, o.withLambda(-1f)), "lambda");
            expect(() -> ContrastiveTargetProb.compute(z, z, y, o.withLambda(Float.NaN)), "lambda");
            expect(() -> ContrastiveTargetProb.compute(z, z, y, o.withTemperature(0f)), "temperature");
            expect(() -> ContrastiveTargetProb.compute(z, z, y, o.withTemperature(0x1p-130f)), "reciprocal 1/T is finite");
        }
    }
}
