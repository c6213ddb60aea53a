package dev.tokenkernels.runtime;

import java.util.List;
import java.util.Objects;

/**
 * A CUDA kernel an op launches, described without any dependency on the CUDA backend: the
 * source file under {@code kernels/} (e.g. {@code "loss/logit_stats.cu"}), the {@code extern "C"}
 * entry point, and its typed parameter list. A {@link KernelBackend} compiles the source and
 * checks this list against the compiled entry before the first launch.
 */
public record Kernel(String source, String entry, List<KernelParam> params) {

    /** Checks source and entry are not null and copies {@code params}. */
    public Kernel {
        Objects.requireNonNull(source, "source");
        Objects.requireNonNull(entry, "entry");
        params = List.copyOf(params);
    }

    /** A kernel with the parameters {@code params}, in order. */
    public Kernel(String source, String entry, KernelParam... params) {
        this(source, entry, List.of(params));
    }

    /**
     * Checks that {@code args} match the parameter list in count and type.
     *
     * @throws IllegalArgumentException naming the kernel and the first parameter that differs
     */
    public void checkArguments(Object... args) {
        if (args.length != params.size()) {
            throw new IllegalArgumentException("kernel " + entry + ": expected " + params.size()
                    + " arguments " + params.stream().map(KernelParam::name).toList() + ", got " + args.length);
        }
        for (int i = 0; i < args.length; i++) {
            KernelParam p = params.get(i);
            Object arg = args[i];
            if (!p.type().javaType().isInstance(arg)) {
                throw new IllegalArgumentException("kernel " + entry + " parameter " + i + " (" + p.name()
                        + "): expected " + p.type() + " (" + p.type().javaType().getSimpleName() + "), got "
                        + (arg == null ? "null" : arg.getClass().getSimpleName()));
            }
        }
    }
}
