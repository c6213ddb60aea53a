package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.methods.HapoLoss;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.select.EntropyNormalization;
import dev.tokenkernels.ops.select.EntropyNormalization.Options;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * Review of HAPO's path (issue 5) on edge inputs: entropy normalization, the token-level group
 * advantage, the adaptive clipping and HapoLoss end to end. Where a test's doc starts "Was:", it
 * failed on the code as reviewed (the defect described is fixed); the others cover cases no other
 * test did.
 */
class HapoEdgeInputsTest {
    private static final int IGNORE = -100;

    /** Entropies for the 128-bit child JVM: log-normal, so h_hat spans [-1, 1]. */
    private static float[] childEntropies() {
        SplittableRandom random = new SplittableRandom(11);
        float[] h = new float[100];
        for (int i = 0; i < h.length; i++) {
            h[i] = (float) Math.exp(random.nextGaussian() * 2 - 1);
        }
        return h;
    }

    /**
     * Was: On a machine whose preferred vector is 128 bits (ARM NEON, or x86 run with
     * -XX:MaxVectorSize=16) the CPU backend cannot normalize entropies:
     * EntropyNormalizationCpu falls back to SPECIES_256 when the preferred species has fewer than
     * 8 lanes, but hands those vectors to VectorMath.log, whose constants are of SPECIES_PREFERRED:
     * ClassCastException ("required Species[float, 8, S_256_BIT] but found Species[float, 4,
     * S_128_BIT]"), so HapoLoss and samplingTemperatures fail on the CPU there.
     */
    @Test
    void cpuBackendNormalizesWith128BitVectors() throws Exception {
        String out = ChildJvm.run(HapoEdgeInputsTest.class, List.of("-XX:MaxVectorSize=16"));
        float[] h = childEntropies();
        double[] ref = EntropyNormalizationReference.compute(h, null, 0.8, true, false);
        List<String> lines = out.lines().filter(l -> !l.isBlank()).toList();
        assertEquals(h.length, lines.size(), "one h_hat per line: " + out);
        for (int i = 0; i < h.length; i++) {
            assertEquals(ref[i], Float.parseFloat(lines.get(i)), 1e-5, "h_hat[" + i + "] with 128-bit vectors");
        }
    }

    /** Run by the child JVM of {@link #cpuBackendNormalizesWith128BitVectors}: h_hat on the CPU, one per line. */
    public static void main(String[] args) {
        float[] h = childEntropies();
        try (CpuBackend cpu = CpuBackend.withThreads(1); Tensor entropy = Tensor.of(h, h.length);
             EntropyNormalization.Result r = EntropyNormalization.compute(entropy, null, Options.defaults().on(cpu))) {
            for (int i = 0; i < h.length; i++) {
                System.out.println(r.normalized().getFloat(i));
            }
        }
    }

    /** 64 consecutive floats above 148.41316 (e^5): entropies that differ by 1 ulp each. */
    private static float[] nearlyEqualEntropies() {
        float[] h = new float[64];
        float v = 148.41316f;
        for (int i = 0; i < h.length; i++) {
            v = Math.nextUp(v);
            h[i] = v;
        }
        return h;
    }

    /**
     * Was: EntropyNormalization's Javadoc: "h_hat agrees across backends within a few 1e-7
     * absolute". With entropies whose logs are within a few ulps of each other, e - pivot is the
     * difference of two fp32 logs rounded by different log implementations (VectorMath.log, within
     * 3 ulp, on the CPU; logf in CUDA), and h_hat = d / max d turns those ulps into O(0.1):
     * token 15 gets -0.636 on the CPU and -0.727 on cuda-emu.
     */
    @Test
    void nearlyEqualEntropiesAgreeAcrossBackends() {
        float[] h = nearlyEqualEntropies();
        float[][] got = new float[ConformanceBackends.all().size()][];
        List<Backend> backends = ConformanceBackends.all();
        for (int b = 0; b < backends.size(); b++) {
            try (Tensor e = Tensor.of(h, h.length);
                 EntropyNormalization.Result r = EntropyNormalization.compute(e, null,
                         Options.defaults().on(backends.get(b)))) {
                got[b] = r.normalized().toFloatArray();
            }
        }
        for (int b = 1; b < backends.size(); b++) {
            for (int i = 0; i < h.length; i++) {
                assertEquals(got[0][i], got[b][i], 1e-6, backends.get(0) + " vs " + backends.get(b) + " h_hat[" + i + "]");
            }
        }
    }

    /**
     * Was: The same entropies against the spec's formula in float64: e is rounded to fp32 before
     * the pivot is subtracted, so the cancellation leaves h_hat off by up to 0.18 on every backend
     * (a log of the ratio H / H_pivot, or float64 logs, would keep d accurate).
     */
    @Test
    void nearlyEqualEntropiesFollowTheFormula() {
        float[] h = nearlyEqualEntropies();
        double[] ref = EntropyNormalizationReference.compute(h, null, 0.8, true, false);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor e = Tensor.of(h, h.length);
                 EntropyNormalization.Result r = EntropyNormalization.compute(e, null, Options.defaults().on(backend))) {
                for (int i = 0; i < h.length; i++) {
                    assertEquals(ref[i], r.normalized().getFloat(i), 1e-3, backend + " h_hat[" + i + "]");
                }
            }
        }
    }

    /**
     * Was: An entropy tensor of the wrong length is reported as a problem of "mask", a tensor
     * HapoLoss makes itself: "mask: expected dimension 0 = 4 (N, the entries of entropy), got
     * shape [3]". HapoLoss checks targets against logits but not entropy against targets.
     */
    @Test
    void entropyOfTheWrongLengthIsNamed() {
        HapoLoss hapo = HapoLoss.defaults();
        try (Tensor logits = Tensor.of(new float[6], 3, 2); Tensor y = Tensor.ofInts(new int[] {0, 1, 0}, 3);
             Tensor o = Tensor.of(new float[3], 3); Tensor longEntropy = Tensor.of(new float[] {1f, 2f, 3f, 4f}, 4)) {
            expect(() -> hapo.compute(logits, y, o, longEntropy, new float[] {1f, 0f}, new int[] {0, 1, 3},
                    new int[] {0, 2}, 1f), "entropy: expected dimension 0 = 3");
        }
    }

    /**
     * Was: HapoLoss accepts any finite beta (and alpha), but A (1 + beta h_hat) or eps (1 + alpha
     * h_hat) then overflow and the call fails deep in PolicyLoss with "advantages[0]: expected a
     * finite number, got -Infinity", naming a tensor the caller never passed (TokenTerms returns the
     * infinite advantage without a word).
     */
    @Test
    void overflowingBetaIsRefusedByName() {
        HapoLoss hapo = new HapoLoss(0.2f, 0.2f, 1f, 3e38f, 10f, false, null);
        try (Tensor logits = Tensor.of(new float[6], 3, 2); Tensor y = Tensor.ofInts(new int[] {0, 1, 0}, 3);
             Tensor o = Tensor.of(new float[3], 3); Tensor h = Tensor.of(new float[] {1f, 2f, 3f}, 3)) {
            expect(() -> hapo.compute(logits, y, o, h, new float[] {1f, 0f}, new int[] {0, 1, 3}, new int[] {0, 2}, 1f),
                    "beta");
        }
    }

    /** No counted token: loss 0, zero gradient, no NaN, whatever the ignored tokens hold. */
    @Test
    void allIgnoredBatchIsZeroOnEveryBackend() {
        for (Backend backend : ConformanceBackends.all()) {
            HapoLoss hapo = new HapoLoss(0.2f, 0.2f, 1f, 1f, 10f, false, backend);
            try (Tensor logits = Tensor.of(new float[] {1f, 2f, 3f, 4f, 5f, 6f}, 3, 2);
                 Tensor y = Tensor.ofInts(new int[] {IGNORE, IGNORE, IGNORE}, 3);
                 Tensor o = Tensor.of(new float[] {Float.NaN, 0f, Float.NEGATIVE_INFINITY}, 3);
                 Tensor ent = Tensor.of(new float[] {Float.NaN, Float.POSITIVE_INFINITY, -1f}, 3);
                 PolicyLoss.Result r = hapo.compute(logits, y, o, ent, new float[] {1f, 0f}, new int[] {0, 1, 3},
                         new int[] {0, 2}, 1f);
                 Tensor t = hapo.samplingTemperatures(ent, TokenSelectionTest.maskOf(new boolean[3]), 1f, 0.05f)) {
                assertEquals(0f, r.loss(), backend.toString());
                assertEquals(0, r.tokens());
                for (float g : r.gradient().toFloatArray()) {
                    assertEquals(0f, g, backend + " gradient");
                }
                for (float v : t.toFloatArray()) {
                    assertEquals(1f, v, backend + " temperature with no counted token");
                }
            }
        }
    }

    /**
     * One counted token, and all-equal entropies: h_hat 0 (no 0/0), so the ranges are the
     * base ones and the loss is plain PPO with the token-level advantage; a group of one response
     * has sigma 0 and advantage 0, a zero-length response adds nothing.
     */
    @Test
    void singleTokenEqualEntropiesAndSingletonGroups() {
        for (Backend backend : ConformanceBackends.all()) {
            for (boolean released : new boolean[] {false, true}) {
                try (Tensor one = Tensor.of(new float[] {Float.NaN, 0.3f, Float.NaN}, 3);
                     Tensor mask = TokenSelectionTest.maskOf(new boolean[] {false, true, false});
                     Tensor equal = Tensor.of(new float[] {2f, 2f, 2f, 2f, 2f}, 5);
                     EntropyNormalization.Result a = EntropyNormalization.compute(one, mask,
                             Options.defaults().withReleasedCodeSigns(released).on(backend));
                     EntropyNormalization.Result b = EntropyNormalization.compute(equal, null,
                             Options.defaults().withReleasedCodeSigns(released).on(backend))) {
                    assertTrue(a.normalized().getFloat(1) == 0f, backend + " single token");
                    assertEquals(1, a.pivotIndex());
                    for (float v : b.normalized().toFloatArray()) {
                        assertTrue(v == 0f, backend + " equal entropies: " + v);
                    }
                }
            }
            // groups: {one response}, {a zero-length response, two with equal rewards}: every advantage 0,
            // so with old = logp every token's loss is -r A = 0
            HapoLoss hapo = new HapoLoss(0.2f, 0.2f, 1f, 1f, 10f, false, backend);
            float[] values = {0.5f, -1f, 2f, 0f, 1f, 1f, -0.5f, 0.25f};
            int[] y = {0, 1, 0, 1};
            float[] old = new float[4];
            for (int t = 0; t < 4; t++) {
                double[] z = {values[2 * t], values[2 * t + 1]};
                old[t] = (float) PolicyLossReference.logProb(z, y[t], 1f);
            }
            try (Tensor logits = Tensor.of(values, 4, 2); Tensor targets = Tensor.ofInts(y, 4);
                 Tensor o = Tensor.of(old, 4); Tensor h = Tensor.of(new float[] {0.1f, 1f, 2f, 0.5f}, 4);
                 PolicyLoss.Result r = hapo.compute(logits, targets, o, h, new float[] {3f, 7f, 0.5f, 0.5f},
                         new int[] {0, 1, 1, 3, 4}, new int[] {0, 1, 4}, 1f)) {
                assertEquals(0f, r.loss(), 1e-7f, backend.toString());
                for (float g : r.gradient().toFloatArray()) {
                    assertEquals(0f, g, 1e-7f, backend + " gradient");
                }
            }
        }
    }

    /** BF16 and F16 logits give on every backend the F32 result of the rounded logits. */
    @Test
    void halfPrecisionLogitsMatchTheirF32Values() {
        SplittableRandom random = new SplittableRandom(3);
        int rows = 12;
        int vocab = 19;
        float[] values = new float[rows * vocab];
        for (int i = 0; i < values.length; i++) {
            values[i] = (float) (random.nextGaussian() * 2);
        }
        int[] y = new int[rows];
        float[] entropy = new float[rows];
        float[] old = new float[rows];
        for (int t = 0; t < rows; t++) {
            y[t] = t % 5 == 4 ? IGNORE : random.nextInt(vocab);
            entropy[t] = (float) Math.exp(random.nextGaussian() - 1);
            old[t] = (float) (-3 + random.nextGaussian() * 0.3);
        }
        int[] starts = {0, 4, 7, 12};
        int[] groups = {0, 3};
        float[] rewards = {1f, 0f, 0.5f};
        for (DType dtype : new DType[] {DType.BF16, DType.F16}) {
            for (Backend backend : ConformanceBackends.all()) {
                HapoLoss hapo = new HapoLoss(0.2f, 0.2f, 1f, 1f, 10f, false, backend);
                try (Tensor half = Tensor.ofFloats(values, dtype, rows, vocab);
                     Tensor wide = Tensor.of(half.toFloatArray(), rows, vocab);
                     Tensor targets = Tensor.ofInts(y, rows); Tensor o = Tensor.of(old, rows);
                     Tensor h = Tensor.of(entropy, rows);
                     PolicyLoss.Result a = hapo.compute(half, targets, o, h, rewards, starts, groups, 1f);
                     PolicyLoss.Result b = hapo.compute(wide, targets, o, h, rewards, starts, groups, 1f)) {
                    assertEquals(b.loss(), a.loss(), 1e-6f, backend + " " + dtype);
                    float[] ga = a.gradient().toFloatArray();
                    float[] gb = b.gradient().toFloatArray();
                    for (int i = 0; i < ga.length; i++) {
                        assertEquals(gb[i], ga[i], 1e-7f, backend + " " + dtype + " gradient " + i);
                    }
                }
            }
        }
    }
}
