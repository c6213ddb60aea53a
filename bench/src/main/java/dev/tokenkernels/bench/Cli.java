package dev.tokenkernels.bench;

import dev.tokenkernels.cuda.CudaKernelBackend;
import dev.tokenkernels.cuda.KernelReport;
import dev.tokenkernels.runtime.Backends;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Optional;

/** The {@code tokenkernels} command line; the launcher script builds the jar and calls this. */
public final class Cli {
    private static final String USAGE = """
            usage: ./tokenkernels <command> [options]

              report [--quick] [--out DIR]  measure every op on every backend (default DIR: report/)
              info [--kernels]              machine, backends, why any backend is unavailable, kernel
                                            compile times; --kernels: registers, spills and shared
                                            memory of every kernel for sm_80 and sm_90 (NVRTC)
              jmh [JMH options]             run the JMH benchmarks, e.g. jmh LogitStatsBenchmark -p threads=1
              test [Maven options]          run the test suite (mvn verify)
              install [Maven options]       put the jars into the local Maven repository
                                            (mvn install -DskipTests), for your own builds
              build                         rebuild the jar
              help                          this text
            """;

    private Cli() {
    }

    public static void main(String[] args) throws Exception {
        String command = args.length == 0 ? "help" : args[0];
        List<String> rest = Arrays.asList(args).subList(Math.min(1, args.length), args.length);
        switch (command) {
            case "report" -> report(rest);
            case "info" -> info(rest);
            case "jmh" -> org.openjdk.jmh.Main.main(rest.toArray(String[]::new));
            case "help", "-h", "--help" -> System.out.print(USAGE);
            default -> {
                System.err.println("tokenkernels: unknown command '" + command + "'");
                System.err.print(USAGE);
                System.exit(2);
            }
        }
    }

    private static void report(List<String> options) throws Exception {
        Report.Config config = Report.Config.full();
        Path out = Path.of("report");
        for (int i = 0; i < options.size(); i++) {
            switch (options.get(i)) {
                case "--quick" -> config = Report.Config.quick();
                case "--out" -> {
                    if (i + 1 >= options.size()) {
                        fail("--out needs a directory");
                    }
                    out = Path.of(options.get(++i));
                }
                default -> fail("report: unknown option '" + options.get(i) + "'");
            }
        }
        new Report(config, System.out).run(out);
    }

    private static void info(List<String> options) {
        if (options.contains("--kernels")) {
            Optional<String> missing = KernelReport.unavailableReason();
            if (missing.isPresent()) {
                System.out.println("kernel report: NVRTC is unavailable: " + missing.get());
                System.exit(1);
            }
            System.out.println("kernel report: every kernel compiled by " + KernelReport.compilerDescription());
            System.out.print(KernelReport.markdown(KernelReport.compileAll()));
            return;
        }
        System.out.println("machine:");
        Machine.describe().forEach(line -> System.out.println("  " + line));
        System.out.println("backends:");
        for (Backends.Status s : Backends.status()) {
            System.out.println("  " + s.name() + ": " + (s.available() ? "available, " + s.backend().description()
                    : "unavailable: " + s.unavailableReason()));
        }
        System.out.println("default: " + Backends.defaultChoiceReason());
        for (Backends.Status s : Backends.status()) {
            if (s.available() && s.backend() instanceof CudaKernelBackend kernels) {
                System.out.println("kernel compile on " + s.name() + " (cold: empty cache; warm: from the cache):");
                for (String source : CudaKernelBackend.kernelSources()) {
                    CudaKernelBackend.CompileTiming t = kernels.timeCompile(source);
                    System.out.printf(Locale.ROOT, "  %-28s cold %8.1f ms   warm %6.1f ms%n", source, t.coldMillis(),
                            t.warmMillis());
                }
            }
        }
    }

    private static void fail(String message) {
        System.err.println("tokenkernels: " + message);
        System.exit(2);
    }
}
