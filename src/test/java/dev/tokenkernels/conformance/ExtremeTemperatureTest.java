package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertAll;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.ops.loss.LogitStats;
import dev.tokenkernels.ops.loss.TargetLogProb;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Tensor;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/**
 * Temperatures at the ends of the allowed range, where the CPU's base-2 softmax sweeps scale by
 * {@code log2(e) / T} (see {@code ExponentScale}): the smallest T, and logits beyond half the float
 * range at a huge T. Every backend must agree with float64 there.
 */
class ExtremeTemperatureTest {

    /**
     * Checks.temperature accepted T down to about 2.9e-39 (1/T finite), but for T below about
     * 4.2e-39 the sweeps' log2(e)/T overflows to +inf and (z - m) * inf = 0 * inf = NaN at the max
     * (T = 3.5e-39: NaN on the CPU, 0 on cuda-emu); such T are now rejected. Just above the bound,
     * x = z / T = (0, -2.35e38): p = (1, 0), lse = 0, entropy 0, log p[0] = 0 on every backend.
     */
    @Test
    void tinyTemperatureWhoseReciprocalIsFinite() {
        try (Tensor z = Tensor.of(new float[] {0f, -1f}, 1, 2)) {
            assertThrows(IllegalArgumentException.class,
                    () -> LogitStats.compute(z, null, LogitStats.Options.defaults().withTemperature(3.5e-39f)));
        }
        float t = 4.25e-39f;
        List<Executable> checks = new ArrayList<>();
        try (Tensor z = Tensor.of(new float[] {0f, -1f}, 1, 2); Tensor y = Tensor.ofLongs(new long[] {0}, 1);
             Tensor yi = Tensor.ofInts(new int[] {0}, 1)) {
            for (Backend backend : ConformanceBackends.all()) {
                try (var r = LogitStats.compute(z, y, LogitStats.Options.defaults().withTemperature(t).on(backend));
                     var lp = TargetLogProb.compute(z, yi,
                             TargetLogProb.Options.defaults().withTemperature(t).on(backend))) {
                    float lse = r.lse().getFloat(0);
                    float h = r.entropy().getFloat(0);
                    float logp = lp.logProb().getFloat(0);
                    System.out.println("tinyT " + backend + " lse=" + lse + " entropy=" + h + " targetLogProb=" + logp);
                    checks.add(() -> assertEquals(0f, lse, 1e-6f, backend + " LogitStats lse"));
                    checks.add(() -> assertEquals(0f, h, 1e-6f, backend + " LogitStats entropy"));
                    checks.add(() -> assertEquals(0f, logp, 1e-6f, backend + " TargetLogProb logp"));
                }
            }
        }
        assertAll(checks);
    }

    /**
     * Finite logits of magnitude 2e38 at T = 1e38: x = (2, -2), p = (0.982, 0.018). fp32(z - m) =
     * -4e38 overflows to -inf, so the CPU gives the second class p = 0.
     */
    @Test
    void hugeLogitsAtHugeTemperature() {
        float t = 1e38f;
        double lseExpected = 2 + Math.log1p(Math.exp(-4));
        double p1 = Math.exp(-2 - lseExpected);
        double p0 = 1 - p1;
        double hExpected = -(p0 * Math.log(p0) + p1 * Math.log(p1));
        List<Executable> checks = new ArrayList<>();
        try (Tensor z = Tensor.of(new float[] {2e38f, -2e38f}, 1, 2); Tensor y = Tensor.ofLongs(new long[] {1}, 1)) {
            for (Backend backend : ConformanceBackends.all()) {
                try (var r = LogitStats.compute(z, y, LogitStats.Options.defaults().withTemperature(t).on(backend))) {
                    float lse = r.lse().getFloat(0);
                    float h = r.entropy().getFloat(0);
                    float logp = r.logProb().getFloat(0);
                    System.out.println("hugeZ " + backend + " lse=" + lse + " entropy=" + h + " logProb[1]=" + logp
                            + " (expected " + lseExpected + ", " + hExpected + ", " + Math.log(p1) + ")");
                    checks.add(() -> assertEquals(lseExpected, lse, 1e-5, backend + " lse"));
                    checks.add(() -> assertEquals(hExpected, h, 1e-5, backend + " entropy"));
                    checks.add(() -> assertEquals(Math.log(p1), logp, 1e-5, backend + " logProb"));
                }
                try (Tensor yi = Tensor.ofInts(new int[] {1}, 1);
                     var lp = TargetLogProb.compute(z, yi, TargetLogProb.Options.defaults().withTemperature(t).on(backend))) {
                    float logp = lp.logProb().getFloat(0);
                    System.out.println("hugeZ " + backend + " TargetLogProb[1]=" + logp);
                    checks.add(() -> assertEquals(Math.log(p1), logp, 1e-5, backend + " TargetLogProb"));
                }
                // teacher x = (-2, 2): q = (p1, p0), KL(q || p) = (p0 - p1) * 4
                try (Tensor zt = Tensor.of(new float[] {-2e38f, 2e38f}, 1, 2);
                     var r = Divergence.compute(z, zt, Divergence.Options.forwardKl().withTemperature(t).on(backend))) {
                    float v = r.value();
                    System.out.println("hugeZ " + backend + " KL=" + v + " (expected " + (p0 - p1) * 4 + ")");
                    checks.add(() -> assertEquals((p0 - p1) * 4, v, 1e-5, backend + " forward KL"));
                }
                double m0 = 0.5 * (p0 + p1);
                double jsd = 0.5 * (p1 * Math.log(p1 / m0) + p0 * Math.log(p0 / m0))
                        + 0.5 * (p0 * Math.log(p0 / m0) + p1 * Math.log(p1 / m0));
                for (var o : List.of(Divergence.Options.reverseKl(), Divergence.Options.jsd(0.5f))) {
                    double expected = o.kind() == Divergence.Kind.JSD ? jsd : (p0 - p1) * 4;
                    try (Tensor zt = Tensor.of(new float[] {-2e38f, 2e38f}, 1, 2);
                         var r = Divergence.computeWithGradient(z, zt, o.withTemperature(t).on(backend), 1f)) {
                        float v = r.value();
                        System.out.println("hugeZ " + backend + " " + o.kind() + "=" + v + " (expected " + expected + ")");
                        checks.add(() -> assertEquals(expected, v, 1e-5, backend + " " + o.kind()));
                    }
                }
            }
        }
        assertAll(checks);
    }

    /** Forward KL of the same row against itself is 0 (at T = 3.5e-39, before the check, NaN on the CPU). */
    @Test
    void divergenceAtTinyTemperature() {
        float t = 4.25e-39f;
        List<Executable> checks = new ArrayList<>();
        try (Tensor s = Tensor.of(new float[] {0f, -1f}, 1, 2); Tensor q = Tensor.of(new float[] {0f, -1f}, 1, 2)) {
            for (Backend backend : ConformanceBackends.all()) {
                try (var r = Divergence.compute(s, q, Divergence.Options.forwardKl().withTemperature(t).on(backend))) {
                    float v = r.value();
                    System.out.println("divTinyT " + backend + " KL=" + v);
                    checks.add(() -> assertEquals(0f, v, 1e-6f, backend + " forward KL"));
                }
            }
        }
        assertAll(checks);
    }
}
