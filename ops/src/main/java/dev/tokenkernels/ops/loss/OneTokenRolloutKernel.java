package dev.tokenkernels.ops.loss;

import static dev.tokenkernels.runtime.KernelParam.f32;
import static dev.tokenkernels.runtime.KernelParam.i32;
import static dev.tokenkernels.runtime.KernelParam.i64;
import static dev.tokenkernels.runtime.KernelParam.pointer;

import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.LaunchConfig;
import java.lang.foreign.MemorySegment;

/**
 * {@link OneTokenRollout} on a {@link KernelBackend}: {@code kernels/loss/one_token_rollout.cu}, one
 * block per row. Tensors are host tensors for now: logits and per-token settings go in, the draws,
 * their log-probabilities and the gradient come out.
 */
final class OneTokenRolloutKernel {
    static final String SOURCE = "loss/one_token_rollout.cu";
    static final int THREADS = 256;
    private static final Kernel ONE_TOKEN_ROLLOUT = new Kernel(SOURCE, "one_token_rollout", pointer("logits"),
            i32("dtype"), pointer("targets"), pointer("coefficient"), pointer("grad"), i32("grad_dtype"), i32("has_grad"),
            pointer("samples"), pointer("log_prob"), i64("vocab"), f32("inv_t"), i32("k"), f32("beta"),
            i64("first_position"), i64("seed"));

    private OneTokenRolloutKernel() {
    }

    static void run(KernelBackend gpu, OneTokenRollout.RolloutRows job) {
        int rows = job.rows();
        if (rows == 0) {
            return;
        }
        TokenSampler.Draw draw = job.draw();
        boolean withGradient = job.gradient() != null;
        long draws = (long) rows * draw.samples();
        try (DeviceBuffer logits = gpu.allocate(draw.logits().byteSize());
             DeviceBuffer targets = gpu.allocate(4L * rows);
             DeviceBuffer coefficient = gpu.allocate(4L * rows);
             DeviceBuffer grad = gpu.allocate(withGradient ? job.gradient().byteSize() : 4);
             DeviceBuffer samples = gpu.allocate(4 * draws);
             DeviceBuffer logProb = gpu.allocate(4 * draws)) {
            gpu.copyToDevice(draw.logits().segment(), logits);
            gpu.copyToDevice(MemorySegment.ofArray(job.targets()), targets);
            gpu.copyToDevice(MemorySegment.ofArray(job.coefficient()), coefficient);
            gpu.launch(ONE_TOKEN_ROLLOUT, LaunchConfig.of1d(rows, THREADS, 0), logits,
                    DivergenceKernel.dtypeCode(draw.logits().dtype()), targets, coefficient, grad,
                    withGradient ? DivergenceKernel.dtypeCode(job.gradient().dtype()) : 0,
                    withGradient ? 1 : 0, samples, logProb, (long) draw.vocab(), draw.invT(), draw.samples(),
                    job.beta(), draw.firstPosition(), TokenSamplerKernel.seed(draw));
            gpu.copyToHost(samples, MemorySegment.ofArray(draw.sample()));
            gpu.copyToHost(logProb, MemorySegment.ofArray(draw.logProb()));
            if (withGradient) {
                gpu.copyToHost(grad, job.gradient().segment());
            }
        }
    }
}
