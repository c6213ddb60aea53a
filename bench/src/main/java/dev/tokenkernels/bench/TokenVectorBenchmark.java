package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.CpuBackend;
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
 * What the benchmarks of per-token vector ops ({@code [N]} scores, entropies, advantages, not
 * logits) share: the token counts, the CPU backend with 1 or 2 threads and the op's
 * {@link Workload}. A subclass names the workload: {@code ./tokenkernels jmh <Subclass> -p tokens=1048576}.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
public abstract class TokenVectorBenchmark {

    /** 2^20 tokens (256 responses of 4096), the report's size, and a small batch. */
    @Param({"1048576", "65536"})
    public int tokens;

    @Param({"1", "2"})
    public int threads;

    Workload workload;
    private CpuBackend cpu;

    /** The op's workload over {@code tokens} tokens. */
    abstract Workload workload(int tokens);

    @Setup(Level.Trial)
    public void setUp() {
        workload = workload(tokens);
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
