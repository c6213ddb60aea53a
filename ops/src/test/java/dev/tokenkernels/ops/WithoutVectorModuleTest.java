package dev.tokenkernels.ops;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.ops.loss.LogitStats;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.Tensor;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * A JVM started without {@code --add-modules jdk.incubator.vector} gets a message that says so
 * from the first CPU op call, not a bare {@code NoClassDefFoundError: jdk/incubator/vector/Vector}.
 */
class WithoutVectorModuleTest {

    /** Runs one LogitStats call on the cpu backend; the test starts it in a JVM without the module. */
    public static final class Probe {
        public static void main(String[] args) {
            try (Tensor z = Tensor.of(new float[] {1f, 2f}, 1, 2);
                 LogitStats.Result r = LogitStats.compute(z, null, LogitStats.Options.defaults().on(CpuBackend.shared()))) {
                System.out.println("ran: " + r.lse().getFloat(0));
            }
        }
    }

    @Test
    void theFirstCpuCallSaysWhichFlagIsMissing() throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Path log = Files.createTempFile("without-vector-module", ".log");
        ProcessBuilder builder = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
                Probe.class.getName()).redirectErrorStream(true).redirectOutput(log.toFile());
        builder.environment().remove("JDK_JAVA_OPTIONS");
        builder.environment().remove("JAVA_TOOL_OPTIONS");
        Process process = builder.start();
        boolean finished = process.waitFor(60, TimeUnit.SECONDS);
        if (!finished) {
            process.destroyForcibly();
        }
        String output = Files.readString(log, StandardCharsets.UTF_8);
        Files.delete(log);
        assertTrue(finished, "the probe JVM finished within a minute: " + output);
        assertEquals(1, process.exitValue(), output);
        assertTrue(output.contains("BackendUnavailableException: backend 'cpu' is unavailable")
                && output.contains("--add-modules jdk.incubator.vector"), output);
    }
}
