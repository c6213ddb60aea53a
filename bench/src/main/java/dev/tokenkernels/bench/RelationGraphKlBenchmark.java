package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The token relationship graph loss and its gradient on the CPU backend:
 * {@code ./tokenkernels jmh RelationGraphKlBenchmark -p shape=8x512x768x1024}. Shapes are
 * {@code BxLxd_sxd_t} token features, not logits, so this does not extend
 * {@link WorkloadBenchmark}; there is no scalar baseline (see {@link RelationGraphKlWorkload}).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
public class RelationGraphKlBenchmark {

    /** The report's shape (a BERT-base student, a BERT-large-width teacher) and a short-sequence one. */
    @Param({"8x512x768x1024", "32x128x768x1024"})
    public String shape;

    @Param({"F32", "BF16"})
    public String dtype;

    @Param({"1", "2"})
    public int threads;

    private RelationGraphKlWorkload workload;
    private CpuBackend cpu;

    @Setup(Level.Trial)
    public void setUp() {
        String[] dims = shape.split("x");
        workload = new RelationGraphKlWorkload(Integer.parseInt(dims[0]), Integer.parseInt(dims[1]),
                Integer.parseInt(dims[2]), Integer.parseInt(dims[3]), DType.valueOf(dtype));
        cpu = CpuBackend.withThreads(threads);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        workload.close();
        cpu.close();
    }

    @Benchmark
    public void op() {
        workload.run(cpu);
    }
}
