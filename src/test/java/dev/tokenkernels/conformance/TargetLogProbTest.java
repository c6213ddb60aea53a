package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.TargetLogProb;
import dev.tokenkernels.ops.loss.TargetLogProb.Options;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import org.junit.jupiter.api.Test;

/** A worked example, special rows and bad inputs of TargetLogProb, on every backend. */
class TargetLogProbTest {

    /** Logits (0, ln 3) at T = 1: p = (1/4, 3/4); target 0: logp = ln(1/4), gradient c (3/4, -3/4). */
    @Test
    void twoClassesByHand() {
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor z = Tensor.of(new float[] {0f, (float) Math.log(3)}, 1, 2); Tensor y = Tensor.ofInts(new int[] {0}, 1);
                 Tensor c = Tensor.of(new float[] {2f}, 1);
                 TargetLogProb.Result r = TargetLogProb.computeWithGradient(z, y, c, Options.defaults().on(backend))) {
                assertEquals(Math.log(0.25), r.logProb().getFloat(0), 1e-6, backend + " logp");
                assertEquals(1.5f, r.gradient().getFloat(0), 1e-6, backend + " gradient[0]");
                assertEquals(-1.5f, r.gradient().getFloat(1), 1e-6, backend + " gradient[1]");
            }
            try (Tensor z = Tensor.of(new float[] {0f, (float) Math.log(3)}, 1, 2); Tensor y = Tensor.ofInts(new int[] {0}, 1);
                 TargetLogProb.Result r = TargetLogProb.compute(z, y, Options.defaults().on(backend))) {
                assertNull(r.gradient(), backend + " no coefficients, no gradient");
                assertEquals(Math.log(0.25), r.logProb().getFloat(0), 1e-6, backend + " logp without gradient");
            }
        }
    }

    @Test
    void specialRows() {
        float inf = Float.POSITIVE_INFINITY;
        float[] z = {1f, Float.NaN, 0f, -inf, -inf, -inf, 2f, -inf, 1f};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor logits = Tensor.of(z, 3, 3); Tensor y = Tensor.ofInts(new int[] {0, 1, 1}, 3);
                 Tensor c = Tensor.of(new float[] {1f, 1f, 1f}, 3);
                 TargetLogProb.Result r = TargetLogProb.computeWithGradient(logits, y, c, Options.defaults().on(backend))) {
                assertTrue(Float.isNaN(r.logProb().getFloat(0)), backend + " NaN row");
                assertTrue(Float.isNaN(r.gradient().getFloat(2)), backend + " NaN row gradient");
                assertEquals(Float.NEGATIVE_INFINITY, r.logProb().getFloat(1), backend + " masked row");
                assertTrue(Float.isNaN(r.gradient().getFloat(3)), backend + " masked row gradient");
                assertEquals(Float.NEGATIVE_INFINITY, r.logProb().getFloat(2), backend + " a masked target");
                assertEquals(-1f / (1 + (float) Math.exp(-1)), r.gradient().getFloat(6), 1e-6,
                        backend + " a masked target still has a gradient");
                assertEquals(1f, r.gradient().getFloat(7), 1e-6, backend + " the masked target's own term");
            }
        }
    }

    /**
     * Rows of coefficient 0 do not count: special ones (all -inf, NaN) leave an accumulated
     * gradient as it is and write zeros otherwise, and an ordinary one adds nothing.
     */
    @Test
    void rowsOfCoefficientZeroLeaveTheGradientAlone() {
        float inf = Float.POSITIVE_INFINITY;
        float[] z = {-inf, -inf, -inf, 1f, Float.NaN, 0f, 0.5f, -1f, 2f};
        float[] before = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor logits = Tensor.of(z, 3, 3); Tensor y = Tensor.ofInts(new int[] {0, 2, 1}, 3);
                 Tensor c = Tensor.of(new float[] {0f, 0f, 0f}, 3); Tensor acc = Tensor.of(before.clone(), 3, 3);
                 Tensor out = Tensor.of(new float[9], 3, 3);
                 TargetLogProb.Result added = TargetLogProb.computeWithGradient(logits, y, c,
                         Options.defaults().accumulating().on(backend), acc);
                 TargetLogProb.Result written = TargetLogProb.computeWithGradient(logits, y, c,
                         Options.defaults().on(backend), out)) {
                for (int k = 0; k < 9; k++) {
                    assertEquals(before[k], acc.getFloat(k), backend + " accumulated [" + k + "]");
                    assertEquals(0f, out.getFloat(k), backend + " written [" + k + "]");
                }
                assertEquals(Float.NEGATIVE_INFINITY, added.logProb().getFloat(0), backend + " logp of the masked row");
                assertTrue(Float.isNaN(written.logProb().getFloat(1)), backend + " logp of the NaN row");
            }
        }
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor z = Tensor.of(new float[6], 2, 3); Tensor y = Tensor.ofInts(new int[] {0, 2}, 2);
             Tensor badY = Tensor.ofInts(new int[] {0, 3}, 2); Tensor c = Tensor.of(new float[] {1f, 1f}, 2);
             Tensor nanC = Tensor.of(new float[] {1f, Float.NaN}, 2); Tensor shortC = Tensor.of(new float[] {1f}, 1);
             Tensor wrongGrad = Tensor.of(new float[8], 2, 4); Tensor intGrad = Tensor.ofInts(new int[6], 2, 3);
             Tensor flat = Tensor.of(new float[6], 6)) {
            Options o = Options.defaults();
            expect(() -> TargetLogProb.compute(flat, y, o), "logits: expected rank 2");
            expect(() -> TargetLogProb.compute(z, badY, o), "targets[1]");
            expect(() -> TargetLogProb.compute(z, null, o), "targets");
            expect(() -> TargetLogProb.compute(z, y, o.withTemperature(0f)), "temperature");
            expect(() -> TargetLogProb.compute(z, y, o.withTemperature(0x1p-130f)), "reciprocal 1/T is finite");
            expect(() -> TargetLogProb.compute(z, y, null), "options");
            expect(() -> TargetLogProb.compute(z, y, o.accumulating()), "accumulate");
            expect(() -> TargetLogProb.computeWithGradient(z, y, nanC, o), "coefficients[1]");
            expect(() -> TargetLogProb.computeWithGradient(z, y, shortC, o), "coefficients");
            expect(() -> TargetLogProb.computeWithGradient(z, y, c, o.accumulating()), "gradient");
            expect(() -> TargetLogProb.computeWithGradient(z, y, c, o.accumulating(), z), "accumulating");
            expect(() -> TargetLogProb.computeWithGradient(z, y, c, o, wrongGrad), "gradient");
            expect(() -> TargetLogProb.computeWithGradient(z, y, c, o, intGrad), "gradient: expected dtype");
        }
    }
}
