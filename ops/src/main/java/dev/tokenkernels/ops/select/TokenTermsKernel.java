package dev.tokenkernels.ops.select;

import static dev.tokenkernels.runtime.KernelParam.f32;
import static dev.tokenkernels.runtime.KernelParam.i64;
import static dev.tokenkernels.runtime.KernelParam.pointer;

import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.LaunchConfig;
import dev.tokenkernels.runtime.Tensor;

/**
 * {@link TokenTerms} on a {@link KernelBackend}: {@code kernels/select/token_terms.cu}, a
 * grid-stride loop per term. Tensors are host tensors for now: inputs go in, outputs come out.
 */
final class TokenTermsKernel {
    static final String SOURCE = "select/token_terms.cu";
    static final int THREADS = 256;
    private static final Kernel TEMPERATURE = new Kernel(SOURCE, "adaptive_temperature", pointer("h_hat"), i64("n"),
            f32("t0"), f32("tau"), pointer("out"));
    private static final Kernel CLIPPING = new Kernel(SOURCE, "adaptive_clipping", pointer("h_hat"),
            pointer("advantages"), i64("n"), f32("eps_low"), f32("eps_high"), f32("alpha"), f32("beta"),
            pointer("low_out"), pointer("high_out"), pointer("inside"), pointer("outside"));
    private static final Kernel SCORE = new Kernel(SOURCE, "advantage_entropy_score", pointer("advantages"),
            pointer("entropy"), i64("n"), pointer("out"));

    private TokenTermsKernel() {
    }

    static void run(KernelBackend gpu, TokenTerms.Job job) {
        int n = job.n();
        if (n == 0) {
            return;
        }
        long bytes = 4L * n;
        Tensor[] outputs = job.outputs();
        DeviceBuffer[] out = new DeviceBuffer[outputs.length];
        try (DeviceBuffer x = gpu.allocate(bytes); DeviceBuffer y = gpu.allocate(job.second() == null ? 4 : bytes)) {
            for (int k = 0; k < out.length; k++) {
                out[k] = gpu.allocate(bytes);
            }
            gpu.copyToDevice(job.first().segment(), x);
            if (job.second() != null) {
                gpu.copyToDevice(job.second().segment(), y);
            }
            LaunchConfig grid = LaunchConfig.of1d(EntropyNormalizationKernel.blocks(n), THREADS, 0);
            float[] c = job.scalars();
            switch (job.kind()) {
                case TEMPERATURE -> gpu.launch(TEMPERATURE, grid, x, (long) n, c[0], c[1], out[0]);
                case CLIPPING -> gpu.launch(CLIPPING, grid, x, y, (long) n, c[0], c[1], c[2], c[3], out[0], out[1],
                        out[2], out[3]);
                case SCORE -> gpu.launch(SCORE, grid, x, y, (long) n, out[0]);
            }
            for (int k = 0; k < out.length; k++) {
                gpu.copyToHost(out[k], outputs[k].segment());
            }
        } finally {
            for (DeviceBuffer b : out) {
                if (b != null) {
                    b.close();
                }
            }
        }
    }
}
