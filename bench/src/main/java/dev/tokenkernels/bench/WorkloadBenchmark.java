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
 * What every op benchmark shares: the language-model shapes, the dtypes, the CPU backend with 1
 * or 2 threads, the op's {@link Workload} and its scalar Java baseline. A subclass names the op's
 * workload; run one with {@code ./tokenkernels jmh <Subclass>}.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
public abstract class WorkloadBenchmark {

    @Param({"4096x32000", "1024x128256"})
    public String shape;

    @Param({"F32", "BF16"})
    public String dtype;

    @Param({"1", "2"})
    public int threads;

    private Workload workload;
    private CpuBackend cpu;

    /** The op's workload for {@code rows x vocab} logits of {@code dtype}. */
    abstract Workload workload(int rows, int vocab, DType dtype);

    @Setup(Level.Trial)
    public void setUp() {
        String[] dims = shape.split("x");
        workload = workload(Integer.parseInt(dims[0]), Integer.parseInt(dims[1]), DType.valueOf(dtype));
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

    /** The plain scalar loop, single thread (the threads parameter does not apply). */
    @Benchmark
    public void scalarBaseline() {
        workload.runScalar();
    }
}
