package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Compiles the kernel sources of {@code kernels/} with NVRTC, always with the same options
 * ({@link #options}), the include folder {@code kernels/include} and the main file's own folder.
 * ptxas runs verbosely, so every compile also yields each entry's {@link KernelResources}.
 */
final class NvrtcCompiler {
    private final Nvrtc nvrtc;

    /** One compile: PTX, CUBIN (null for a {@code compute_XX} target), log and what it says. */
    record Compiled(String arch, String ptx, byte[] cubin, String log, List<String> options,
                    List<KernelResources> resources, List<String> warnings) {
        Compiled {
            options = List.copyOf(options);
            resources = List.copyOf(resources);
            warnings = List.copyOf(warnings);
        }
    }

    NvrtcCompiler(Nvrtc nvrtc) {
        this.nvrtc = nvrtc;
    }

    Nvrtc nvrtc() {
        return nvrtc;
    }

    /**
     * The options every kernel is compiled with for {@code arch} ({@code sm_90} gives a CUDA
     * binary, {@code compute_90} PTX only). No fast-math, stated explicitly rather than left to
     * NVRTC's defaults: IEEE denormals ({@code --ftz=false}), correctly rounded division and square
     * root ({@code --prec-div=true}, {@code --prec-sqrt=true}), which the kernels' tolerances
     * assume. {@code --fmad=true} lets NVRTC contract {@code a * b + c} in ordinary code; the code
     * that must match the CPU bit for bit (the samplers' {@code tk::twin_log}) writes every
     * operation as an {@code __*_rn} intrinsic, which is never contracted, so it does not depend on
     * this flag.
     */
    static List<String> options(String arch) {
        List<String> options = new ArrayList<>(List.of("--gpu-architecture=" + arch, "--std=c++17", "--ftz=false",
                "--prec-div=true", "--prec-sqrt=true", "--fmad=true"));
        if (arch.startsWith("sm_")) {
            options.add("--ptxas-options=-v");
        }
        return options;
    }

    /**
     * Compiles {@code source} for {@code arch}.
     *
     * @param extraIncludes more include folders (e.g. a toolkit's, for test kernels that use its headers)
     * @throws NvrtcCompileException if it does not compile, with NVRTC's result and log
     */
    Compiled compile(KernelSource source, String arch, List<Path> extraIncludes) {
        Path root;
        try {
            root = Files.createTempDirectory("tokenkernels-nvrtc-");
        } catch (IOException e) {
            throw new TokenKernelsException("cannot create a folder for NVRTC's include files", e);
        }
        try {
            source.writeTo(root);
            Path main = root.resolve(source.path());
            List<String> options = options(arch);
            List<String> withIncludes = new ArrayList<>(options);
            withIncludes.add("--include-path=" + main.getParent());
            withIncludes.add("--include-path=" + root.resolve("include"));
            extraIncludes.forEach(dir -> withIncludes.add("--include-path=" + dir));
            Nvrtc.Output out = nvrtc.compile(source.text(), source.path(), withIncludes, arch.startsWith("sm_"), List.of());
            List<String> warnings = out.log().lines().filter(l -> l.contains("warning")).toList();
            return new Compiled(arch, out.ptx(), out.cubin(), out.log(), options, KernelResources.parse(out.log()),
                    warnings);
        } finally {
            KernelCache.deleteTree(root);
        }
    }
}
