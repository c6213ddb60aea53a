package dev.tokenkernels.conformance;

import static dev.tokenkernels.conformance.BadInput.expect;

import dev.tokenkernels.methods.AlignDistilLoss;
import dev.tokenkernels.methods.DeGrpoLoss;
import dev.tokenkernels.ops.loss.PreferenceLoss;
import dev.tokenkernels.ops.loss.PreferenceLoss.Options;
import dev.tokenkernels.ops.loss.PreferenceLoss.Responses;
import dev.tokenkernels.runtime.Tensor;
import org.junit.jupiter.api.Test;

/**
 * Sequence offsets that pass the end in the middle ({0, 3, 2} over N = 2: first and last right)
 * are a clear error naming the offsets in every op that takes them; each of these threw
 * ArrayIndexOutOfBounds or IndexOutOfBounds from a loop that ran before the offsets were all checked.
 */
class SequenceOffsetsTest {
    private static final int[] PAST_THE_END = {0, 3, 2};

    @Test
    void preferenceLoss() {
        try (Tensor z = Tensor.of(new float[] {0f, 1f, 2f, 0f}, 2, 2); Tensor y = Tensor.ofInts(new int[] {0, 1}, 2);
             Tensor ref = Tensor.of(new float[] {-0.5f, -0.5f}, 2)) {
            expect(() -> PreferenceLoss.compute(Responses.of(z, y, PAST_THE_END, ref),
                    Responses.of(z, y, new int[] {0, 1, 2}, ref), Options.dpo(0.1f)), "chosen.sequenceStarts");
        }
    }

    @Test
    void policyLossThroughDeGrpo() {
        try (Tensor z = Tensor.of(new float[] {0f, 1f, 2f, 0f}, 2, 2); Tensor y = Tensor.ofInts(new int[] {0, 1}, 2);
             Tensor old = Tensor.of(new float[] {-0.5f, -0.5f}, 2); Tensor a = Tensor.of(new float[] {1f, 1f}, 2)) {
            expect(() -> DeGrpoLoss.defaults().compute(z, y, old, a, PAST_THE_END, 1f).close(), "sequenceStarts");
        }
    }

    @Test
    void alignDistil() {
        try (Tensor z = Tensor.of(new float[] {0f, 1f, 2f, 0f}, 2, 2); Tensor y = Tensor.ofInts(new int[] {0, 1}, 2)) {
            expect(() -> AlignDistilLoss.defaults().compute(z, z, z, y, PAST_THE_END, 1f).close(), "sequenceStarts");
        }
    }
}
