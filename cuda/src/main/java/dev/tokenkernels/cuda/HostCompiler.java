package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
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
record HostCompiler(Path executable, String version, Duration timeout) {
    static final String ENV_CXX = "TOKENKERNELS_CXX";
    /** How long one compiler run may take: far above any real build, so only a hung compiler reaches it. */
    static final Duration TIMEOUT = Duration.ofSeconds(300);

    HostCompiler(Path executable, String version) {
        this(executable, version, TIMEOUT);
    }

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
                    String version = run(List.of(candidate.toString(), "--version"), null, TIMEOUT).lines().findFirst().orElse("?");
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
     * @throws TokenKernelsException if it fails or runs longer than {@link #timeout()} (then it and
     *     its child processes are killed), with its output
     */
    String compile(List<String> arguments, Path workingDirectory) {
        List<String> command = new ArrayList<>();
        command.add(executable.toString());
        command.addAll(arguments);
        return run(command, workingDirectory, timeout);
    }

    private static String run(List<String> command, Path workingDirectory, Duration timeout) {
        String commandLine = String.join(" ", command);
        Path output;
        try {
            output = Files.createTempFile("tokenkernels-cxx-", ".log");
        } catch (IOException e) {
            throw new TokenKernelsException("cannot create a file for the output of " + commandLine, e);
        }
        try {
            // Output goes to a file, not to a pipe read here: reading a pipe blocks until the
            // compiler and every child that inherited it exit, so the timeout could never fire.
            ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true)
                    .redirectOutput(output.toFile());
            if (workingDirectory != null) {
                builder.directory(workingDirectory.toFile());
            }
            Process process = builder.start();
            try {
                if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
                    kill(process);
                    throw new TokenKernelsException("host compiler did not finish within " + describe(timeout)
                            + " and was killed: " + commandLine + "\n" + read(output));
                }
            } catch (InterruptedException e) {
                kill(process);
                Thread.currentThread().interrupt();
                throw new TokenKernelsException("interrupted while running " + commandLine, e);
            }
            String text = read(output);
            if (process.exitValue() != 0) {
                throw new TokenKernelsException("host compile failed (exit " + process.exitValue() + "): "
                        + commandLine + "\n" + text);
            }
            return text;
        } catch (IOException e) {
            throw new TokenKernelsException("cannot run " + commandLine, e);
        } finally {
            try {
                Files.deleteIfExists(output);
            } catch (IOException e) {
                // A leftover log in the temp folder is harmless.
            }
        }
    }

    /** Kills the compiler and what it started (cc1plus, as, ld), which would otherwise run on. */
    private static void kill(Process process) {
        List<ProcessHandle> descendants = process.descendants().toList();
        process.destroyForcibly(); // first, so that it starts no more
        descendants.forEach(ProcessHandle::destroyForcibly);
    }

    private static String read(Path output) throws IOException {
        return new String(Files.readAllBytes(output), StandardCharsets.UTF_8);
    }

    private static String describe(Duration timeout) {
        return timeout.toMillisPart() == 0 ? timeout.toSeconds() + " s" : timeout.toMillis() + " ms";
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
