package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Optional;

/**
 * The kernel report: every kernel file on the class path compiled by NVRTC for sm_80 and sm_90,
 * with registers, spills and shared memory per entry as ptxas reports them. Printed by
 * {@code tokenkernels info --kernels}; the static checks assert on the same rows (no warnings, no
 * spills). Needs NVRTC only, not a GPU.
 */
public final class KernelReport {
    /** The architectures every kernel is checked for: Ampere and Hopper data-center GPUs. */
    public static final List<String> ARCHES = List.of("sm_80", "sm_90");

    /** One entry point compiled for one architecture. */
    public record Row(String source, String entry, String arch, int registers, int spillStoreBytes,
                      int spillLoadBytes, int stackFrameBytes, int sharedBytes, int barriers, List<String> warnings) {
        /** Copies {@code warnings}. */
        public Row {
            warnings = List.copyOf(warnings);
        }
    }

    private KernelReport() {
    }

    /** Why NVRTC cannot be used here, or empty when it can. */
    public static Optional<String> unavailableReason() {
        NvrtcLocator.Result r = NvrtcLocator.find();
        return r.available() ? Optional.empty() : Optional.of(r.unavailableReason());
    }

    /** The NVRTC in use, e.g. "NVRTC 13010 (/path/libnvrtc.so.13)". */
    public static String compilerDescription() {
        Nvrtc nvrtc = nvrtc();
        return "NVRTC " + nvrtc.version() + " (" + nvrtc.library() + ")";
    }

    /** Compiles every kernel file on the class path for every architecture of {@link #ARCHES}. */
    public static List<Row> compileAll() {
        List<Row> rows = new ArrayList<>();
        for (String source : KernelSource.list(KernelReport.class.getClassLoader())) {
            for (String arch : ARCHES) {
                rows.addAll(compile(KernelSource.load(source), arch));
            }
        }
        return rows;
    }

    /** The rows of one file and architecture. */
    static List<Row> compile(KernelSource source, String arch) {
        NvrtcCompiler.Compiled compiled = new NvrtcCompiler(nvrtc()).compile(source, arch, toolkitIncludes(source));
        List<Row> rows = new ArrayList<>();
        for (KernelResources r : compiled.resources()) {
            rows.add(new Row(source.path(), r.entry(), r.arch(), r.registers(), r.spillStoreBytes(), r.spillLoadBytes(),
                    r.stackFrameBytes(), r.sharedBytes(), r.barriers(), compiled.warnings()));
        }
        return rows;
    }

    /**
     * The toolkit's include folder for sources that include its headers ({@code <cuda_fp16.h>}
     * and the like; only the emulator's own tests do), or none.
     */
    static List<Path> toolkitIncludes(KernelSource source) {
        if (source.files().values().stream().noneMatch(text -> text.contains("#include <cuda"))) {
            return List.of();
        }
        for (String home : new String[] {System.getenv("CUDA_HOME"), System.getenv("CUDA_PATH"), "/usr/local/cuda"}) {
            if (home != null && Files.isRegularFile(Path.of(home, "include", "cuda_fp16.h"))) {
                return List.of(Path.of(home, "include"));
            }
        }
        throw new TokenKernelsException(source.path() + " includes CUDA toolkit headers, and no toolkit include folder was"
                + " found (CUDA_HOME, CUDA_PATH, /usr/local/cuda)");
    }

    /** The rows as a Markdown table. */
    public static String markdown(List<Row> rows) {
        StringBuilder md = new StringBuilder("| kernel file | entry | arch | registers | spill st/ld (B) | stack (B) | "
                + "static smem (B) | barriers | warnings |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n");
        for (Row r : rows) {
            md.append(String.format(Locale.ROOT, "| %s | %s | %s | %d | %d/%d | %d | %d | %d | %d |%n", r.source(),
                    r.entry(), r.arch(), r.registers(), r.spillStoreBytes(), r.spillLoadBytes(), r.stackFrameBytes(),
                    r.sharedBytes(), r.barriers(), r.warnings().size()));
        }
        return md.toString();
    }

    private static Nvrtc nvrtc() {
        NvrtcLocator.Result r = NvrtcLocator.find();
        if (!r.available()) {
            throw new TokenKernelsException("NVRTC is unavailable: " + r.unavailableReason());
        }
        return r.nvrtc();
    }
}
