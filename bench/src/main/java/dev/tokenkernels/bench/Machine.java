package dev.tokenkernels.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import jdk.incubator.vector.FloatVector;

/** A one-paragraph description of the machine, for reports and bench/RESULTS.md. */
public final class Machine {
    private Machine() {
    }

    public static String cpuModel() {
        return firstValue(Path.of("/proc/cpuinfo"), "model name")
                .orElse(System.getProperty("os.arch"));
    }

    public static String memory() {
        return firstValue(Path.of("/proc/meminfo"), "MemTotal")
                .map(v -> {
                    long kib = Long.parseLong(v.replaceAll("[^0-9]", ""));
                    return String.format("%.1f GiB", kib / 1048576.0);
                })
                .orElse("unknown");
    }

    public static List<String> describe() {
        return List.of(
                "cpu: " + cpuModel() + ", " + Runtime.getRuntime().availableProcessors() + " logical cores",
                "memory: " + memory(),
                "os: " + System.getProperty("os.name") + " " + System.getProperty("os.version") + " "
                        + System.getProperty("os.arch"),
                "jvm: " + System.getProperty("java.vm.name") + " " + System.getProperty("java.runtime.version"),
                "vector api: " + FloatVector.SPECIES_PREFERRED.vectorBitSize() + "-bit float vectors ("
                        + FloatVector.SPECIES_PREFERRED.length() + " lanes)");
    }

    private static java.util.Optional<String> firstValue(Path file, String key) {
        try {
            for (String line : Files.readAllLines(file)) {
                if (line.startsWith(key)) {
                    int colon = line.indexOf(':');
                    return java.util.Optional.of(line.substring(colon + 1).trim());
                }
            }
        } catch (IOException | RuntimeException e) {
            // not Linux, or not readable: describe what we can
        }
        return java.util.Optional.empty();
    }
}
