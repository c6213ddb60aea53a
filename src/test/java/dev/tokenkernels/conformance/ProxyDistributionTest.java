package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.ProxyDistribution;
import dev.tokenkernels.ops.loss.ProxyDistribution.Options;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.ValueLayout;
import org.junit.jupiter.api.Test;

/** Worked examples, special rows and every bad input of {@link ProxyDistribution}, on every backend. */
class ProxyDistributionTest {

    private static int count(ProxyDistribution.Result r, int row) {
        return r.keptCount().segment().getAtIndex(ValueLayout.JAVA_INT, row);
    }

    /** p = (1, 2, 4, 8) / 15. */
    @Test
    void fourClassExampleByHand() {
        float[] z = {0f, (float) Math.log(2), (float) Math.log(4), (float) Math.log(8)};
        try (Tensor logits = Tensor.of(z, 1, 4); Tensor top = Tensor.ofInts(new int[] {3}, 1);
             Tensor bottom = Tensor.ofInts(new int[] {0}, 1)) {
            for (Backend b : ConformanceBackends.all()) {
                // min-p 0.2: keep p >= 0.2 * 8/15, i.e. classes 2, 4, 8.
                try (var r = ProxyDistribution.compute(logits, top, Options.minP(0.2f).on(b))) {
                    assertEquals(3, count(r, 0), b + "");
                    assertEquals(Math.log(14), r.keptLse().getFloat(0), 1e-6, b + "");
                    assertEquals(Math.log(8.0 / 14), r.logProb().getFloat(0), 1e-6, b + "");
                }
                try (var r = ProxyDistribution.compute(logits, bottom, Options.minP(0.2f).on(b))) {
                    assertEquals(Float.NEGATIVE_INFINITY, r.logProb().getFloat(0), b + " a filtered token");
                }
                // fixed 0.2: keep p >= 0.2, i.e. 4/15 and 8/15.
                try (var r = ProxyDistribution.compute(logits, top, Options.fixed(0.2f).on(b))) {
                    assertEquals(2, count(r, 0), b + "");
                    assertEquals(Math.log(8.0 / 12), r.logProb().getFloat(0), 1e-6, b + "");
                }
                // fixed 0.9 keeps nothing by the rule, so only the most likely class.
                try (var r = ProxyDistribution.compute(logits, top, Options.fixed(0.9f).on(b))) {
                    assertEquals(1, count(r, 0), b + "");
                    assertEquals(0f, r.logProb().getFloat(0), 1e-7, b + "");
                }
                // kappa = 1 keeps only the max as well; with temperature 2 nothing changes for it.
                try (var r = ProxyDistribution.compute(logits, top, Options.minP(1f).withTemperature(2f).on(b))) {
                    assertEquals(1, count(r, 0), b + "");
                }
            }
        }
    }

    @Test
    void specialRowsAndIgnoredTargets() {
        float inf = Float.NEGATIVE_INFINITY;
        float[] z = {inf, inf, inf, 1f, Float.NaN, 2f, 0f, 1f, 2f};
        try (Tensor logits = Tensor.of(z, 3, 3); Tensor y = Tensor.ofInts(new int[] {0, 1, -100}, 3)) {
            for (Backend b : ConformanceBackends.all()) {
                try (var r = ProxyDistribution.compute(logits, y, Options.minP(0.02f).on(b))) {
                    assertEquals(Float.NEGATIVE_INFINITY, r.keptLse().getFloat(0), b + " masked row");
                    assertEquals(Float.NEGATIVE_INFINITY, r.logProb().getFloat(0), b + " masked row");
                    assertEquals(0, count(r, 0), b + "");
                    assertTrue(Float.isNaN(r.logProb().getFloat(1)) && Float.isNaN(r.keptLse().getFloat(1)), b + " NaN row");
                    assertEquals(0f, r.logProb().getFloat(2), b + " ignored target");
                    assertEquals(3, count(r, 2), b + "");
                }
            }
        }
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor z = Tensor.of(new float[6], 2, 3); Tensor y = Tensor.ofInts(new int[] {0, 1}, 2);
             Tensor flat = Tensor.of(new float[6], 6); Tensor ints = Tensor.ofInts(new int[6], 2, 3);
             Tensor shortY = Tensor.ofInts(new int[] {0}, 1); Tensor floatY = Tensor.of(new float[2], 2);
             Tensor badY = Tensor.ofInts(new int[] {0, 3}, 2)) {
            expect(() -> ProxyDistribution.compute(z, y, Options.minP(0f)), "kappa");
            expect(() -> ProxyDistribution.compute(z, y, Options.minP(1.5f)), "kappa");
            expect(() -> ProxyDistribution.compute(z, y, Options.minP(Float.NaN)), "kappa");
            expect(() -> ProxyDistribution.compute(z, y, Options.fixed(-0.1f)), "tau");
            expect(() -> ProxyDistribution.compute(z, y, Options.minP(0.02f).withTemperature(0f)), "temperature");
            expect(() -> ProxyDistribution.compute(z, y, Options.minP(0.02f).withTemperature(0x1p-130f)), "reciprocal 1/T is finite");
            expect(() -> ProxyDistribution.compute(flat, y, Options.minP(0.02f)), "logits: expected rank 2");
            expect(() -> ProxyDistribution.compute(ints, y, Options.minP(0.02f)), "logits: expected dtype");
            expect(() -> ProxyDistribution.compute(z, shortY, Options.minP(0.02f)), "targets");
            expect(() -> ProxyDistribution.compute(z, floatY, Options.minP(0.02f)), "targets: expected dtype");
            expect(() -> ProxyDistribution.compute(z, badY, Options.minP(0.02f)), "targets[1]");
            expect(() -> ProxyDistribution.compute(z, y, null), "options");
            expect(() -> ProxyDistribution.compute(z, null, Options.minP(0.02f)), "targets");
        }
        Tensor closed = Tensor.ofFloats(new float[6], DType.BF16, 2, 3);
        closed.close();
        try (Tensor y = Tensor.ofInts(new int[] {0, 1}, 2)) {
            assertThrows(IllegalStateException.class, () -> ProxyDistribution.compute(closed, y, Options.minP(0.02f)));
        }
    }

    private static void expect(Runnable call, String inMessage) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call::run);
        assertTrue(e.getMessage().contains(inMessage), "message '" + e.getMessage() + "' should contain '" + inMessage + "'");
    }
}
