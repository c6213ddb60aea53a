package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.ops.loss.PolicyLoss.Aggregation;
import dev.tokenkernels.ops.loss.PolicyLoss.Options;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.Arrays;
import java.util.SplittableRandom;
import net.jqwik.api.Arbitraries;
import net.jqwik.api.Arbitrary;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.Provide;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.api.Test;

/**
 * PolicyLoss's second input layout, {@code [B, L, V]} logits with {@code [B, L]} per-token inputs
 * and a response mask, and per-sequence advantages: the same numbers as the packed call over the
 * sequences' real tokens (whose float64 references PolicyLossTest and PolicyLossProperties check),
 * bit for bit, on every backend.
 */
class PolicyLossLayoutTest {
    private static final int B = 3;
    private static final int L = 6;
    private static final int V = 41;
    /** Real tokens per padded row; the rest is padding (mask 0). Row 1 has none. */
    private static final int[] LENGTHS = {6, 0, 4};

    /** A batch in both layouts: padded rows of L, and the real tokens packed. */
    private record Batch(int batch, int length, int vocab, int[] lengths, float[] paddedLogits, int[] paddedTargets,
                         float[] paddedOld, int[] mask, float[] sequenceAdvantage, float[] packedLogits,
                         int[] packedTargets, float[] packedOld, float[] packedAdvantage, int[] starts) {
    }

    private static Batch batch(long seed) {
        return batch(seed, L, V, LENGTHS);
    }

    /**
     * Rows of {@code length} tokens over {@code vocab} classes, {@code lengths[b]} of them real;
     * the first real token of the first sequence with more than one is left out (by the mask in
     * the padded layout, by the ignore index in the packed one). An empty sequence's advantage is NaN.
     */
    private static Batch batch(long seed, int length, int vocab, int[] lengths) {
        int batch = lengths.length;
        SplittableRandom random = new SplittableRandom(seed);
        float[] logits = new float[batch * length * vocab];
        int[] targets = new int[batch * length];
        float[] old = new float[batch * length];
        int[] mask = new int[batch * length];
        float[] advantage = new float[batch];
        for (int b = 0; b < batch; b++) {
            advantage[b] = lengths[b] == 0 ? Float.NaN : (float) random.nextGaussian(); // never read when empty
        }
        for (int i = 0; i < logits.length; i++) {
            logits[i] = (float) (3 * random.nextGaussian());
        }
        int packed = Arrays.stream(lengths).sum();
        float[] packedLogits = new float[packed * vocab];
        int[] packedTargets = new int[packed];
        float[] packedOld = new float[packed];
        float[] packedAdvantage = new float[packed];
        int[] starts = new int[batch + 1];
        int n = 0;
        for (int b = 0; b < batch; b++) {
            for (int t = 0; t < length; t++) {
                int i = b * length + t;
                if (t < lengths[b]) {
                    mask[i] = 1;
                    targets[i] = random.nextInt(vocab);
                    old[i] = (float) (-3 - random.nextDouble());
                    System.arraycopy(logits, i * vocab, packedLogits, n * vocab, vocab);
                    packedTargets[n] = targets[i];
                    packedOld[n] = old[i];
                    packedAdvantage[n] = advantage[b];
                    n++;
                } else { // padding: a target out of range and a NaN input, neither read
                    targets[i] = vocab + 7;
                    old[i] = Float.NaN;
                }
            }
            starts[b + 1] = n;
        }
        for (int b = 0; b < batch; b++) {
            if (lengths[b] > 1) { // not counted: by the ignore index when packed, by the mask when padded
                packedTargets[starts[b]] = (int) Options.defaults().ignoreIndex();
                mask[b * length] = 0;
                break;
            }
        }
        return new Batch(batch, length, vocab, lengths, logits, targets, old, mask, advantage, packedLogits, packedTargets,
                packedOld, packedAdvantage, starts);
    }

    @Test
    void paddedRowsWithAMaskEqualThePackedTokens() {
        Batch d = batch(11);
        for (Aggregation aggregation : Aggregation.values()) {
            for (Backend backend : ConformanceBackends.all()) {
                assertPaddedEqualsPacked(backend + " " + aggregation, d, aggregation, DType.F32, backend);
            }
        }
    }

    /** The same on random shapes: sequence lengths (empty ones included), L, V, dtype and aggregation. */
    @Property(tries = 40)
    void paddedEqualsPackedOnRandomShapes(@ForAll @IntRange(min = 1, max = 5) int batch,
                                          @ForAll @IntRange(min = 1, max = 9) int length,
                                          @ForAll @IntRange(min = 1, max = 300) int vocab,
                                          @ForAll Aggregation aggregation, @ForAll("dtypes") DType dtype,
                                          @ForAll long seed) {
        SplittableRandom random = new SplittableRandom(seed);
        int[] lengths = new int[batch];
        for (int b = 0; b < batch; b++) {
            lengths[b] = random.nextInt(length + 1);
        }
        Batch d = batch(seed, length, vocab, lengths);
        for (Backend backend : ConformanceBackends.all()) {
            assertPaddedEqualsPacked(backend + " " + aggregation + " " + dtype + " lengths " + Arrays.toString(lengths)
                    + " of " + length + ", V " + vocab, d, aggregation, dtype, backend);
        }
    }

    @Provide
    Arbitrary<DType> dtypes() {
        return Arbitraries.of(DType.F32, DType.BF16, DType.F16);
    }

    /**
     * The padded call (mask, per-sequence advantages) against the packed call over the real tokens:
     * loss and statistics bit for bit, each real token's logp and gradient row, padding's 0.
     */
    private static void assertPaddedEqualsPacked(String at, Batch d, Aggregation aggregation, DType dtype,
                                                 Backend backend) {
        int b = d.batch();
        int l = d.length();
        int v = d.vocab();
        int n = d.packedTargets().length;
        // Dr. GRPO divides by B * maxLength: the padded rows' L, given to the packed call
        Options options = Options.defaults().withClip(0.2f, 0.28f).withAggregation(aggregation,
                aggregation == Aggregation.SEQ_MEAN_TOKEN_SUM_NORM ? l : 0).on(backend);
        try (Tensor z = Tensor.ofFloats(d.paddedLogits(), dtype, b, l, v); Tensor y = Tensor.ofInts(d.paddedTargets(), b, l);
             Tensor o = Tensor.of(d.paddedOld(), b, l); Tensor a = Tensor.of(d.sequenceAdvantage(), b);
             Tensor m = Tensor.ofInts(d.mask(), b, l);
             Tensor pz = Tensor.ofFloats(d.packedLogits(), dtype, n, v); Tensor py = Tensor.ofInts(d.packedTargets(), n);
             Tensor po = Tensor.of(d.packedOld(), n); Tensor pa = Tensor.of(d.packedAdvantage(), n);
             PolicyLoss.Result padded = PolicyLoss.computeWithGradient(z, y, o, a, null, null,
                     options.withResponseMask(m).withSequenceAdvantages(true), 0.5f);
             PolicyLoss.Result packed = PolicyLoss.computeWithGradient(pz, py, po, pa, null, d.starts(), options, 0.5f)) {
            assertEquals(packed.loss(), padded.loss(), at + " loss");
            assertEquals(packed.tokens(), padded.tokens(), at + " tokens");
            assertEquals(packed.meanRatio(), padded.meanRatio(), at + " mean ratio");
            assertEquals(packed.meanEntropy(), padded.meanEntropy(), at + " mean entropy");
            assertEquals(packed.clipFractionLow(), padded.clipFractionLow(), at + " clipped low");
            assertEquals(packed.clipFractionHigh(), padded.clipFractionHigh(), at + " clipped high");
            assertArrayEquals(new long[] {b, l, v}, padded.gradient().shape(), at + " gradient shape");
            assertArrayEquals(new long[] {b, l}, padded.logProb().shape(), at + " logProb shape");
            assertArrayEquals(new long[] {b, l}, padded.entropy().shape(), at + " entropy shape");
            int token = 0;
            for (int i = 0; i < b * l; i++) {
                boolean real = i % l < d.lengths()[i / l];
                boolean counted = d.mask()[i] == 1;
                assertEquals(counted ? packed.logProb().getFloat(token) : 0f, padded.logProb().getFloat(i),
                        at + " logp of " + i);
                for (int c = 0; c < v; c++) {
                    assertEquals(counted ? packed.gradient().getFloat((long) token * v + c) : 0f,
                            padded.gradient().getFloat((long) i * v + c), at + " gradient " + i + "," + c);
                }
                token += real ? 1 : 0;
            }
        }
    }

    /** In place over [B, L, V] logits: the gradient a separate buffer gets, bit for bit. */
    @Test
    void paddedGradientInPlaceEqualsASeparateBuffer() {
        Batch d = batch(12);
        for (Backend backend : ConformanceBackends.all()) {
            Options options = Options.defaults().on(backend).withSequenceAdvantages(true);
            try (Tensor z = Tensor.ofFloats(d.paddedLogits(), DType.BF16, B, L, V);
                 Tensor zInPlace = Tensor.ofFloats(d.paddedLogits(), DType.BF16, B, L, V);
                 Tensor y = Tensor.ofInts(d.paddedTargets(), B, L); Tensor o = Tensor.of(d.paddedOld(), B, L);
                 Tensor a = Tensor.of(d.sequenceAdvantage(), B); Tensor m = Tensor.ofInts(d.mask(), B, L);
                 Tensor g = Tensor.allocate(DType.BF16, B, L, V);
                 PolicyLoss.Result separate = PolicyLoss.computeWithGradient(z, y, o, a, null, null,
                         options.withResponseMask(m), 1f, g);
                 PolicyLoss.Result inPlace = PolicyLoss.computeWithGradient(zInPlace, y, o, a, null, null,
                         options.withResponseMask(m), 1f, zInPlace)) {
                assertEquals(separate.loss(), inPlace.loss(), backend + " loss");
                assertArrayEquals(g.toFloatArray(), zInPlace.toFloatArray(), backend + " gradient");
            }
        }
    }

    /** Packed rows with per-sequence advantages: the same as each token given its sequence's, on every backend. */
    @Test
    void packedSequenceAdvantages() {
        Batch d = batch(15);
        int n = d.packedTargets().length;
        for (Backend backend : ConformanceBackends.all()) {
            try (Tensor z = Tensor.of(d.packedLogits(), n, V); Tensor y = Tensor.ofInts(d.packedTargets(), n);
                 Tensor o = Tensor.of(d.packedOld(), n); Tensor perToken = Tensor.of(d.packedAdvantage(), n);
                 Tensor perSequence = Tensor.of(d.sequenceAdvantage(), B);
                 PolicyLoss.Result tokens = PolicyLoss.computeWithGradient(z, y, o, perToken, null, d.starts(),
                         Options.defaults().on(backend), 1f);
                 PolicyLoss.Result sequences = PolicyLoss.computeWithGradient(z, y, o, perSequence, null, d.starts(),
                         Options.defaults().withSequenceAdvantages(true).on(backend), 1f)) {
                assertEquals(tokens.loss(), sequences.loss(), backend + " loss");
                assertArrayEquals(tokens.gradient().toFloatArray(), sequences.gradient().toFloatArray(),
                        backend + " gradient");
            }
        }
    }

    /**
     * Lp-Reg's inputs under the response mask's 0 are not read either: NaN there runs (the mask of
     * regularized tokens was checked on every token, found in review), on every backend.
     */
    @Test
    void lpRegInputsUnderPaddingAreNotRead() {
        float nan = Float.NaN;
        try (Tensor z = Tensor.of(new float[] {0, 1, 2, 1, 0, 2, 2, 1, 0, 0, 0, 0}, 2, 2, 3);
             Tensor y = Tensor.ofInts(new int[] {0, 1, 2, 0}, 2, 2); Tensor o = Tensor.of(new float[] {-1, -1, -1, nan}, 2, 2);
             Tensor a = Tensor.of(new float[] {1, -1}, 2); Tensor mask = Tensor.ofInts(new int[] {1, 1, 1, 0}, 2, 2);
             Tensor lp = Tensor.of(new float[] {-0.5f, -0.5f, -0.5f, nan}, 2, 2);
             Tensor regularized = Tensor.of(new float[] {0, 1, 0, nan}, 2, 2)) {
            Options options = Options.defaults().withSequenceAdvantages(true).withResponseMask(mask)
                    .withLpReg(lp, regularized, 0.1f);
            for (Backend backend : ConformanceBackends.all()) {
                try (PolicyLoss.Result r = PolicyLoss.compute(z, y, o, a, null, null, options.on(backend))) {
                    assertEquals(3, r.tokens(), backend + " tokens");
                    assertTrue(Float.isFinite(r.loss()), backend + " loss " + r.loss());
                }
            }
        }
    }

    /** withIgnoreIndex: targets of -1 do not count, and the call equals one with the default -100. */
    @Test
    void anotherIgnoreIndex() {
        Batch d = batch(13);
        int[] minusOne = d.packedTargets().clone();
        for (int i = 0; i < minusOne.length; i++) {
            minusOne[i] = minusOne[i] == Options.defaults().ignoreIndex() ? -1 : minusOne[i];
        }
        int n = minusOne.length;
        try (Tensor z = Tensor.of(d.packedLogits(), n, V); Tensor y = Tensor.ofInts(d.packedTargets(), n);
             Tensor y1 = Tensor.ofInts(minusOne, n); Tensor o = Tensor.of(d.packedOld(), n);
             Tensor a = Tensor.of(d.packedAdvantage(), n);
             PolicyLoss.Result byDefault = PolicyLoss.compute(z, y, o, a, null, d.starts(), Options.defaults());
             PolicyLoss.Result byMinusOne = PolicyLoss.compute(z, y1, o, a, null, d.starts(),
                     Options.defaults().withIgnoreIndex(-1))) {
            assertEquals(byDefault.loss(), byMinusOne.loss());
            assertEquals(n - 1, byMinusOne.tokens());
        }
    }

    @Test
    void badLayoutsAreClearErrors() {
        Batch d = batch(14);
        try (Tensor z = Tensor.of(d.paddedLogits(), B, L, V); Tensor y = Tensor.ofInts(d.paddedTargets(), B, L);
             Tensor yFlat = Tensor.ofInts(d.paddedTargets(), B * L); Tensor o = Tensor.of(d.paddedOld(), B, L);
             Tensor a = Tensor.of(d.sequenceAdvantage(), B); Tensor m = Tensor.ofInts(d.mask(), B, L);
             Tensor mFlat = Tensor.ofInts(d.mask(), B * L); Tensor a2 = Tensor.of(new float[2], 2);
             Tensor g = Tensor.allocate(DType.F32, B * L, V); Tensor z4 = Tensor.allocate(DType.F32, 1, B, L, V)) {
            Options masked = Options.defaults().withResponseMask(m);
            Options perSequence = masked.withSequenceAdvantages(true);
            expect(() -> PolicyLoss.compute(z, y, o, a, null, new int[] {0, L, 2 * L, 3 * L}, perSequence),
                    "sequenceStarts");
            expect(() -> PolicyLoss.compute(z4, y, o, a, null, null, perSequence), "[B, L, V]");
            expect(() -> PolicyLoss.compute(z, yFlat, o, a, null, null, perSequence), "targets");
            expect(() -> PolicyLoss.compute(z, y, o, a, null, null, Options.defaults().withResponseMask(mFlat)
                    .withSequenceAdvantages(true)), "responseMask");
            // [B] advantages without withSequenceAdvantages: per token, so [B, L] is expected
            expect(() -> PolicyLoss.compute(z, y, o, a, null, null, masked), "[B, L]");
            expect(() -> PolicyLoss.compute(z, y, o, a2, null, null, perSequence), "B, the sequences");
            expect(() -> PolicyLoss.computeWithGradient(z, y, o, a, null, null, perSequence, 1f, g), "gradient");
            int[] two = d.mask().clone();
            two[0] = 2;
            try (Tensor bad = Tensor.ofInts(two, B, L)) {
                expect(() -> PolicyLoss.compute(z, y, o, a, null, null, Options.defaults().withResponseMask(bad)
                        .withSequenceAdvantages(true)), "responseMask[0, 0]");
            }
            // [B, 0, V] holds no element, so B is bounded apart from the token count (a review's
            // B = 3e9 and 2^32 + 1 threw NegativeArraySize and ArrayIndexOutOfBounds)
            for (long huge : new long[] {3_000_000_000L, (1L << 32) + 1}) {
                try (Tensor none = Tensor.allocate(DType.F32, huge, 0, 5); Tensor noTargets = Tensor.allocate(DType.I32, huge, 0);
                     Tensor noOld = Tensor.allocate(DType.F32, huge, 0)) {
                    expect(() -> PolicyLoss.compute(none, noTargets, noOld, noOld, null, null, Options.defaults()).close(),
                            "logits");
                }
            }
            // errors name a padded token by its [b, t]
            float[] oldNan = d.paddedOld().clone();
            oldNan[2 * L + 1] = Float.NaN; // sequence 2's second token counts
            try (Tensor bad = Tensor.of(oldNan, B, L)) {
                expect(() -> PolicyLoss.compute(z, y, bad, a, null, null, perSequence), "oldLogProb[2, 1]");
            }
            float[] nan = d.sequenceAdvantage().clone();
            nan[0] = Float.NaN; // sequence 0 has counted tokens: its advantage is read
            try (Tensor bad = Tensor.of(nan, B)) {
                expect(() -> PolicyLoss.compute(z, y, o, bad, null, null, perSequence), "advantages[0]");
            }
        }
    }
}
