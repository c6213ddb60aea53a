package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.tokenkernels.ops.loss.ClippedKl;
import dev.tokenkernels.ops.loss.ContrastiveTargetProb;
import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.ops.loss.LogitStats;
import dev.tokenkernels.ops.loss.OneTokenRollout;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.ProxyDistribution;
import dev.tokenkernels.ops.loss.RelationGraphKl;
import dev.tokenkernels.ops.loss.TargetLogProb;
import dev.tokenkernels.ops.loss.TokenSampler;
import dev.tokenkernels.ops.select.EntropyNormalization;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.ValueLayout;
import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * The CPU ops give the same bits whether the JIT has compiled them or not: this JVM (the ops
 * warmed up, so compiled by C2) against a child JVM that only interprets ({@code -Xint}, where the
 * Vector API runs its Java fallbacks). A cross-lane sum whose order depends on the tier
 * ({@code reduceLanes(ADD)}) made an op's first calls differ from its later ones in the last bits.
 */
class ReproducibleResultsTest {
    private static final int ROWS = 6;
    private static final int VOCAB = 2053;

    @Test
    void interpretedAndCompiledOpsAgreeBitForBit() throws Exception {
        for (int warm = 0; warm < 300; warm++) {
            outputs();
        }
        List<String> compiled = outputs();
        List<String> flags = new ArrayList<>(List.of("-Xint"));
        // the same vector width as this JVM (CI runs the suite with -XX:MaxVectorSize=16 too)
        ManagementFactory.getRuntimeMXBean().getInputArguments().stream()
                .filter(a -> a.startsWith("-XX:MaxVectorSize=")).forEach(flags::add);
        String out = ChildJvm.run(ReproducibleResultsTest.class, flags);
        List<String> interpreted = out.lines().toList();
        assertEquals(compiled.size(), interpreted.size(), "outputs: " + out);
        for (int i = 0; i < compiled.size(); i++) {
            assertEquals(compiled.get(i), interpreted.get(i), "compiled vs interpreted");
        }
    }

    /** Run by the child JVM: one line per output. */
    public static void main(String[] args) {
        outputs().forEach(System.out::println);
    }

    /** Each op's outputs on fixed inputs (one CPU thread), as "name: hash of the bits". */
    static List<String> outputs() {
        List<String> lines = new ArrayList<>();
        try (CpuBackend cpu = CpuBackend.withThreads(1);
             Tensor z = Tensor.ofFloats(logits(1), DType.BF16, ROWS, VOCAB);
             Tensor t = Tensor.ofFloats(logits(2), DType.F32, ROWS, VOCAB);
             Tensor y = Tensor.ofInts(new int[] {3, 7, 2052, 0, 11, 1000}, ROWS);
             Tensor old = Tensor.of(new float[] {-8f, -7.5f, -9f, -8.2f, -6f, -10f}, ROWS);
             Tensor a = Tensor.of(new float[] {1f, -0.5f, 0.3f, -1.2f, 2f, 0.1f}, ROWS);
             Tensor lower = Tensor.of(new float[] {0f, 0.1f, 0.2f, 0f, 0.05f, 0.3f}, ROWS);
             Tensor upper = Tensor.of(new float[] {0.9f, 1f, 0.95f, 0.5f, 0.99f, 1f}, ROWS);
             Tensor entropy = Tensor.of(entropies(), 4096);
             Tensor studentFeatures = Tensor.ofFloats(features(4, 2 * 37 * 40), DType.BF16, 2, 37, 40);
             Tensor teacherFeatures = Tensor.of(features(5, 2 * 37 * 24), 2, 37, 24)) {
            try (var r = LogitStats.compute(z, y, LogitStats.Options.defaults().withTemperature(0.7f).on(cpu))) {
                lines.add(line("logit_stats", r.max(), r.lse(), r.entropy(), r.logProb()));
            }
            for (Divergence.Options o : new Divergence.Options[] {Divergence.Options.forwardKl(),
                Divergence.Options.jsd(0.4f), Divergence.Options.totalVariation()}) {
                try (var r = Divergence.computeWithGradient(z, t, o.withReduction(dev.tokenkernels.ops.loss.Reduction.NONE)
                        .withTemperature(1.3f).on(cpu), 1f)) {
                    lines.add(line("divergence " + o.kind(), r.loss(), r.gradient()));
                }
            }
            try (var r = PolicyLoss.computeWithGradient(z, y, old, a, null, new int[] {0, 2, ROWS},
                    PolicyLoss.Options.defaults().on(cpu), 1f)) {
                lines.add(line("policy_loss " + r.loss() + " " + r.meanEntropy(), r.gradient(), r.logProb(), r.entropy()));
            }
            try (var r = TargetLogProb.computeWithGradient(z, y, a, TargetLogProb.Options.defaults().on(cpu))) {
                lines.add(line("target_log_prob", r.logProb(), r.gradient()));
            }
            try (var r = ProxyDistribution.compute(z, y, ProxyDistribution.Options.minP(0.02f).on(cpu))) {
                lines.add(line("proxy_distribution", r.logProb(), r.keptLse(), r.keptCount()));
            }
            try (var r = ContrastiveTargetProb.compute(z, t, y, ContrastiveTargetProb.Options.defaults().on(cpu))) {
                lines.add(line("contrastive_target_prob", r.logProb(), r.prob()));
            }
            try (var r = ClippedKl.computeWithGradient(t, z, lower, upper, ClippedKl.Options.forwardKl(0f).on(cpu), 1f)) {
                lines.add(line("clipped_kl", r.loss(), r.gradient(), r.lowerGradient(), r.upperGradient()));
            }
            try (var r = RelationGraphKl.computeWithGradient(studentFeatures, teacherFeatures,
                    RelationGraphKl.Options.defaults().withTemperature(0.3f).withReduction(dev.tokenkernels.ops.loss.Reduction.NONE)
                            .on(cpu), 1f)) {
                lines.add(line("relation_graph_kl", r.loss(), r.gradient()));
            }
            try (var r = TokenSampler.sample(z, TokenSampler.Options.defaults().withSamples(5).withSeed(9).on(cpu))) {
                lines.add(line("token_sampler", r.samples(), r.logProb()));
            }
            try (var r = OneTokenRollout.computeWithGradient(z, y, OneTokenRollout.Options.defaults().withSeed(9).on(cpu), 1f)) {
                lines.add(line("one_token_rollout " + r.loss(), r.gradient(), r.samples(), r.sampleLogProb()));
            }
            try (var r = EntropyNormalization.compute(entropy, null, EntropyNormalization.Options.defaults().on(cpu))) {
                lines.add(line("entropy_normalization " + r.pivot() + " " + r.std(), r.normalized()));
            }
        }
        return lines;
    }

    private static String line(String name, Tensor... outputs) {
        long hash = 17;
        for (Tensor o : outputs) {
            byte[] bytes = o.segment().toArray(ValueLayout.JAVA_BYTE);
            hash = 31 * hash + java.util.Arrays.hashCode(bytes);
        }
        return name + ": " + Long.toHexString(hash);
    }

    private static float[] logits(long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] z = new float[ROWS * VOCAB];
        for (int i = 0; i < z.length; i++) {
            z[i] = (float) (3 * random.nextGaussian());
        }
        return z;
    }

    private static float[] features(long seed, int count) {
        SplittableRandom random = new SplittableRandom(seed);
        float[] h = new float[count];
        for (int i = 0; i < h.length; i++) {
            h[i] = (float) random.nextGaussian();
        }
        return h;
    }

    private static float[] entropies() {
        SplittableRandom random = new SplittableRandom(3);
        float[] h = new float[4096];
        for (int i = 0; i < h.length; i++) {
            h[i] = (float) (2 * random.nextDouble());
        }
        return h;
    }
}
