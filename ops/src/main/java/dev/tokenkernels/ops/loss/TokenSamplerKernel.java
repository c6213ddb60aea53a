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
 * {@link TokenSampler} on a {@link KernelBackend}: {@code kernels/loss/token_sampler.cu}, one block
 * per row. Tensors are host tensors for now: logits go in, samples and log-probabilities come out.
 */
final class TokenSamplerKernel {
    static final String SOURCE = "loss/token_sampler.cu";
    static final int THREADS = 256;
    private static final Kernel TOKEN_SAMPLER = new Kernel(SOURCE, "token_sampler", pointer("logits"), i32("dtype"),
            pointer("drawn"), pointer("samples"), pointer("log_prob"), i64("vocab"), f32("inv_t"), i32("k"),
            i64("first_position"), i64("seed"));

    private TokenSamplerKernel() {
    }

    static void run(KernelBackend gpu, TokenSampler.Draw draw) {
        int rows = draw.rows();
        if (rows == 0) {
            return;
        }
        int[] drawn = new int[rows];
        for (int i = 0; i < rows; i++) {
            drawn[i] = draw.drawn(i) ? 1 : 0;
        }
        long draws = (long) rows * draw.samples();
        try (DeviceBuffer logits = gpu.allocate(draw.logits().byteSize());
             DeviceBuffer drawnRows = gpu.allocate(4L * rows);
             DeviceBuffer samples = gpu.allocate(4 * draws);
             DeviceBuffer logProb = gpu.allocate(4 * draws)) {
            gpu.copyToDevice(draw.logits().segment(), logits);
            gpu.copyToDevice(MemorySegment.ofArray(drawn), drawnRows);
            gpu.launch(TOKEN_SAMPLER, LaunchConfig.of1d(rows, THREADS, 0), logits,
                    DivergenceKernel.dtypeCode(draw.logits().dtype()), drawnRows, samples, logProb, (long) draw.vocab(),
                    draw.invT(), draw.samples(), draw.firstPosition(), seed(draw));
            gpu.copyToHost(samples, MemorySegment.ofArray(draw.sample()));
            gpu.copyToHost(logProb, MemorySegment.ofArray(draw.logProb()));
        }
    }

    /** The 64-bit seed the key words came from. */
    static long seed(TokenSampler.Draw draw) {
        return (draw.key0() & 0xffffffffL) | ((long) draw.key1() << 32);
    }
}
