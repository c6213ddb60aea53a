package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.Reduction;
import dev.tokenkernels.ops.loss.RelationGraphKl;
import dev.tokenkernels.ops.loss.RelationGraphKl.Options;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Backends;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;

/** Worked examples, padding, special values and bad inputs of RelationGraphKl, on every backend. */
class RelationGraphKlTest {

    /**
     * Three tokens in the plane, tau = 1, no self-loops. Student units a = (1,0), b = (0,1),
     * c = (1,0) (c = (2,0) before normalizing); teacher units a = (1,0), b = (1,0), c = (0,1).
     * With q = e / (1 + e): P_s rows a (b,c) = (1-q, q), b (a,c) = (1/2, 1/2), c (a,b) = (q, 1-q);
     * P_t rows a = (q, 1-q), b = (q, 1-q), c = (1/2, 1/2). So loss_a = (2q - 1) log(q / (1-q)) = 2q - 1,
     * loss_b = log 2 + q log q + (1-q) log(1-q), loss_c = -log 2 - (log q + log(1-q)) / 2.
     * Gradients from dL/du_k = sum_j (G_kj + G_jk) u_j, G = P_s - P_t: dL/du_a = (3q - 3/2, 3/2 - 3q),
     * whose part along u_a goes, so dL/dh_a = (0, 3/2 - 3q); dL/du_b = (3/2 - 3q, 0), orthogonal to
     * u_b already; dL/du_c = (3q - 3/2, 0) lies along u_c: dL/dh_c = 0.
     */
    @Test
    void threeTokensByHand() {
        float[] hs = {1, 0, 0, 1, 2, 0};
        float[] ht = {1, 0, 3, 0, 0, 1};
        double q = Math.E / (1 + Math.E);
        double[] loss = {2 * q - 1, Math.log(2) + q * Math.log(q) + (1 - q) * Math.log(1 - q),
                -Math.log(2) - (Math.log(q) + Math.log(1 - q)) / 2};
        double[] gradient = {0, 1.5 - 3 * q, 1.5 - 3 * q, 0, 0, 0};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor s = Tensor.of(hs, 1, 3, 2); Tensor t = Tensor.of(ht, 1, 3, 2);
                 RelationGraphKl.Result none = RelationGraphKl.computeWithGradient(s, t,
                         Options.defaults().withReduction(Reduction.NONE).on(backend), 1f);
                 RelationGraphKl.Result sum = RelationGraphKl.compute(s, t,
                         Options.defaults().withReduction(Reduction.SUM).on(backend))) {
                assertArrayEquals(new long[] {1, 3}, none.loss().shape(), backend + " NONE is per token [B, L]");
                for (int i = 0; i < 3; i++) {
                    assertEquals(loss[i], none.loss().getFloat(i), 1e-6, backend + " loss[" + i + "]");
                }
                for (int x = 0; x < 6; x++) {
                    assertEquals(gradient[x], none.gradient().getFloat(x), 1e-6, backend + " gradient[" + x + "]");
                }
                assertEquals(loss[0] + loss[1] + loss[2], sum.value(), 1e-6, backend + " SUM");
                assertEquals(null, sum.gradient(), "compute() has no gradient");
            }
        }
    }

    /**
     * Lengths: padding rows are 0 and their features (NaN here) unread; TOKEN_MEAN divides by the
     * valid tokens, lone tokens included (their loss is 0 without self-loops); BATCH_MEAN by B.
     */
    @Test
    void lengthsPaddingAndReductions() {
        int batch = 3;
        int tokens = 4;
        int dim = 3;
        int[] lengths = {4, 0, 1};
        SplittableRandom random = new SplittableRandom(11);
        float[] hs = RelationGraphKlProperties.features(random, batch, tokens, dim, lengths, 5);
        float[] ht = RelationGraphKlProperties.features(random, batch, tokens, dim, lengths, 5);
        hs[(2 * tokens + 1) * dim] = Float.NaN; // padding of sequence 2, whatever features() put there
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor s = Tensor.of(hs, batch, tokens, dim); Tensor t = Tensor.of(ht, batch, tokens, dim);
                 Tensor n = Tensor.ofLongs(RelationGraphKlProperties.longs(lengths), batch)) {
                Options o = Options.defaults().withLengths(n).withTemperature(0.3f).on(backend);
                try (RelationGraphKl.Result none = RelationGraphKl.computeWithGradient(s, t, o.withReduction(Reduction.NONE), 1f);
                     RelationGraphKl.Result mean = RelationGraphKl.compute(s, t, o.withReduction(Reduction.TOKEN_MEAN));
                     RelationGraphKl.Result batchMean = RelationGraphKl.compute(s, t, o.withReduction(Reduction.BATCH_MEAN))) {
                    var c = new RelationGraphKlCheck.Case(hs, ht, batch, tokens, dim, dim, lengths, 0.3f, false,
                            Reduction.NONE, 1f);
                    RelationGraphKlCheck.assertMatches(backend + " lengths", c, none);
                    assertEquals(5, mean.validTokens(), "valid tokens");
                    double sum = 0;
                    for (int i = 0; i < 4; i++) {
                        sum += none.loss().getFloat(i);
                    }
                    assertEquals(0f, none.loss().getFloat(2 * tokens), backend + " a lone token has loss 0");
                    assertEquals(sum / 5, mean.value(), 1e-6 * (1 + sum), backend + " TOKEN_MEAN over 5 tokens");
                    assertEquals(sum / 3, batchMean.value(), 1e-6 * (1 + sum), backend + " BATCH_MEAN over 3 sequences");
                }
                try (Tensor zero = Tensor.ofInts(new int[batch], batch);
                     RelationGraphKl.Result empty = RelationGraphKl.computeWithGradient(s, t,
                             Options.defaults().withLengths(zero).on(backend), 1f)) {
                    assertEquals(0f, empty.value(), backend + " TOKEN_MEAN of no token is 0");
                    for (float g : empty.gradient().toFloatArray()) {
                        assertEquals(0f, g, backend + " no token, no gradient");
                    }
                }
            }
        }
    }

    /** A lone token with its self-loop: both graphs are the one-hot row, loss and gradient 0. */
    @Test
    void loneTokenWithSelfLoop() {
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor s = Tensor.of(new float[] {0.3f, -2f}, 1, 1, 2); Tensor t = Tensor.of(new float[] {5f}, 1, 1, 1);
                 RelationGraphKl.Result r = RelationGraphKl.computeWithGradient(s, t,
                         Options.defaults().withSelfLoops().on(backend), 1f)) {
                assertEquals(0f, r.value(), backend + " loss");
                assertEquals(0f, r.gradient().getFloat(0), backend + " gradient");
                assertEquals(0f, r.gradient().getFloat(1), backend + " gradient");
            }
        }
    }

    /**
     * NaN or infinite features, or a squared norm past fp32 (1e20^2), in a valid token make every
     * valid row of that sequence NaN, loss and gradient, even a lone token's; other sequences are
     * computed as usual, and a reduced loss is NaN.
     */
    @Test
    void nonFiniteFeaturesPoisonTheirSequenceOnly() {
        int batch = 5;
        int tokens = 3;
        int dim = 4;
        int[] lengths = {3, 3, 3, 3, 1};
        SplittableRandom random = new SplittableRandom(2);
        float[] hs = RelationGraphKlProperties.features(random, batch, tokens, dim, lengths, 9);
        float[] ht = RelationGraphKlProperties.features(random, batch, tokens, dim, lengths, 9);
        hs[(0 * tokens + 1) * dim + 2] = Float.NaN;             // sequence 0: student NaN
        ht[(2 * tokens + 2) * dim] = Float.NEGATIVE_INFINITY;   // sequence 2: teacher -inf
        java.util.Arrays.fill(hs, (3 * tokens) * dim, (3 * tokens) * dim + dim, 1e20f); // sequence 3: norm^2 = inf
        hs[(4 * tokens) * dim] = Float.NaN;                     // sequence 4: a lone NaN token
        boolean[] nonFinite = {true, false, true, true, true};
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor s = Tensor.of(hs, batch, tokens, dim); Tensor t = Tensor.of(ht, batch, tokens, dim);
                 Tensor n = Tensor.ofInts(lengths, batch)) {
                Options o = Options.defaults().withLengths(n).on(backend);
                var c = new RelationGraphKlCheck.Case(hs, ht, batch, tokens, dim, dim, lengths, 1f, false,
                        Reduction.NONE, 1f);
                try (RelationGraphKl.Result r = RelationGraphKl.computeWithGradient(s, t, o.withReduction(Reduction.NONE), 1f);
                     RelationGraphKl.Result sum = RelationGraphKl.compute(s, t, o.withReduction(Reduction.SUM))) {
                    RelationGraphKlCheck.assertMatches(backend + " non-finite", c, r, nonFinite);
                    assertTrue(Float.isNaN(sum.value()), backend + " reduced loss of a batch with a NaN sequence");
                }
            }
        }
    }

    /**
     * A token of norm 0 (u = 0: similarity 0 to all) and one of norm 1e-10 (below the 1e-8
     * floor: u = h / 1e-8, gradient dL/du / 1e-8, unprojected) match the reference.
     */
    @Test
    void zeroAndTinyNorms() {
        int tokens = 5;
        int dim = 6;
        SplittableRandom random = new SplittableRandom(4);
        int[] lengths = {tokens};
        float[] hs = RelationGraphKlProperties.features(random, 1, tokens, dim, lengths, 1);
        float[] ht = RelationGraphKlProperties.features(random, 1, tokens, dim, lengths, 1);
        for (int x = 0; x < dim; x++) {
            hs[x] = 0f;
            hs[dim + x] = (float) (1e-10 * random.nextGaussian());
            ht[2 * dim + x] = 0f;
        }
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor s = Tensor.of(hs, 1, tokens, dim); Tensor t = Tensor.of(ht, 1, tokens, dim);
                 RelationGraphKl.Result r = RelationGraphKl.computeWithGradient(s, t,
                         Options.defaults().withTemperature(0.2f).withReduction(Reduction.NONE).on(backend), 1f)) {
                var c = new RelationGraphKlCheck.Case(hs, ht, 1, tokens, dim, dim, lengths, 0.2f, false, Reduction.NONE, 1f);
                RelationGraphKlCheck.assertMatches(backend + " zero and tiny norms", c, r);
                float largest = 0f;
                for (int x = 0; x < dim; x++) {
                    largest = Math.max(largest, Math.abs(r.gradient().getFloat(dim + x)));
                }
                assertTrue(largest > 1e5, backend + " the tiny token's gradient is scaled by 1e8, got " + largest);
            }
        }
    }

    /**
     * A sequence longer than the kernel's column tile ({@value RelationGraphKl#KERNEL_COLUMN_TILE}):
     * the gradient kernel adds the tiles' partial sums into its row in turn.
     */
    @Test
    void sequenceLongerThanTheKernelTile() {
        int tokens = RelationGraphKl.KERNEL_COLUMN_TILE + 37;
        int[] lengths = {tokens};
        SplittableRandom random = new SplittableRandom(8);
        float[] hs = RelationGraphKlProperties.features(random, 1, tokens, 3, lengths, 3);
        float[] ht = RelationGraphKlProperties.features(random, 1, tokens, 2, lengths, 3);
        var c = new RelationGraphKlCheck.Case(hs, ht, 1, tokens, 3, 2, lengths, 0.5f, true, Reduction.SUM, 1f);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor s = Tensor.of(hs, 1, tokens, 3); Tensor t = Tensor.of(ht, 1, tokens, 2);
                 RelationGraphKl.Result r = RelationGraphKl.computeWithGradient(s, t,
                         Options.defaults().withTemperature(0.5f).withSelfLoops().withReduction(Reduction.SUM).on(backend), 1f)) {
                RelationGraphKlCheck.assertMatches(backend + " L=" + tokens, c, r);
            }
        }
    }

    /** The kernels sum in a fixed order (no atomics): the same call gives the same bits. */
    @Test
    void kernelResultsAreDeterministic() {
        int batch = 2;
        int tokens = 12;
        int[] lengths = {12, 9};
        SplittableRandom random = new SplittableRandom(6);
        float[] hs = RelationGraphKlProperties.features(random, batch, tokens, 40, lengths, 2);
        float[] ht = RelationGraphKlProperties.features(random, batch, tokens, 33, lengths, 2);
        Backend emu = Backends.named("cuda-emu");
        try (Tensor s = Tensor.of(hs, batch, tokens, 40); Tensor t = Tensor.of(ht, batch, tokens, 33);
             Tensor n = Tensor.ofInts(lengths, batch)) {
            Options o = Options.defaults().withLengths(n).withReduction(Reduction.NONE).on(emu);
            try (RelationGraphKl.Result first = RelationGraphKl.computeWithGradient(s, t, o, 1f);
                 RelationGraphKl.Result second = RelationGraphKl.computeWithGradient(s, t, o, 1f)) {
                assertArrayEquals(first.loss().toFloatArray(), second.loss().toFloatArray());
                assertArrayEquals(first.gradient().toFloatArray(), second.gradient().toFloatArray());
            }
        }
    }

    /**
     * The tolerances can fail: the same result checked against references that are slightly
     * wrong (the other self-loop rule, a temperature off by 1%, a gradient weight off by 1%) is
     * rejected, while the right reference accepts it.
     */
    @Test
    void theCheckRejectsSlightlyWrongReferences() {
        int batch = 2;
        int tokens = 10;
        int[] lengths = {10, 7};
        SplittableRandom random = new SplittableRandom(12);
        float[] hs = RelationGraphKlProperties.features(random, batch, tokens, 24, lengths, 4);
        float[] ht = RelationGraphKlProperties.features(random, batch, tokens, 20, lengths, 4);
        var c = new RelationGraphKlCheck.Case(hs, ht, batch, tokens, 24, 20, lengths, 0.4f, false, Reduction.NONE, 1f);
        RelationGraphKlCheck.Reference selfLoops = (k, b, w) -> RelationGraphKlReference.sequence(k.hs(), k.ht(), b,
                k.tokens(), k.ds(), k.dt(), k.lengths()[b], k.tau(), true, w);
        RelationGraphKlCheck.Reference warmer = (k, b, w) -> RelationGraphKlReference.sequence(k.hs(), k.ht(), b,
                k.tokens(), k.ds(), k.dt(), k.lengths()[b], k.tau() * 1.01, false, w);
        RelationGraphKlCheck.Reference heavier = (k, b, w) -> RelationGraphKlReference.sequence(k.hs(), k.ht(), b,
                k.tokens(), k.ds(), k.dt(), k.lengths()[b], k.tau(), false, w * 1.01);
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor s = Tensor.of(hs, batch, tokens, 24); Tensor t = Tensor.of(ht, batch, tokens, 20);
                 Tensor n = Tensor.ofInts(lengths, batch);
                 RelationGraphKl.Result r = RelationGraphKl.computeWithGradient(s, t,
                         Options.defaults().withLengths(n).withTemperature(0.4f).withReduction(Reduction.NONE).on(backend), 1f)) {
                float[] loss = r.loss().toFloatArray();
                float[] gradient = r.gradient().toFloatArray();
                assertTrue(RelationGraphKlCheck.worstRatio("exact", c, loss, gradient, RelationGraphKlCheck.EXACT) <= 1);
                assertTrue(RelationGraphKlCheck.worstRatio("self-loops", c, loss, gradient, selfLoops) > 1, "self-loops");
                assertTrue(RelationGraphKlCheck.worstRatio("tau * 1.01", c, loss, gradient, warmer) > 1, "tau * 1.01");
                assertTrue(RelationGraphKlCheck.worstRatio("weight * 1.01", c, loss, null, heavier) <= 1
                        && RelationGraphKlCheck.worstRatio("weight * 1.01", c, loss, gradient, heavier) > 1, "weight");
            }
        }
    }

    /**
     * The reference's gradient against central differences of its summed loss, in float64, for
     * tokens of ordinary, tiny (norm below 1e-8) and zero norm; steps scale with each token's size.
     */
    @Property(tries = 40)
    void referenceGradientMatchesFiniteDifferences(@ForAll @IntRange(min = 1, max = 6) int n,
                                                   @ForAll @IntRange(min = 1, max = 5) int ds,
                                                   @ForAll @IntRange(min = 1, max = 5) int dt,
                                                   @ForAll boolean selfLoops, @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        double tau = random.nextDouble(0.2, 2);
        double[][] xs = new double[n][ds];
        double[][] xt = new double[n][dt];
        double[] size = new double[n];
        for (int i = 0; i < n; i++) {
            int kind = random.nextInt(6);
            size[i] = kind == 0 ? 0 : kind == 1 ? 1e-10 : Math.pow(10, random.nextDouble(-1, 1));
            for (int x = 0; x < ds; x++) {
                xs[i][x] = size[i] * random.nextGaussian();
            }
            for (int x = 0; x < dt; x++) {
                xt[i][x] = random.nextGaussian();
            }
        }
        double weight = random.nextDouble(-2, 2);
        var ref = RelationGraphKlReference.sequence(xs, xt, tau, selfLoops, weight);
        for (int k = 0; k < n; k++) {
            // Steps of 1e-6 of the scale that u sees (the norm, or the 1e-8 floor): tiny and zero
            // tokens move by 1e-14 and stay below the floor, and float64 cancellation in the
            // difference stays ~1e-16 |loss| / 1e-14, far inside the tolerance of 1e-6 / 1e-8.
            double h = 1e-6 * Math.max(size[k], 1e-8);
            for (int x = 0; x < ds; x++) {
                double saved = xs[k][x];
                xs[k][x] = saved + h;
                double up = RelationGraphKlReference.lossSum(xs, xt, tau, selfLoops);
                xs[k][x] = saved - h;
                double down = RelationGraphKlReference.lossSum(xs, xt, tau, selfLoops);
                xs[k][x] = saved;
                double numeric = weight * (up - down) / (2 * h);
                double scale = 1 / Math.max(size[k], 1e-8); // the gradient's scale: 1 / max(||h||, 1e-8)
                Approx.assertClose("d/dh[" + k + "][" + x + "] size " + size[k], numeric, (float) ref.gradient()[k][x],
                        1e-6 * scale * (1 + Math.abs(numeric) / scale));
            }
        }
    }

    @Test
    void badInputsAreClearErrors() {
        try (Tensor s = Tensor.of(new float[12], 2, 3, 2); Tensor t = Tensor.of(new float[18], 2, 3, 3);
             Tensor flat = Tensor.of(new float[6], 2, 3); Tensor ints = Tensor.ofInts(new int[12], 2, 3, 2);
             Tensor otherBatch = Tensor.of(new float[9], 1, 3, 3); Tensor otherLength = Tensor.of(new float[12], 2, 2, 3);
             Tensor noFeatures = Tensor.allocate(DType.F32, 2, 3, 0);
             Tensor lengths = Tensor.ofInts(new int[] {3, 1}, 2); Tensor tooLong = Tensor.ofInts(new int[] {4, 1}, 2);
             Tensor negative = Tensor.ofLongs(new long[] {-1, 1}, 2); Tensor floatLengths = Tensor.of(new float[2], 2);
             Tensor shortLengths = Tensor.ofInts(new int[] {3}, 1); Tensor matrixLengths = Tensor.ofInts(new int[2], 2, 1);
             Tensor gradWrong = Tensor.of(new float[18], 2, 3, 3);
             Tensor gradInts = Tensor.ofInts(new int[12], 2, 3, 2);
             Tensor aliasStudent = Tensor.of(s.segment(), DType.F32, 2, 3, 2);
             Tensor aliasTeacher = Tensor.of(t.segment().asSlice(8, 48), DType.F32, 2, 3, 2)) {
            Options o = Options.defaults();
            expect(() -> RelationGraphKl.compute(null, t, o), "student: expected a tensor");
            expect(() -> RelationGraphKl.compute(s, null, o), "teacher: expected a tensor");
            expect(() -> RelationGraphKl.compute(s, t, null), "options");
            expect(() -> RelationGraphKl.compute(flat, t, o), "student: expected rank 3");
            expect(() -> RelationGraphKl.compute(s, flat, o), "teacher: expected rank 3");
            expect(() -> RelationGraphKl.compute(ints, t, o), "student: expected dtype");
            expect(() -> RelationGraphKl.compute(s, otherBatch, o), "teacher: expected dimension 0 = 2");
            expect(() -> RelationGraphKl.compute(s, otherLength, o), "teacher: expected dimension 1 = 3");
            expect(() -> RelationGraphKl.compute(noFeatures, t, o), "student: expected d_s >= 1");
            expect(() -> RelationGraphKl.compute(s, noFeatures, o), "teacher");
            for (float tau : new float[] {0f, -1f, Float.NaN, Float.POSITIVE_INFINITY, Float.MIN_VALUE}) {
                expect(() -> RelationGraphKl.compute(s, t, o.withTemperature(tau)), "temperature");
            }
            expect(() -> RelationGraphKl.compute(s, t, o.withReduction(null)), "reduction");
            expect(() -> RelationGraphKl.computeWithGradient(s, t, o, Float.NaN), "gradScale");
            expect(() -> RelationGraphKl.compute(s, t, o.withLengths(tooLong)), "lengths[0]: expected a length in [0, 3]");
            expect(() -> RelationGraphKl.compute(s, t, o.withLengths(negative)), "lengths[0]");
            expect(() -> RelationGraphKl.compute(s, t, o.withLengths(floatLengths)), "lengths: expected dtype");
            expect(() -> RelationGraphKl.compute(s, t, o.withLengths(shortLengths)), "lengths: expected dimension 0 = 2");
            expect(() -> RelationGraphKl.compute(s, t, o.withLengths(matrixLengths)), "lengths: expected rank 1");
            expect(() -> RelationGraphKl.computeWithGradient(s, t, o, 1f, null), "gradient: expected a tensor");
            expect(() -> RelationGraphKl.computeWithGradient(s, t, o, 1f, gradWrong), "gradient: expected dimension 2 = 2");
            expect(() -> RelationGraphKl.computeWithGradient(s, t, o, 1f, gradInts), "gradient: expected dtype");
            expect(() -> RelationGraphKl.computeWithGradient(s, t, o, 1f, aliasStudent), "does not overlap student");
            expect(() -> RelationGraphKl.computeWithGradient(s, t, o, 1f, aliasTeacher), "does not overlap teacher");
            try (RelationGraphKl.Result r = RelationGraphKl.compute(s, t, o.withLengths(lengths));
                 RelationGraphKl.Result none = RelationGraphKl.compute(s, t, o.withReduction(Reduction.NONE))) {
                assertTrue(Float.isFinite(r.value()), "valid lengths are fine");
                assertThrows(IllegalStateException.class, none::value, "a per-token loss has no single value");
            }
        }
    }

    /**
     * The gradient into a caller's F16 or BF16 buffer is the F32 gradient rounded once, and in
     * place of the student features (F32 or BF16) it is the gradient a separate buffer gets, bit
     * for bit, on every backend.
     */
    @Test
    void halfGradientBuffersAndInPlaceUpdates() {
        SplittableRandom random = new SplittableRandom(31);
        float[] hs = new float[2 * 7 * 5];
        float[] ht = new float[2 * 7 * 3];
        for (int i = 0; i < hs.length; i++) {
            hs[i] = (float) random.nextGaussian();
        }
        for (int i = 0; i < ht.length; i++) {
            ht[i] = (float) random.nextGaussian();
        }
        for (Backend backend : ConformanceBackends.all()) {
            Options o = Options.defaults().withTemperature(0.5f).on(backend);
            for (DType studentType : new DType[] {DType.F32, DType.BF16}) {
                try (Tensor s = Tensor.ofFloats(hs, studentType, 2, 7, 5); Tensor t = Tensor.of(ht, 2, 7, 3);
                     RelationGraphKl.Result full = RelationGraphKl.computeWithGradient(s, t, o, 0.7f)) {
                    float[] g = full.gradient().toFloatArray();
                    for (DType type : new DType[] {DType.F16, DType.BF16}) {
                        try (Tensor buffer = Tensor.allocate(type, 2, 7, 5); Tensor rounded = Tensor.ofFloats(g, type, 2, 7, 5);
                             RelationGraphKl.Result r = RelationGraphKl.computeWithGradient(s, t, o, 0.7f, buffer)) {
                            assertEquals(full.value(), r.value(), backend + " " + type + " loss");
                            assertArrayEquals(rounded.segment().toArray(ValueLayout.JAVA_BYTE),
                                    buffer.segment().toArray(ValueLayout.JAVA_BYTE), backend + " " + studentType + " -> " + type);
                        }
                    }
                    try (Tensor inPlace = Tensor.ofFloats(hs, studentType, 2, 7, 5);
                         Tensor rounded = Tensor.ofFloats(g, studentType, 2, 7, 5);
                         RelationGraphKl.Result r = RelationGraphKl.computeWithGradient(inPlace, t, o, 0.7f, inPlace)) {
                        assertEquals(full.value(), r.value(), backend + " in place loss");
                        assertArrayEquals(rounded.segment().toArray(ValueLayout.JAVA_BYTE),
                                inPlace.segment().toArray(ValueLayout.JAVA_BYTE), backend + " " + studentType + " in place");
                    }
                }
            }
        }
    }
}
