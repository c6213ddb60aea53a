package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Builds what {@code cuda-emu} loads, with the host C++ compiler, through the {@link KernelCache}:
 * the driver stand-in ({@code kernels/emu/cuda_emu_driver.cpp}) and, per kernel source, a module:
 * the unmodified {@code .cu} compiled with {@code cuda_emu.h} force-included, linked with the
 * emulator runtime and a generated table of its {@code extern "C" __global__} entry points.
 */
final class EmuModuleBuilder {
    /**
     * The most dynamic shared memory a cuda-emu launch may ask for (sm_90's opt-in maximum). Set
     * here: it sizes the {@code extern __shared__} arrays, and every build passes it to the C++
     * side as {@code TK_EMU_MAX_DYNAMIC_SHARED}, for the emulator's launch check and its driver's
     * answer for CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, the limit the backend checks.
     */
    static final int MAX_DYNAMIC_SHARED = 227 * 1024;
    /**
     * Flags shared by every emulator build; part of the cache keys, so the limit above is too.
     * {@code -ffp-contract=off}: the intrinsics {@code __fadd_rn}/{@code __fmul_rn} must stay separately
     * rounded after inlining (on hosts with fma in the base instruction set, e.g. aarch64, the
     * compiler would otherwise fuse them), or bit-exact twins such as {@code tk::twin_log} would differ.
     */
    private static final List<String> FLAGS = List.of("-std=c++17", "-O2", "-ffp-contract=off", "-fPIC", "-shared",
            "-fvisibility=hidden", "-pthread", "-fno-strict-aliasing", "-Wall", "-Wno-unknown-pragmas",
            "-DTK_EMU_MAX_DYNAMIC_SHARED=" + MAX_DYNAMIC_SHARED);
    private static final Pattern ENTRY = Pattern.compile(
            "extern\\s+\"C\"\\s+__global__\\s+void\\s+(?:__launch_bounds__\\s*\\(((?:[^()]|\\([^()]*\\))*)\\)\\s*)?(\\w+)\\s*\\(");
    private static final Pattern DYNAMIC_SHARED = Pattern.compile(
            "extern\\s+__shared__\\s+[^;\\[]*?(\\w+)\\s*\\[\\s*\\]\\s*;");
    private static final Pattern COMMENTS = Pattern.compile("//[^\\n]*|/\\*.*?\\*/", Pattern.DOTALL);
    /** Toolkit headers kernels may include with angle brackets; cuda-emu has a stand-in for each. */
    private static final List<String> TOOLKIT_HEADERS = List.of("cuda_fp16.h", "cuda_bf16.h", "cuda_runtime.h");

    private final HostCompiler compiler;
    private final KernelCache cache;

    EmuModuleBuilder(HostCompiler compiler, KernelCache cache) {
        this.compiler = compiler;
        this.cache = cache;
    }

    HostCompiler compiler() {
        return compiler;
    }

    /** The driver stand-in library, built on first use. */
    Path driverLibrary() {
        KernelSource driver = KernelSource.load("emu/cuda_emu_driver.cpp");
        String key = KernelCache.key("cuda-emu driver", driver.fingerprint(), compiler.version(), FLAGS.toString());
        Optional<Path> cached = cache.find(key, "so");
        if (cached.isPresent()) {
            return cached.get();
        }
        Path build = cache.temporaryDirectory("emu-driver");
        try {
            driver.writeTo(build);
            List<String> args = new ArrayList<>(FLAGS);
            args.addAll(List.of("-o", "libtkcudaemu.so", "emu/cuda_emu_driver.cpp", "-ldl"));
            compiler.compile(args, build);
            return cache.storeFile(key, "so", build.resolve("libtkcudaemu.so"));
        } finally {
            KernelCache.deleteTree(build);
        }
    }

    /** The cache key of {@code source}'s module: its files, the emulator's files, compiler and flags. */
    String moduleKey(KernelSource source) {
        return KernelCache.key("cuda-emu module", source.fingerprint(), runtimeSource().fingerprint(),
                compiler.version(), FLAGS.toString());
    }

    /** Whether {@code source}'s module is already in the cache (a warm load). */
    boolean isCached(KernelSource source) {
        return cache.find(moduleKey(source), "so").isPresent();
    }

    /** The module library of {@code source}, built on first use. */
    Path module(KernelSource source) {
        String key = moduleKey(source);
        Optional<Path> cached = cache.find(key, "so");
        if (cached.isPresent()) {
            return cached.get();
        }
        Map<String, String> bounds = launchBounds(source.text());
        List<String> entries = List.copyOf(bounds.keySet());
        if (entries.isEmpty()) {
            throw new TokenKernelsException("kernel source " + source.path() + " has no extern \"C\" __global__ entry point");
        }
        KernelSource runtime = runtimeSource();
        Path build = cache.temporaryDirectory("emu-module");
        try {
            source.writeTo(build);
            runtime.writeTo(build);
            StringBuilder table = new StringBuilder()
                    .append("#include \"").append(source.path()).append("\"\n")
                    .append("#include \"cuda_emu_module.h\"\n")
                    .append("TK_EMU_KERNELS(");
            for (int i = 0; i < entries.size(); i++) {
                table.append(i == 0 ? "" : ", ").append("TK_EMU_KERNEL(").append(entries.get(i)).append(", ")
                        .append(bounds.get(entries.get(i))).append(')');
            }
            table.append(")\n");
            Files.writeString(build.resolve("tk_emu_kernel_table.cpp"), table);
            // Each `extern __shared__ T name[]` is one thread-local array of the largest size a
            // launch may request. It is defined in its own translation unit so that its element
            // type need not match the declaration's.
            StringBuilder shared = new StringBuilder();
            for (String name : dynamicSharedNames(source)) {
                shared.append("alignas(16) thread_local unsigned char ").append(name)
                        .append('[').append(MAX_DYNAMIC_SHARED).append("];\n");
            }
            Files.writeString(build.resolve("tk_emu_dynamic_shared.cpp"), shared);
            List<String> args = new ArrayList<>(FLAGS);
            args.addAll(List.of("-include", "emu/cuda_emu.h", "-Iemu", "-Iinclude", "-I.", "-o", "module.so",
                    "tk_emu_kernel_table.cpp", "tk_emu_dynamic_shared.cpp", "emu/cuda_emu_runtime.cpp"));
            compiler.compile(args, build);
            return cache.storeFile(key, "so", build.resolve("module.so"));
        } catch (IOException e) {
            throw new TokenKernelsException("cannot prepare the cuda-emu build of " + source.path(), e);
        } finally {
            KernelCache.deleteTree(build);
        }
    }

    /** The {@code extern "C" __global__} entry points of a kernel file, in source order. */
    static List<String> entryPoints(String text) {
        return List.copyOf(launchBounds(text).keySet());
    }

    /**
     * Each entry point with its {@code __launch_bounds__}' first argument as written (an
     * expression the kernel file defines, e.g. {@code kThreads}), or {@code "0"} without one.
     */
    static Map<String, String> launchBounds(String text) {
        Map<String, String> bounds = new LinkedHashMap<>();
        Matcher m = ENTRY.matcher(COMMENTS.matcher(text).replaceAll(" "));
        while (m.find()) {
            bounds.putIfAbsent(m.group(2), m.group(1) == null ? "0" : firstArgument(m.group(1)));
        }
        return bounds;
    }

    /** The first of comma-separated arguments, commas inside parentheses kept: {@code f(a, b), 2} gives {@code f(a, b)}. */
    private static String firstArgument(String arguments) {
        int depth = 0;
        for (int i = 0; i < arguments.length(); i++) {
            char c = arguments.charAt(i);
            depth += c == '(' ? 1 : c == ')' ? -1 : 0;
            if (c == ',' && depth == 0) {
                return arguments.substring(0, i).strip();
            }
        }
        return arguments.strip();
    }

    private static Set<String> dynamicSharedNames(KernelSource source) {
        Set<String> names = new LinkedHashSet<>();
        for (String text : source.files().values()) {
            Matcher m = DYNAMIC_SHARED.matcher(COMMENTS.matcher(text).replaceAll(" "));
            while (m.find()) {
                names.add(m.group(1));
            }
        }
        return names;
    }

    /** The emulator runtime with its headers, including the stand-ins for the toolkit's headers. */
    private static KernelSource runtimeSource() {
        Map<String, String> files = new TreeMap<>(KernelSource.load("emu/cuda_emu_runtime.cpp").files());
        for (String header : TOOLKIT_HEADERS) {
            files.putAll(KernelSource.load("emu/" + header).files());
        }
        return new KernelSource("emu/cuda_emu_runtime.cpp", files);
    }
}
