package dev.tokenkernels.ops.loss;

import static dev.tokenkernels.runtime.KernelParam.f32;
import static dev.tokenkernels.runtime.KernelParam.i32;
import static dev.tokenkernels.runtime.KernelParam.i64;
import static dev.tokenkernels.runtime.KernelParam.pointer;

import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.LaunchConfig;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * {@link LogitStats} on a {@link KernelBackend} ({@code cuda}, {@code cuda-emu}): the kernels of
 * {@code kernels/loss/logit_stats.cu}, one block per row. Tensors are host tensors for now, so a
 * call copies the logits in and the four statistics out.
 */
final class LogitStatsKernel {
    static final String SOURCE = "loss/logit_stats.cu";
    /** Threads per block; the kernels declare {@code __launch_bounds__(256)}. */
    static final int THREADS = 256;

    private static final Kernel F32 = kernel("logit_stats_f32");
    private static final Kernel F16 = kernel("logit_stats_f16");
    private static final Kernel BF16 = kernel("logit_stats_bf16");

    private LogitStatsKernel() {
    }

    private static Kernel kernel(String entry) {
        return new Kernel(SOURCE, entry, pointer("logits"), pointer("targets"), pointer("max_out"),
                pointer("lse_out"), pointer("entropy_out"), pointer("logprob_out"), i64("vocab"), f32("inv_t"),
                i64("ignore_index"), i32("has_targets"));
    }

    static void run(KernelBackend gpu, Tensor logits, Tensor targets, float invT, long ignoreIndex,
                    LogitStats.Result out) {
        int rows = (int) logits.dim(0);
        long vocab = logits.dim(1);
        if (rows == 0) {
            return;
        }
        Kernel kernel = switch (logits.dtype()) {
            case F32 -> F32;
            case F16 -> F16;
            case BF16 -> BF16;
            default -> throw new IllegalStateException("unexpected dtype " + logits.dtype());
        };
        long statBytes = 4L * rows;
        try (DeviceBuffer z = gpu.allocate(logits.byteSize());
             DeviceBuffer y = gpu.allocate(targets == null ? 8 : 8L * rows);
             DeviceBuffer max = gpu.allocate(statBytes);
             DeviceBuffer lse = gpu.allocate(statBytes);
             DeviceBuffer entropy = gpu.allocate(statBytes);
             DeviceBuffer logProb = gpu.allocate(targets == null ? 4 : statBytes)) {
            gpu.copyToDevice(logits.segment(), z);
            if (targets != null) {
                gpu.copyToDevice(asLongs(targets), y);
            }
            gpu.launch(kernel, LaunchConfig.of1d(rows, THREADS, 0), z, y, max, lse, entropy, logProb, vocab, invT,
                    ignoreIndex, targets == null ? 0 : 1);
            gpu.copyToHost(max, out.max().segment());
            gpu.copyToHost(lse, out.lse().segment());
            gpu.copyToHost(entropy, out.entropy().segment());
            if (targets != null) {
                gpu.copyToHost(logProb, out.logProb().segment());
            }
        }
    }

    /** The targets as I64 (the kernel's one index type), widening I32 on the host. */
    private static MemorySegment asLongs(Tensor targets) {
        if (targets.dtype() == DType.I64) {
            return targets.segment();
        }
        long n = targets.elementCount();
        MemorySegment wide = Arena.ofAuto().allocate(8L * n, 8);
        MemorySegment narrow = targets.segment();
        for (long i = 0; i < n; i++) {
            wide.setAtIndex(ValueLayout.JAVA_LONG, i, narrow.getAtIndex(ValueLayout.JAVA_INT, i));
        }
        return wide;
    }
}
