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
 * {@link PolicyLoss} on a {@link KernelBackend}: {@code kernels/loss/policy_loss.cu}, one block
 * per row. Tensors are host tensors for now: logits and per-token settings go in, the per-token
 * results and the gradient come out.
 */
final class PolicyLossKernel {
    static final String SOURCE = "loss/policy_loss.cu";
    static final int THREADS = 256;
    private static final Kernel POLICY_LOSS = new Kernel(SOURCE, "policy_loss", pointer("logits"), i32("dtype"),
            pointer("targets"), pointer("old_log_prob"), pointer("advantages"), pointer("outside_advantages"),
            pointer("reference"), i32("has_reference"), pointer("eps_low"), pointer("eps_high"), f32("dual_clip"),
            f32("ratio_cap"), f32("kl_beta"), pointer("token_weights"), pointer("regularized"), pointer("lp_proxy"),
            f32("lp_beta"), pointer("coefficient_scale"), pointer("grad"), i32("grad_dtype"), i32("has_grad"),
            pointer("log_prob"), pointer("entropy"), pointer("token_loss"), pointer("ratio"), i64("vocab"), f32("inv_t"));

    private PolicyLossKernel() {
    }

    static void run(KernelBackend gpu, PolicyLoss.PolicyRows job) {
        int rows = job.rows();
        if (rows == 0) {
            return;
        }
        boolean withGradient = job.gradient() != null;
        // In place on the host means in place on the device: the kernel gets the logits buffer.
        boolean inPlace = withGradient && job.gradient() == job.logits();
        long f32Rows = 4L * rows;
        try (DeviceBuffer logits = gpu.allocate(job.logits().byteSize());
             DeviceBuffer targets = gpu.allocate(f32Rows);
             DeviceBuffer old = gpu.allocate(f32Rows);
             DeviceBuffer advantages = gpu.allocate(f32Rows);
             DeviceBuffer outside = gpu.allocate(f32Rows);
             DeviceBuffer weights = gpu.allocate(f32Rows);
             DeviceBuffer regularized = gpu.allocate(f32Rows);
             DeviceBuffer lpProxy = gpu.allocate(f32Rows);
             DeviceBuffer reference = gpu.allocate(f32Rows);
             DeviceBuffer epsLow = gpu.allocate(f32Rows);
             DeviceBuffer epsHigh = gpu.allocate(f32Rows);
             DeviceBuffer scale = gpu.allocate(8L * rows);
             DeviceBuffer grad = gpu.allocate(withGradient && !inPlace ? job.gradient().byteSize() : 4);
             DeviceBuffer logProb = gpu.allocate(f32Rows);
             DeviceBuffer entropy = gpu.allocate(f32Rows);
             DeviceBuffer tokenLoss = gpu.allocate(8L * rows);
             DeviceBuffer ratio = gpu.allocate(8L * rows)) {
            gpu.copyToDevice(job.logits().segment(), logits);
            gpu.copyToDevice(MemorySegment.ofArray(job.targets()), targets);
            gpu.copyToDevice(MemorySegment.ofArray(job.oldLogProb()), old);
            gpu.copyToDevice(MemorySegment.ofArray(job.advantages()), advantages);
            gpu.copyToDevice(MemorySegment.ofArray(job.outsideAdvantages()), outside);
            gpu.copyToDevice(MemorySegment.ofArray(job.tokenWeights()), weights);
            gpu.copyToDevice(MemorySegment.ofArray(job.regularized()), regularized);
            gpu.copyToDevice(MemorySegment.ofArray(job.lpProxy()), lpProxy);
            gpu.copyToDevice(MemorySegment.ofArray(job.reference() == null ? new float[rows] : job.reference()),
                    reference);
            gpu.copyToDevice(MemorySegment.ofArray(job.epsLow()), epsLow);
            gpu.copyToDevice(MemorySegment.ofArray(job.epsHigh()), epsHigh);
            gpu.copyToDevice(MemorySegment.ofArray(job.coefficientScale()), scale);
            DeviceBuffer gradTarget = inPlace ? logits : grad;
            gpu.launch(POLICY_LOSS, LaunchConfig.of1d(rows, THREADS, 0), logits,
                    DivergenceKernel.dtypeCode(job.logits().dtype()), targets, old, advantages, outside, reference,
                    job.reference() == null ? 0 : 1, epsLow, epsHigh, job.dualClip(), job.ratioCap(), job.klBeta(),
                    weights, regularized, lpProxy, job.lpBeta(), scale, gradTarget,
                    withGradient ? DivergenceKernel.dtypeCode(job.gradient().dtype()) : 0, withGradient ? 1 : 0, logProb,
                    entropy, tokenLoss, ratio, (long) job.vocab(), job.invT());
            gpu.copyToHost(logProb, MemorySegment.ofArray(job.logProb()));
            gpu.copyToHost(entropy, MemorySegment.ofArray(job.entropy()));
            gpu.copyToHost(tokenLoss, MemorySegment.ofArray(job.tokenLoss()));
            gpu.copyToHost(ratio, MemorySegment.ofArray(job.ratio()));
            if (withGradient) {
                gpu.copyToHost(gradTarget, job.gradient().segment());
            }
        }
    }
}
