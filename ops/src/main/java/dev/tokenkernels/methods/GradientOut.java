package dev.tokenkernels.methods;

import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.ops.loss.PolicyLoss;
import dev.tokenkernels.runtime.Tensor;

/**
 * The ops' with-gradient calls for methods that write their gradient into a new F32 tensor or a
 * caller's buffer: {@code gradient == null} means a new tensor.
 */
final class GradientOut {
    private GradientOut() {
    }

    static PolicyLoss.Result policyLoss(Tensor logits, Tensor targets, Tensor oldLogProb, Tensor advantages,
                                        int[] sequenceStarts, PolicyLoss.Options options, float gradScale,
                                        Tensor gradient) {
        return gradient == null
                ? PolicyLoss.computeWithGradient(logits, targets, oldLogProb, advantages, null, sequenceStarts, options,
                        gradScale)
                : PolicyLoss.computeWithGradient(logits, targets, oldLogProb, advantages, null, sequenceStarts, options,
                        gradScale, gradient);
    }

    static Divergence.Result divergence(Tensor student, Tensor teacher, Divergence.Options options, float gradScale,
                                        Tensor gradient) {
        return gradient == null ? Divergence.computeWithGradient(student, teacher, options, gradScale)
                : Divergence.computeWithGradient(student, teacher, options, gradScale, gradient);
    }
}
