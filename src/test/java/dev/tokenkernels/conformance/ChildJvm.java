package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;

/**
 * Runs a test class's {@code main} in a child JVM (this JVM's java, class path and module flags,
 * plus {@code flags}) and returns its standard output: for behaviour that depends on JVM flags,
 * such as the interpreter only or the vector width. A non-zero exit fails the test with the child's
 * standard error.
 */
final class ChildJvm {
    private ChildJvm() {
    }

    static String run(Class<?> main, List<String> flags) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString()));
        command.addAll(flags);
        command.addAll(List.of("--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                "-cp", System.getProperty("java.class.path"), main.getName()));
        Process child = new ProcessBuilder(command).start();
        // stderr read alongside stdout, so that neither pipe can fill and stall the child
        CompletableFuture<String> err = CompletableFuture.supplyAsync(() -> read(child.getErrorStream()));
        String out = read(child.getInputStream());
        assertEquals(0, child.waitFor(), "child JVM " + flags + ": " + out + err.join());
        return out;
    }

    private static String read(InputStream in) {
        try {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            in.transferTo(bytes);
            return bytes.toString(StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
