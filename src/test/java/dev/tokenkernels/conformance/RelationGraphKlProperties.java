package dev.tokenkernels.conformance;

import dev.tokenkernels.ops.loss.Reduction;
import dev.tokenkernels.ops.loss.RelationGraphKl;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;

/**
 * RelationGraphKl losses and gradients on random shapes, lengths, dtypes and temperatures, every
 * backend, against the float64 reference within the tolerances {@link RelationGraphKlCheck}
 * derives. Padding holds garbage (NaN included) that must not be read.
 */
class RelationGraphKlProperties {

    @Property(tries = 60)
    void lossAndGradientMatchTheReference(@ForAll @IntRange(min = 1, max = 3) int batch,
                                          @ForAll @IntRange(min = 1, max = 16) int tokens,
                                          @ForAll("dims") int ds,
                                          @ForAll("dims") int dt,
                                          @ForAll("temperatures") float tau,
                                          @ForAll("dtypes") DType studentType,
                                          @ForAll("dtypes") DType teacherType,
                                          @ForAll Reduction reduction,
                                          @ForAll boolean selfLoops,
                                          @ForAll boolean withLengths,
                                          @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        int[] lengths = new int[batch];
        for (int b = 0; b < batch; b++) {
            lengths[b] = withLengths ? random.nextInt(tokens + 1) : tokens;
        }
        float[] hs = RelationGraphKlProperties.features(random, batch, tokens, ds, lengths, seed);
        float[] ht = RelationGraphKlProperties.features(random, batch, tokens, dt, lengths, seed);
        float gradScale = (float) random.nextDouble(-2, 2);
        boolean callerBuffer = random.nextBoolean();
        try (Tensor student = Tensor.ofFloats(hs, studentType, batch, tokens, ds);
             Tensor teacher = Tensor.ofFloats(ht, teacherType, batch, tokens, dt);
             Tensor n = random.nextBoolean() ? Tensor.ofInts(lengths, batch) : Tensor.ofLongs(longs(lengths), batch)) {
            var c = new RelationGraphKlCheck.Case(student.toFloatArray(), teacher.toFloatArray(), batch, tokens, ds, dt,
                    lengths, tau, selfLoops, reduction, gradScale);
            RelationGraphKl.Options options = RelationGraphKl.Options.defaults().withTemperature(tau)
                    .withReduction(reduction);
            if (withLengths) {
                options = options.withLengths(n);
            }
            if (selfLoops) {
                options = options.withSelfLoops();
            }
            for (Backend backend : ConformanceBackends.all()) {
                String where = backend + " B=" + batch + " L=" + tokens + " lengths=" + java.util.Arrays.toString(lengths)
                        + " ds=" + ds + " dt=" + dt + " tau=" + tau + " " + studentType + "/" + teacherType + " "
                        + reduction + " selfLoops=" + selfLoops;
                try (Tensor garbage = Tensor.of(filled(batch * tokens * ds, Float.NaN), batch, tokens, ds);
                     RelationGraphKl.Result r = callerBuffer
                             ? RelationGraphKl.computeWithGradient(student, teacher, options.on(backend), gradScale, garbage)
                             : RelationGraphKl.computeWithGradient(student, teacher, options.on(backend), gradScale)) {
                    RelationGraphKlCheck.assertMatches(where, c, r);
                }
                try (RelationGraphKl.Result r = RelationGraphKl.compute(student, teacher, options.on(backend))) {
                    RelationGraphKlCheck.assertMatches(where + " (loss only)", c, r);
                }
            }
        }
    }

    /**
     * Clustered features, so the graphs have structure: each token is one of up to 4 random
     * directions plus noise, at a log-uniform scale in [1e-2, 1e2]; now and then a token is 0 or
     * tiny (norm below 1e-8, which F16 rounds to 0). Positions past a sequence's length hold NaN,
     * infinities or huge values. The cluster of a position depends on {@code clusterSeed} only,
     * so student and teacher (drawn with the same seed) have related graphs.
     */
    static float[] features(SplittableRandom random, int batch, int tokens, int dim, int[] lengths, long clusterSeed) {
        SplittableRandom clusters = new SplittableRandom(clusterSeed);
        int count = 1 + random.nextInt(4);
        double[][] centers = new double[count][dim];
        for (double[] center : centers) {
            for (int x = 0; x < dim; x++) {
                center[x] = random.nextGaussian();
            }
        }
        double spread = random.nextDouble(0.1, 1.5);
        float[] h = new float[batch * tokens * dim];
        for (int b = 0; b < batch; b++) {
            for (int i = 0; i < tokens; i++) {
                int at = (b * tokens + i) * dim;
                int cluster = clusters.nextInt(4) % count;
                if (i >= lengths[b]) {
                    float junk = switch (random.nextInt(3)) {
                        case 0 -> Float.NaN;
                        case 1 -> Float.POSITIVE_INFINITY;
                        default -> 1e30f;
                    };
                    java.util.Arrays.fill(h, at, at + dim, junk);
                    continue;
                }
                int kind = random.nextInt(40);
                double scale = kind == 0 ? 0 : kind == 1 ? 1e-10 : Math.pow(10, random.nextDouble(-2, 2));
                for (int x = 0; x < dim; x++) {
                    h[at + x] = (float) (scale * (centers[cluster][x] + spread * random.nextGaussian()));
                }
            }
        }
        return h;
    }

    static float[] filled(int n, float value) {
        float[] a = new float[n];
        java.util.Arrays.fill(a, value);
        return a;
    }

    static long[] longs(int[] a) {
        long[] l = new long[a.length];
        for (int i = 0; i < a.length; i++) {
            l[i] = a[i];
        }
        return l;
    }

    @Provide
    Arbitrary<Integer> dims() {
        return Arbitraries.oneOf(Arbitraries.integers().between(1, 40), Arbitraries.of(1, 2, 31, 32, 33, 64, 65, 300));
    }

    @Provide
    Arbitrary<Float> temperatures() {
        return Arbitraries.oneOf(Arbitraries.of(1f, 0.1f, 0.5f, 2f), Arbitraries.floats().between(0.05f, 3f));
    }

    @Provide
    Arbitrary<DType> dtypes() {
        return Arbitraries.of(DType.F32, DType.F16, DType.BF16);
    }
}
