package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import dev.tokenkernels.methods.DapoLoss;
import dev.tokenkernels.methods.DeGrpoLoss;
import dev.tokenkernels.methods.GkdJsdLoss;
import dev.tokenkernels.methods.HapoLoss;
import dev.tokenkernels.methods.LpRegLoss;
import dev.tokenkernels.methods.SteerLoss;
import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.MemorySegment;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The methods that take a caller's gradient buffer write into it, and into their logits in place,
 * the gradient they return in a new tensor, bit for bit, with the same loss: every pass that reads
 * the logits (STEER's weights, Lp-Reg's log-probabilities) comes before the one that writes.
 */
class MethodGradientBufferTest {
    private static final int ROWS = 12;
    private static final int VOCAB = 300;
    private static final int[] STARTS = {0, 5, ROWS};

    private static float[] gaussians(long seed, int n, float mean, float scale) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = mean + scale * (float) random.nextGaussian();
        }
        return v;
    }

    private static int[] targets() {
        SplittableRandom random = new SplittableRandom(3);
        int[] y = new int[ROWS];
        for (int i = 0; i < ROWS; i++) {
            y[i] = random.nextInt(VOCAB);
        }
        y[4] = -100;
        return y;
    }

    /** A method call with its gradient into {@code buffer}, or into a new tensor copied to {@code copy}; its loss. */
    @FunctionalInterface
    private interface Call {
        float run(Tensor logits, Tensor buffer, Tensor copy);
    }

    /**
     * Runs {@code call} with a null buffer (a new gradient), an F32 buffer and the logits
     * themselves, and compares the loss and every gradient bit.
     */
    private static void check(String what, float[] logits, Call call) {
        try (Tensor z = Tensor.of(logits, ROWS, VOCAB); Tensor buffer = Tensor.allocate(DType.F32, ROWS, VOCAB);
             Tensor inPlace = Tensor.of(logits, ROWS, VOCAB); Tensor fresh = Tensor.allocate(DType.F32, ROWS, VOCAB)) {
            float expected = call.run(z, null, fresh);
            assertEquals(Float.floatToIntBits(expected), Float.floatToIntBits(call.run(z, buffer, null)),
                    what + " loss with a buffer");
            assertEquals(Float.floatToIntBits(expected), Float.floatToIntBits(call.run(inPlace, inPlace, null)),
                    what + " loss in place");
            for (long i = 0; i < (long) ROWS * VOCAB; i++) {
                int bits = Float.floatToIntBits(fresh.getFloat(i));
                assertEquals(bits, Float.floatToIntBits(buffer.getFloat(i)), what + " buffer [" + i + "]");
                assertEquals(bits, Float.floatToIntBits(inPlace.getFloat(i)), what + " in place [" + i + "]");
            }
        }
    }

    /** The loss of a policy result, its new gradient copied into {@code into} when asked. */
    private static float policy(PolicyLoss.Result r, Tensor into) {
        try (r) {
            copy(r.gradient(), into);
            return r.loss();
        }
    }

    private static float divergence(Divergence.Result r, Tensor into) {
        try (r) {
            copy(r.gradient(), into);
            return r.value();
        }
    }

    private static void copy(Tensor gradient, Tensor into) {
        if (into != null) {
            MemorySegment.copy(gradient.segment(), 0, into.segment(), 0, gradient.byteSize());
        }
    }

    @Test
    void policyMethodsWriteTheSameGradientIntoABufferAndInPlace() {
        float[] z = gaussians(1, ROWS * VOCAB, 0f, 2f);
        // The old policy put its mass on the targets: Lp-Reg's min-p proxy keeps them, above logp.
        float[] zOld = z.clone();
        int[] y0 = targets();
        for (int t = 0; t < ROWS; t++) {
            if (y0[t] >= 0) {
                zOld[t * VOCAB + y0[t]] += 10f;
            }
        }
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor y = Tensor.ofInts(y0, ROWS); Tensor old = Tensor.of(gaussians(2, ROWS, -6f, 1f), ROWS);
                 Tensor a = Tensor.of(gaussians(4, ROWS, 0f, 1f), ROWS);
                 Tensor entropy = Tensor.of(gaussians(5, ROWS, 3f, 0.5f), ROWS);
                 Tensor oldLogits = Tensor.of(zOld, ROWS, VOCAB)) {
                DapoLoss dapo = new DapoLoss(0.2f, 0.28f, 0.9f, backend);
                check(backend + " DAPO", z, (logits, buffer, copy) -> policy(buffer == null
                        ? dapo.compute(logits, y, old, a, STARTS, 0.5f)
                        : dapo.compute(logits, y, old, a, STARTS, 0.5f, buffer), copy));
                DeGrpoLoss degrpo = new DeGrpoLoss(0.001f, 0.2f, 1f, backend);
                check(backend + " DeGRPO", z, (logits, buffer, copy) -> policy(buffer == null
                        ? degrpo.compute(logits, y, old, a, STARTS, 2f)
                        : degrpo.compute(logits, y, old, a, STARTS, 2f, buffer), copy));
                SteerLoss steer = new SteerLoss(0.2f, 3f, 0.8f, 1.2f, SteerLoss.Mapping.LINEAR, 1f, backend);
                check(backend + " STEER", z, (logits, buffer, copy) -> policy(buffer == null
                        ? steer.compute(logits, y, old, a, STARTS, 1f)
                        : steer.compute(logits, y, old, a, STARTS, 1f, buffer), copy));
                LpRegLoss lpReg = new LpRegLoss(0.5f, 0.02f, 1f, 0.2f, 0.28f, 1f, backend);
                try (Tensor logits = Tensor.of(z, ROWS, VOCAB);
                     PolicyLoss.Result regularized = lpReg.compute(logits, oldLogits, y, old, a, STARTS, 1f);
                     PolicyLoss.Result plain = PolicyLoss.compute(logits, y, old, a, null, STARTS, lpReg.options())) {
                    assertNotEquals(plain.loss(), regularized.loss(), backend + " Lp-Reg regularizes some token");
                }
                check(backend + " Lp-Reg", z, (logits, buffer, copy) -> policy(buffer == null
                        ? lpReg.compute(logits, oldLogits, y, old, a, STARTS, 1f)
                        : lpReg.compute(logits, oldLogits, y, old, a, STARTS, 1f, buffer), copy));
                HapoLoss hapo = new HapoLoss(0.2f, 0.2f, 1f, 1f, 10f, false, backend);
                float[] rewards = {1f, 0f};
                int[] groups = {0, 2};
                check(backend + " HAPO", z, (logits, buffer, copy) -> policy(buffer == null
                        ? hapo.compute(logits, y, old, entropy, rewards, STARTS, groups, 0.7f)
                        : hapo.compute(logits, y, old, entropy, rewards, STARTS, groups, 0.7f, buffer), copy));
            }
        }
    }

    @Test
    void gkdJsdWritesTheSameGradientIntoABufferAndInPlace() {
        float[] z = gaussians(7, ROWS * VOCAB, 0f, 2f);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor y = Tensor.ofInts(targets(), ROWS);
                 Tensor teacher = Tensor.of(gaussians(8, ROWS * VOCAB, 0f, 2f), ROWS, VOCAB)) {
                GkdJsdLoss jsd = new GkdJsdLoss(0.3f, 1.2f, backend);
                check(backend + " GKD JSD", z, (logits, buffer, copy) -> divergence(buffer == null
                        ? jsd.compute(logits, teacher, y, 1f)
                        : jsd.compute(logits, teacher, y, 1f, buffer), copy));
            }
        }
    }

    @Test
    void aNullBufferIsAClearError() {
        try (Tensor z = Tensor.of(new float[6], 2, 3); Tensor y = Tensor.ofInts(new int[] {0, 1}, 2);
             Tensor o = Tensor.of(new float[2], 2)) {
            int[] starts = {0, 2};
            expect(() -> DapoLoss.defaults().compute(z, y, o, o, starts, 1f, null), "gradient");
            expect(() -> DeGrpoLoss.defaults().compute(z, y, o, o, starts, 1f, null), "gradient");
            expect(() -> SteerLoss.defaults().compute(z, y, o, o, starts, 1f, null), "gradient");
            expect(() -> LpRegLoss.defaults().compute(z, z, y, o, o, starts, 1f, null), "gradient");
            expect(() -> HapoLoss.defaults().compute(z, y, o, o, new float[] {1f}, starts, new int[] {0, 1}, 1f, null),
                    "gradient");
            expect(() -> GkdJsdLoss.defaults().compute(z, z, y, 1f, null), "gradient");
        }
    }
}
