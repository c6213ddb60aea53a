package dev.tokenkernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Running the host compiler, with shell scripts standing in for it. */
class HostCompilerTest {

    private static HostCompiler fake(Path dir, String body, Duration timeout) throws IOException {
        Path script = dir.resolve("fake-c++");
        Files.writeString(script, "#!/bin/sh\n" + body + "\n");
        Files.setPosixFilePermissions(script, PosixFilePermissions.fromString("rwx------"));
        return new HostCompiler(script, "fake 1.0", timeout);
    }

    @Test
    void aHungCompilerIsKilledWithItsChildrenAtTheTimeout(@TempDir Path dir) throws Exception {
        Path childPid = dir.resolve("child.pid");
        // Like a compiler driver waiting on cc1plus: the child holds the output open too.
        HostCompiler compiler = fake(dir, "echo compiling; sleep 60 & echo $! > " + childPid + "; wait",
                Duration.ofMillis(500));
        TokenKernelsException e = assertTimeoutPreemptively(Duration.ofSeconds(20),
                () -> assertThrows(TokenKernelsException.class, () -> compiler.compile(List.of("-c", "x.cpp"), dir)));
        assertTrue(e.getMessage().contains("500 ms") && e.getMessage().contains("fake-c++ -c x.cpp")
                && e.getMessage().contains("compiling"), e.getMessage());
        Optional<ProcessHandle> child = ProcessHandle.of(Long.parseLong(Files.readString(childPid).strip()));
        long deadline = System.nanoTime() + Duration.ofSeconds(5).toNanos();
        while (child.isPresent() && child.get().isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertFalse(child.isPresent() && child.get().isAlive(), "the compiler's child process was killed too");
    }

    @Test
    void aFailureCarriesTheCompilerOutput(@TempDir Path dir) throws IOException {
        HostCompiler compiler = fake(dir, "echo 'x.cpp:1: error: fake' >&2; exit 3", HostCompiler.TIMEOUT);
        TokenKernelsException e = assertThrows(TokenKernelsException.class, () -> compiler.compile(List.of("x.cpp"), dir));
        assertTrue(e.getMessage().contains("exit 3") && e.getMessage().contains("x.cpp:1: error: fake"), e.getMessage());
    }

    @Test
    void warningsAreReturned(@TempDir Path dir) throws IOException {
        HostCompiler compiler = fake(dir, "echo 'warning: fake'", HostCompiler.TIMEOUT);
        assertEquals("warning: fake\n", compiler.compile(List.of(), dir));
    }
}
