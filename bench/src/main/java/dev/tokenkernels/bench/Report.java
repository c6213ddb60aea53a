package dev.tokenkernels.bench;

import dev.tokenkernels.ops.loss.Divergence;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.Backends;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.function.DoubleSupplier;
import java.util.function.Supplier;

/**
 * {@code tokenkernels report}: in one run, the machine, the backends, a bandwidth probe and each
 * op's throughput per backend and shape, as a fraction of the probe and as a speedup over the
 * scalar Java baseline. Writes {@code report.csv}, {@code report.md} and {@code throughput.png}.
 *
 * <p>Each timed run of an op follows a probe sweep with the same threads, and the fraction is the
 * median over runs of each run's throughput over its own sweep's: on a shared VM the bandwidth
 * drifts by 10-25% within seconds, and an op timed minutes (or seconds) away from its probe would
 * be compared with another machine. The CSV also gives the median run against the best of those
 * sweeps, the pessimistic reading, near what reports before 2026-11-28 gave (the median run
 * against the best of three sweeps taken before the workload was allocated). A typical sweep is
 * slower than the best one, so the paired fraction is the higher of the two by construction.
 */
public final class Report {

    /**
     * One measured line of the report.
     *
     * @param millis the median timed run
     * @param probeGbPerSecond the median of the sweeps paired with the runs
     * @param fractionOfProbe the median over runs of (the run's GB/s) / (its sweep's GB/s)
     * @param fractionOfBestProbe the median run's GB/s over the best of the sweeps
     */
    public record Row(String op, String backend, int threads, String shape, String dtype, double millis,
                      double gbPerSecond, double probeGbPerSecond, double fractionOfProbe, double fractionOfBestProbe,
                      double speedupOverScalar) {
    }

    /**
     * Below this many bytes (twice the 32 MiB L3 here) an op's data may stay partly in the caches
     * from one run to the next, which a probe sweep evicts: such workloads run once more, untimed,
     * after their sweep, so they are timed as warm as the scalar baseline, which runs back to back.
     */
    private static final long CACHE_RESIDENT_BYTES = 64L << 20;

    /** One op on one backend: the figures of a {@link Row}. */
    record Timing(double millis, double probeGbPerSecond, double fractionOfProbe, double fractionOfBestProbe) {
    }

    /**
     * What to measure: the logits shapes ({@code rows, vocab}), the policy-loss shapes (RL batches:
     * more tokens, larger vocabularies), the token-feature shape of the relation graph loss
     * ({@code B, L, d_s, d_t}), how often, and how big a probe.
     */
    public record Config(List<int[]> shapes, List<int[]> policyShapes, int[] relationGraphShape, List<DType> dtypes,
                         int repeats, long probeBytes, boolean scalar) {
        public static Config full() {
            return new Config(List.of(new int[] {4096, 32000}, new int[] {1024, 128256}),
                    List.of(new int[] {8192, 32000}, new int[] {2048, 151936}), new int[] {8, 512, 768, 1024},
                    List.of(DType.F32, DType.BF16), 7, 1L << 30, true);
        }

        /** Small shapes, for a smoke test of the whole pipeline in seconds. */
        public static Config quick() {
            return new Config(List.of(new int[] {64, 4000}), List.of(new int[] {64, 4000}), new int[] {2, 128, 256, 384},
                    List.of(DType.F32, DType.BF16), 3, 64L << 20, true);
        }
    }

    private final Config config;
    private final PrintStream out;

    public Report(Config config, PrintStream out) {
        this.config = config;
        this.out = out;
    }

    /** Measures everything, prints it, and writes the files into {@code directory}. */
    public List<Row> run(Path directory) throws IOException {
        out.println("== machine");
        Machine.describe().forEach(line -> out.println("  " + line));
        out.println("== backends (" + Backends.defaultChoiceReason() + ")");
        for (Backends.Status s : Backends.status()) {
            out.println("  " + s.name() + ": " + (s.available() ? s.backend().description()
                    : "unavailable: " + s.unavailableReason()));
        }

        int allThreads = CpuBackend.shared().threads();
        try (CpuBackend one = CpuBackend.withThreads(1); BandwidthProbe probe = new BandwidthProbe(config.probeBytes())) {
            out.println("== bandwidth probe (Vector API read sweep of " + (config.probeBytes() >> 20)
                    + " MiB, again before each timed run)");
            out.printf(Locale.ROOT, "  1 thread: %.1f GB/s; %d threads: %.1f GB/s (best of 3)%n", probe.best(one, 3),
                    allThreads, probe.best(CpuBackend.shared(), 3));

            List<Backend> backends = new ArrayList<>(List.of(one));
            if (allThreads > 1) {
                backends.add(CpuBackend.shared());
            }
            for (Backends.Status s : Backends.status()) {
                // cuda-emu is a correctness tool: its timings would say nothing about a GPU.
                if (s.available() && !(s.backend() instanceof CpuBackend) && !s.name().equals("cuda-emu")) {
                    backends.add(s.backend());
                }
            }

            out.println("== ops");
            out.printf(Locale.ROOT, "  %-18s %-10s %-15s %-5s %10s %8s %8s %8s %9s%n",
                    "op", "backend", "shape", "dtype", "ms", "GB/s", "probe", "of probe", "vs scalar");
            List<Row> rows = new ArrayList<>();
            for (Supplier<Workload> make : workloads()) {
                try (Workload w = make.get()) {
                    double scalarMillis = config.scalar() && w.hasScalar()
                            ? millis(w::runScalar, Math.min(3, config.repeats())) : Double.NaN;
                    for (Backend backend : backends) {
                        int threads = backend instanceof CpuBackend cpu ? cpu.threads() : 0;
                        // kernel backends: the host's bandwidth with every thread, for scale only
                        CpuBackend sweeper = threads == 1 ? one : CpuBackend.shared();
                        Timing t = measure(() -> w.run(backend), () -> probe.sweep(sweeper), w.bytes(),
                                config.repeats());
                        double ms = t.millis();
                        Row row = new Row(w.op(), backend.name(), threads, w.shape(), w.dtype(), ms,
                                w.bytes() / (ms * 1e6), t.probeGbPerSecond(), t.fractionOfProbe(),
                                t.fractionOfBestProbe(), scalarMillis / ms);
                        rows.add(row);
                        out.printf(Locale.ROOT, "  %-18s %-10s %-15s %-5s %10.2f %8.2f %8.1f %7.0f%% %9s%n",
                                row.op(), label(row), row.shape(), row.dtype(), row.millis(), row.gbPerSecond(),
                                row.probeGbPerSecond(), 100 * row.fractionOfProbe(), speedup(row));
                    }
                }
            }
            write(directory, rows);
            return rows;
        }
    }

    private List<Supplier<Workload>> workloads() {
        List<Supplier<Workload>> list = new ArrayList<>();
        for (int[] shape : config.shapes()) {
            for (DType dtype : config.dtypes()) {
                list.add(() -> new LogitStatsWorkload(shape[0], shape[1], dtype));
            }
        }
        for (int[] shape : config.shapes()) {
            for (DType dtype : config.dtypes()) {
                list.add(() -> new DivergenceWorkload(shape[0], shape[1], dtype, Divergence.Kind.FORWARD_KL));
            }
        }
        int[] first = config.shapes().get(0);
        for (DType dtype : config.dtypes()) {
            list.add(() -> new ProxyDistributionWorkload(first[0], first[1], dtype));
        }
        list.add(() -> new AlignDistilWorkload(first[0], first[1], DType.F32));
        for (DType dtype : config.dtypes()) {
            list.add(() -> new TargetLogProbWorkload(first[0], first[1], dtype));
        }
        for (int[] shape : config.policyShapes()) {
            for (DType dtype : config.dtypes()) {
                list.add(() -> new PolicyLossWorkload(shape[0], shape[1], dtype));
            }
        }
        // The gradient in the logits' dtype: half its bytes (read against policy_loss BF16).
        if (config.dtypes().contains(DType.BF16) && !config.policyShapes().isEmpty()) {
            int[] policy = config.policyShapes().get(0);
            list.add(() -> new PolicyLossWorkload(policy[0], policy[1], DType.BF16, DType.BF16));
        }
        for (DType dtype : config.dtypes()) {
            list.add(() -> new ContrastiveTargetProbWorkload(first[0], first[1], dtype));
            list.add(() -> new PreferenceLossWorkload(first[0], first[1], dtype));
        }
        for (DType dtype : config.dtypes()) {
            list.add(() -> new OneTokenRolloutWorkload(first[0], first[1], dtype));
        }
        // The CPU sampler skips entries that cannot win a draw: on peaked rows most of them.
        list.add(() -> new OneTokenRolloutWorkload(first[0], first[1], DType.F32, true));
        // DAC-KL's band costs a bucketing pass and the ordering of the band's edges: read against divergence/fkl.
        list.add(() -> new ClippedKlWorkload(first[0], first[1], DType.F32, 0f));
        list.add(() -> new ClippedKlWorkload(first[0], first[1], DType.F32, 0.01f));
        // The other kinds cost more arithmetic per element; one shape shows how much.
        for (Divergence.Kind kind : List.of(Divergence.Kind.REVERSE_KL, Divergence.Kind.JSD,
                Divergence.Kind.TOTAL_VARIATION)) {
            list.add(() -> new DivergenceWorkload(first[0], first[1], DType.F32, kind));
        }
        int[] graph = config.relationGraphShape();
        for (DType dtype : config.dtypes()) {
            list.add(() -> new RelationGraphKlWorkload(graph[0], graph[1], graph[2], graph[3], dtype));
        }
        // Per-token vectors of a batch of 256 responses of the first shape's row count (2^20 tokens in the full run).
        int tokens = first[0] * 256;
        list.add(() -> new TokenSelectionWorkload(tokens));
        list.add(() -> new EntropyNormalizationWorkload(tokens));
        list.add(() -> new TokenTermsWorkload(tokens));
        return list;
    }

    /** "12.3x", or "-" for ops without a scalar baseline. */
    static String speedup(Row row) {
        return Double.isNaN(row.speedupOverScalar()) ? "-" : String.format(Locale.ROOT, "%.1fx", row.speedupOverScalar());
    }

    static String label(Row row) {
        return row.threads() > 0 ? row.backend() + "/" + row.threads() + "t" : row.backend();
    }

    /** Median wall time of {@code repeats} runs back to back, in milliseconds, after {@link #warmUp}. */
    static double millis(Runnable task, int repeats) {
        warmUp(task);
        double[] times = new double[repeats];
        for (int i = 0; i < repeats; i++) {
            long start = System.nanoTime();
            task.run();
            times[i] = (System.nanoTime() - start) / 1e6;
        }
        return median(times);
    }

    /**
     * {@code repeats} timed runs of {@code task} (moving {@code bytes}), each right after a probe
     * {@code sweep} (and, below {@link #CACHE_RESIDENT_BYTES}, an untimed run), after
     * {@link #warmUp}: {@link #summarize}d.
     */
    static Timing measure(Runnable task, DoubleSupplier sweep, long bytes, int repeats) {
        warmUp(task);
        double[] times = new double[repeats];
        double[] probes = new double[repeats];
        for (int i = 0; i < repeats; i++) {
            probes[i] = sweep.getAsDouble();
            if (bytes < CACHE_RESIDENT_BYTES) {
                task.run();
            }
            long start = System.nanoTime();
            task.run();
            times[i] = (System.nanoTime() - start) / 1e6;
        }
        return summarize(times, probes, bytes);
    }

    /**
     * Run {@code i} took {@code times[i]} ms for {@code bytes} bytes right after a sweep of
     * {@code probes[i]} GB/s: the median run, the median sweep, the median of the runs' fractions
     * of their own sweeps, and the median run against the best sweep. Sorts neither argument.
     */
    static Timing summarize(double[] times, double[] probes, long bytes) {
        double[] fractions = new double[times.length];
        for (int i = 0; i < times.length; i++) {
            fractions[i] = bytes / (times[i] * 1e6) / probes[i];
        }
        double best = Arrays.stream(probes).max().orElseThrow();
        double millis = median(times.clone());
        return new Timing(millis, median(probes.clone()), median(fractions), bytes / (millis * 1e6) / best);
    }

    /**
     * Runs {@code task} at least twice and for 3 s (at most 50 times), so the JIT has compiled the
     * hot loops, not just their OSR versions: an op whose dtype path is new to a JIT-compiled
     * method deoptimizes and recompiles first.
     */
    private static void warmUp(Runnable task) {
        long warmStart = System.nanoTime();
        for (int i = 0; i < 2 || (System.nanoTime() - warmStart < 3_000_000_000L && i < 50); i++) {
            task.run();
        }
    }

    /** The median ({@code values} is sorted in place; the upper one of an even count). */
    private static double median(double[] values) {
        Arrays.sort(values);
        return values[values.length / 2];
    }

    /** "min-max" (or one value) of the probes the CPU rows with one thread ({@code one}) or more used. */
    private static String probeRange(List<Row> rows, boolean one) {
        double min = Double.POSITIVE_INFINITY;
        double max = 0;
        for (Row r : rows) {
            if (r.threads() > 0 && (r.threads() == 1) == one) {
                min = Math.min(min, r.probeGbPerSecond());
                max = Math.max(max, r.probeGbPerSecond());
            }
        }
        if (max == 0) {
            return "-";
        }
        return String.format(Locale.ROOT, Math.abs(max - min) < 0.05 ? "%.1f" : "%.1f-%.1f", min, max);
    }

    private void write(Path directory, List<Row> rows) throws IOException {
        Files.createDirectories(directory);
        StringBuilder csv = new StringBuilder(
                "op,backend,threads,shape,dtype,millis,gb_per_s,probe_gb_per_s,fraction_of_probe,fraction_of_best_probe,"
                        + "speedup_over_scalar\n");
        StringBuilder md = new StringBuilder("# tokenkernels report\n\n");
        Machine.describe().forEach(line -> md.append("- ").append(line).append('\n'));
        md.append(String.format(Locale.ROOT, "- read bandwidth probe, a sweep right before each timed run (per op the"
                + " median): %s GB/s (1 thread), %s GB/s (%d threads); \"of probe\" is the median over runs of each"
                + " run's GB/s over its own sweep's%n%n", probeRange(rows, true), probeRange(rows, false),
                CpuBackend.shared().threads()));
        md.append("| op | backend | shape | dtype | ms | GB/s | probe GB/s | of probe | vs scalar |\n");
        md.append("|---|---|---|---|---:|---:|---:|---:|---:|\n");
        for (Row r : rows) {
            csv.append(String.format(Locale.ROOT, "%s,%s,%d,%s,%s,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f%n", r.op(), r.backend(),
                    r.threads(), r.shape(), r.dtype(), r.millis(), r.gbPerSecond(), r.probeGbPerSecond(),
                    r.fractionOfProbe(), r.fractionOfBestProbe(), r.speedupOverScalar()));
            md.append(String.format(Locale.ROOT, "| %s | %s | %s | %s | %.2f | %.2f | %.1f | %.0f%% | %s |%n", r.op(),
                    label(r), r.shape(), r.dtype(), r.millis(), r.gbPerSecond(), r.probeGbPerSecond(),
                    100 * r.fractionOfProbe(), speedup(r)));
        }
        Files.writeString(directory.resolve("report.csv"), csv);
        Files.writeString(directory.resolve("report.md"), md);
        Path chart = directory.resolve("throughput.png");
        try {
            Chart.write(rows, chart);
            out.println("== wrote " + directory.resolve("report.csv") + ", report.md, throughput.png");
        } catch (IOException | RuntimeException | Error e) {
            out.println("== wrote " + directory.resolve("report.csv") + " and report.md; no chart: " + e);
        }
    }
}
