package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.lang.foreign.AddressLayout;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;

/**
 * FFM bindings to NVRTC, the run-time CUDA compiler; no JNI, and no libcuda needed, so it runs
 * on machines without a GPU (the static checks of every kernel). Found by {@link NvrtcLocator}.
 *
 * <p>Every call checks its {@code nvrtcResult}; a failure is a {@link TokenKernelsException}
 * naming the call and NVRTC's error string (and, for a compile, the program log).
 */
@SuppressWarnings("restricted") // FFM downcalls are this class's purpose; the JVM runs with --enable-native-access
final class Nvrtc {
    private static final Linker LINKER = Linker.nativeLinker();
    private static final ValueLayout.OfInt INT = ValueLayout.JAVA_INT;
    private static final ValueLayout.OfLong SIZE_T = ValueLayout.JAVA_LONG;
    private static final AddressLayout ADDRESS = ValueLayout.ADDRESS;
    static final int NVRTC_ERROR_INVALID_OPTION = 5;
    private static final int NVRTC_ERROR_COMPILATION = 6;

    private final Path library;
    private final MethodHandle nvrtcVersion;
    private final MethodHandle nvrtcGetErrorString;
    private final MethodHandle nvrtcCreateProgram;
    private final MethodHandle nvrtcDestroyProgram;
    private final MethodHandle nvrtcCompileProgram;
    private final MethodHandle nvrtcGetProgramLogSize;
    private final MethodHandle nvrtcGetProgramLog;
    private final MethodHandle nvrtcGetPTXSize;
    private final MethodHandle nvrtcGetPTX;
    private final MethodHandle nvrtcGetCUBINSize;
    private final MethodHandle nvrtcGetCUBIN;
    private final MethodHandle nvrtcAddNameExpression;
    private final MethodHandle nvrtcGetLoweredName;
    private final MethodHandle nvrtcGetNumSupportedArchs;
    private final MethodHandle nvrtcGetSupportedArchs;

    /** The output of one successful compile. */
    record Output(String ptx, byte[] cubin, String log, List<String> options, List<String> loweredNames) {
        Output {
            options = List.copyOf(options);
            loweredNames = List.copyOf(loweredNames);
        }
    }

    Nvrtc(Path library, SymbolLookup lookup) {
        this.library = library;
        nvrtcVersion = bind(lookup, "nvrtcVersion", FunctionDescriptor.of(INT, ADDRESS, ADDRESS));
        nvrtcGetErrorString = bind(lookup, "nvrtcGetErrorString", FunctionDescriptor.of(ADDRESS, INT));
        nvrtcCreateProgram = bind(lookup, "nvrtcCreateProgram",
                FunctionDescriptor.of(INT, ADDRESS, ADDRESS, ADDRESS, INT, ADDRESS, ADDRESS));
        nvrtcDestroyProgram = bind(lookup, "nvrtcDestroyProgram", FunctionDescriptor.of(INT, ADDRESS));
        nvrtcCompileProgram = bind(lookup, "nvrtcCompileProgram", FunctionDescriptor.of(INT, ADDRESS, INT, ADDRESS));
        nvrtcGetProgramLogSize = bind(lookup, "nvrtcGetProgramLogSize", FunctionDescriptor.of(INT, ADDRESS, ADDRESS));
        nvrtcGetProgramLog = bind(lookup, "nvrtcGetProgramLog", FunctionDescriptor.of(INT, ADDRESS, ADDRESS));
        nvrtcGetPTXSize = bind(lookup, "nvrtcGetPTXSize", FunctionDescriptor.of(INT, ADDRESS, ADDRESS));
        nvrtcGetPTX = bind(lookup, "nvrtcGetPTX", FunctionDescriptor.of(INT, ADDRESS, ADDRESS));
        nvrtcGetCUBINSize = bind(lookup, "nvrtcGetCUBINSize", FunctionDescriptor.of(INT, ADDRESS, ADDRESS));
        nvrtcGetCUBIN = bind(lookup, "nvrtcGetCUBIN", FunctionDescriptor.of(INT, ADDRESS, ADDRESS));
        nvrtcAddNameExpression = bind(lookup, "nvrtcAddNameExpression", FunctionDescriptor.of(INT, ADDRESS, ADDRESS));
        nvrtcGetLoweredName = bind(lookup, "nvrtcGetLoweredName", FunctionDescriptor.of(INT, ADDRESS, ADDRESS, ADDRESS));
        nvrtcGetNumSupportedArchs = bind(lookup, "nvrtcGetNumSupportedArchs", FunctionDescriptor.of(INT, ADDRESS));
        nvrtcGetSupportedArchs = bind(lookup, "nvrtcGetSupportedArchs", FunctionDescriptor.of(INT, ADDRESS));
    }

    private static MethodHandle bind(SymbolLookup lookup, String name, FunctionDescriptor descriptor) {
        MemorySegment symbol = lookup.find(name)
                .orElseThrow(() -> new TokenKernelsException("the NVRTC library has no symbol " + name));
        return LINKER.downcallHandle(symbol, descriptor);
    }

    Path library() {
        return library;
    }

    /** NVRTC's version as major * 1000 + minor * 10 (13010 for 13.1), as the driver counts. */
    int version() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment major = arena.allocate(INT);
            MemorySegment minor = arena.allocate(INT);
            check("nvrtcVersion", (int) call(nvrtcVersion, major, minor));
            return major.get(INT, 0) * 1000 + minor.get(INT, 0) * 10;
        }
    }

    /** The architectures this NVRTC compiles for, ascending, as major * 10 + minor (90 for sm_90). */
    int[] supportedArchitectures() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment count = arena.allocate(INT);
            check("nvrtcGetNumSupportedArchs", (int) call(nvrtcGetNumSupportedArchs, count));
            MemorySegment archs = arena.allocate(INT, Math.max(1, count.get(INT, 0)));
            check("nvrtcGetSupportedArchs", (int) call(nvrtcGetSupportedArchs, archs));
            return archs.asSlice(0, INT.byteSize() * count.get(INT, 0)).toArray(INT);
        }
    }

    /**
     * Compiles {@code source} (named {@code fileName} in messages) with {@code options}.
     *
     * @param wantCubin whether to fetch the CUBIN (options must name a real {@code sm_XX} arch)
     * @param nameExpressions C++ names (e.g. template instantiations) whose mangled names to return
     * @throws NvrtcCompileException if it does not compile, with NVRTC's result and log
     */
    Output compile(String source, String fileName, List<String> options, boolean wantCubin,
                   List<String> nameExpressions) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment programHolder = arena.allocate(ADDRESS);
            check("nvrtcCreateProgram(" + fileName + ")", (int) call(nvrtcCreateProgram, programHolder,
                    arena.allocateFrom(source, StandardCharsets.UTF_8), arena.allocateFrom(fileName), 0,
                    MemorySegment.NULL, MemorySegment.NULL));
            MemorySegment program = programHolder.get(ADDRESS, 0);
            try {
                for (String name : nameExpressions) {
                    check("nvrtcAddNameExpression(" + name + ")",
                            (int) call(nvrtcAddNameExpression, program, arena.allocateFrom(name)));
                }
                MemorySegment optionArray = arena.allocate(MemoryLayout.sequenceLayout(Math.max(1, options.size()), ADDRESS));
                for (int i = 0; i < options.size(); i++) {
                    optionArray.setAtIndex(ADDRESS, i, arena.allocateFrom(options.get(i)));
                }
                int result = (int) call(nvrtcCompileProgram, program, options.size(), optionArray);
                String log = log(arena, program);
                if (result != 0) {
                    throw new NvrtcCompileException("NVRTC could not compile " + fileName + " ("
                            + errorString(result) + ", options " + options + "):\n" + log, result, log);
                }
                String ptx = new String(bytes(arena, program, nvrtcGetPTXSize, nvrtcGetPTX, "PTX"), StandardCharsets.UTF_8);
                int nul = ptx.indexOf('\0');
                ptx = nul >= 0 ? ptx.substring(0, nul) : ptx;
                byte[] cubin = wantCubin ? bytes(arena, program, nvrtcGetCUBINSize, nvrtcGetCUBIN, "CUBIN") : null;
                List<String> lowered = new java.util.ArrayList<>();
                for (String name : nameExpressions) {
                    MemorySegment out = arena.allocate(ADDRESS);
                    check("nvrtcGetLoweredName(" + name + ")",
                            (int) call(nvrtcGetLoweredName, program, arena.allocateFrom(name), out));
                    lowered.add(out.get(ADDRESS, 0).reinterpret(4096).getString(0));
                }
                return new Output(ptx, cubin, log, options, lowered);
            } finally {
                call(nvrtcDestroyProgram, programHolder);
            }
        }
    }

    private String log(Arena arena, MemorySegment program) {
        return new String(bytes(arena, program, nvrtcGetProgramLogSize, nvrtcGetProgramLog, "log"),
                StandardCharsets.UTF_8).replace("\0", "").strip();
    }

    private byte[] bytes(Arena arena, MemorySegment program, MethodHandle size, MethodHandle get, String what) {
        MemorySegment sizeOut = arena.allocate(SIZE_T);
        check("nvrtcGet" + what + "Size", (int) call(size, program, sizeOut));
        long n = sizeOut.get(SIZE_T, 0);
        if (n == 0) {
            return new byte[0];
        }
        MemorySegment buffer = arena.allocate(n);
        check("nvrtcGet" + what, (int) call(get, program, buffer));
        return buffer.toArray(ValueLayout.JAVA_BYTE);
    }

    String errorString(int result) {
        MemorySegment text = (MemorySegment) call(nvrtcGetErrorString, result);
        return text.equals(MemorySegment.NULL) ? "nvrtcResult " + result : text.reinterpret(256).getString(0);
    }

    private void check(String what, int result) {
        if (result != 0) {
            throw new TokenKernelsException(what + " failed: " + errorString(result)
                    + (result == NVRTC_ERROR_COMPILATION ? "" : " (" + result + ")"));
        }
    }

    private static Object call(MethodHandle handle, Object... args) {
        try {
            return handle.invokeWithArguments(args);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new TokenKernelsException("native call failed", t);
        }
    }
}
