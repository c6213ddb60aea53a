package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

/**
 * The host C++ compiler that builds {@code cuda-emu} modules: {@code TOKENKERNELS_CXX} if set,
 * else the first of {@code c++}, {@code g++}, {@code clang++} on the PATH.
 *
 * <p>DESIGN.md names Bytedeco LLVM's clang as the first choice; it is not wired yet (its
 * {@code program.clang} needs versioned library links next to the extracted libraries), so the
 * system compiler is the one used. The compiler's {@code --version} line is part of every cache
 * key, so changing compilers recompiles.
 */
record HostCompiler(Path executable, String version) {
    static final String ENV_CXX = "TOKENKERNELS_CXX";
    private static final long TIMEOUT_SECONDS = 300;

    /** The compiler to use, or empty with nothing found. */
    static Optional<HostCompiler> find() {
        String requested = System.getenv(ENV_CXX);
        List<Path> candidates = new ArrayList<>();
        if (requested != null && !requested.isBlank()) {
            Path p = Path.of(requested);
            candidates.add(p.isAbsolute() ? p : onPath(requested).orElse(p));
        } else {
            for (String name : List.of("c++", "g++", "clang++")) {
                onPath(name).ifPresent(candidates::add);
            }
        }
        for (Path candidate : candidates) {
            if (Files.isExecutable(candidate)) {
                try {
                    String version = run(List.of(candidate.toString(), "--version"), null).lines().findFirst().orElse("?");
                    return Optional.of(new HostCompiler(candidate, version));
                } catch (TokenKernelsException e) {
                    // Not a working compiler; try the next.
                }
            }
        }
        return Optional.empty();
    }

    /** Why {@link #find()} found nothing, for the backend's unavailable reason. */
    static String notFoundReason() {
        String requested = System.getenv(ENV_CXX);
        return requested != null && !requested.isBlank()
                ? ENV_CXX + "=" + requested + " is not a working C++ compiler"
                : "no host C++ compiler (c++, g++ or clang++) on the PATH; install one or set " + ENV_CXX;
    }

    /**
     * Runs the compiler with {@code arguments} in {@code workingDirectory}.
     *
     * @return the compiler's output (warnings), empty when it printed nothing
     * @throws TokenKernelsException if it fails, with its output
     */
    String compile(List<String> arguments, Path workingDirectory) {
        List<String> command = new ArrayList<>();
        command.add(executable.toString());
        command.addAll(arguments);
        return run(command, workingDirectory);
    }

    private static String run(List<String> command, Path workingDirectory) {
        try {
            ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true);
            if (workingDirectory != null) {
                builder.directory(workingDirectory.toFile());
            }
            Process process = builder.start();
            byte[] output = process.getInputStream().readAllBytes();
            if (!process.waitFor(TIMEOUT_SECONDS, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                throw new TokenKernelsException(String.join(" ", command) + " did not finish in " + TIMEOUT_SECONDS + " s");
            }
            String text = new String(output, StandardCharsets.UTF_8);
            if (process.exitValue() != 0) {
                throw new TokenKernelsException("host compile failed (exit " + process.exitValue() + "): "
                        + String.join(" ", command) + "\n" + text);
            }
            return text;
        } catch (IOException e) {
            throw new TokenKernelsException("cannot run " + command.get(0), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new TokenKernelsException("interrupted while running " + command.get(0), e);
        }
    }

    private static Optional<Path> onPath(String name) {
        String path = System.getenv("PATH");
        if (path == null) {
            return Optional.empty();
        }
        for (String dir : path.split(File.pathSeparator)) {
            Path candidate = Path.of(dir, name);
            if (Files.isExecutable(candidate)) {
                return Optional.of(candidate);
            }
        }
        return Optional.empty();
    }
}
