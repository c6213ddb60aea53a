package dev.tokenkernels.bench;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.runtime.DType;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The report pipeline end to end on tiny shapes: what it prints and the files it writes (not its timings). */
class ReportTest {

    /**
     * 200 MB in 10, 40, 20 and 30 ms after sweeps of 10, 5, 20 and 10 GB/s: the runs' GB/s are 20,
     * 5, 10 and 6.67, their fractions of their own sweeps 2, 1, 0.5 and 0.67 (median, the upper of
     * an even count: 1, where the median run over the median sweep would be 0.67), the median run
     * 30 ms, the median sweep 10 GB/s, and the median run over the best sweep 6.67 / 20.
     */
    @Test
    void summarizePairsEachRunWithItsOwnSweep() {
        double[] times = {10, 40, 20, 30};
        double[] probes = {10, 5, 20, 10};
        Report.Timing t = Report.summarize(times, probes, 200_000_000L);
        assertEquals(30, t.millis(), 1e-12);
        assertEquals(10, t.probeGbPerSecond(), 1e-12);
        assertEquals(1, t.fractionOfProbe(), 1e-12);
        assertEquals(1 / 3.0, t.fractionOfBestProbe(), 1e-12);
        assertArrayEquals(new double[] {10, 40, 20, 30}, times, "left in their order");
        assertArrayEquals(new double[] {10, 5, 20, 10}, probes, "left in their order");
    }

    /**
     * Whatever the runs and sweeps, the median run over the best sweep is at most the paired
     * fraction: each run's own sweep is at most the best one, and medians keep the order.
     */
    @Test
    void theBestSweepReadingIsThePessimisticOne() {
        java.util.SplittableRandom random = new java.util.SplittableRandom(9);
        for (int trial = 0; trial < 200; trial++) {
            int n = 1 + random.nextInt(9);
            double[] times = new double[n];
            double[] probes = new double[n];
            for (int i = 0; i < n; i++) {
                times[i] = random.nextDouble(1, 500);
                probes[i] = random.nextDouble(5, 25);
            }
            Report.Timing t = Report.summarize(times, probes, 1L << 30);
            assertTrue(t.fractionOfBestProbe() <= t.fractionOfProbe() * (1 + 1e-12), t.toString());
        }
    }

    @Test
    void writesCsvMarkdownAndChart(@TempDir Path dir) throws Exception {
        var config = new Report.Config(List.of(new int[] {8, 100}), List.of(new int[] {8, 100}), new int[] {2, 6, 5, 3},
                List.of(DType.F32, DType.BF16), 1, 1 << 20, true);
        ByteArrayOutputStream printed = new ByteArrayOutputStream();
        List<Report.Row> rows = new Report(config, new PrintStream(printed, true, StandardCharsets.UTF_8)).run(dir);

        int backends = Runtime.getRuntime().availableProcessors() > 1 ? 2 : 1;
        // logit_stats, forward KL, the min-p proxy, target_log_prob, contrastive_target_prob,
        // preference_loss and one_token_rollout for each dtype, policy_loss for each policy shape and dtype
        // and once with a BF16 gradient, then AlignDistil, one_token_rollout/peaked, the hard and soft clipped KL, reverse KL, JSD and total
        // variation in F32, the relation graph loss for each dtype, then token selection, entropy
        // normalization and the token terms over 8 * 256 tokens.
        assertEquals(29 * backends, rows.size());
        for (Report.Row row : rows) {
            assertTrue(List.of("logit_stats", "divergence/fkl", "divergence/rkl", "divergence/jsd", "divergence/tvd",
                    "proxy_distribution", "align_distil", "target_log_prob", "clipped_kl/hard", "clipped_kl/soft",
                    "relation_graph_kl", "policy_loss", "policy_loss/bf16-grad", "preference_loss", "contrastive_target_prob",
                    "one_token_rollout", "one_token_rollout/peaked", "token_selection", "entropy_normalization",
                    "token_terms").contains(row.op()), row.op());
            boolean tokenVector = List.of("token_selection", "entropy_normalization", "token_terms").contains(row.op());
            assertEquals(row.op().equals("relation_graph_kl") ? "2x6x5x3" : tokenVector ? "2048" : "8x100", row.shape());
            assertTrue(row.millis() > 0 && row.gbPerSecond() > 0, row.toString());
            // each op's own probe sweeps, taken just before its runs
            assertTrue(row.probeGbPerSecond() > 0 && Double.isFinite(row.probeGbPerSecond()), row.toString());
            assertTrue(row.fractionOfProbe() > 0 && Double.isFinite(row.fractionOfProbe()), row.toString());
            assertTrue(row.fractionOfBestProbe() > 0 && Double.isFinite(row.fractionOfBestProbe()), row.toString());
            boolean hasScalar = List.of("logit_stats", "divergence/fkl", "proxy_distribution", "target_log_prob",
                    "policy_loss", "contrastive_target_prob", "one_token_rollout", "one_token_rollout/peaked",
                    "token_selection").contains(row.op());
            assertTrue(hasScalar ? row.speedupOverScalar() > 0 : Double.isNaN(row.speedupOverScalar()), row.toString());
        }
        List<String> csv = Files.readAllLines(dir.resolve("report.csv"));
        assertEquals(rows.size() + 1, csv.size());
        assertTrue(csv.get(0).startsWith("op,backend,threads,shape,dtype,millis,gb_per_s,probe_gb_per_s,fraction_of_probe,"
                + "fraction_of_best_probe,"), csv.get(0));
        String md = Files.readString(dir.resolve("report.md"));
        assertTrue(md.contains("| logit_stats | cpu/1t | 8x100 | F32 |"), md);
        assertTrue(md.contains("read bandwidth probe, a sweep right before each timed run") && md.contains("| probe GB/s |"), md);
        assertTrue(md.contains("| divergence/jsd | cpu/1t | 8x100 | F32 |") && md.contains(" | - |"), md);
        assertTrue(md.contains("| relation_graph_kl | cpu/1t | 2x6x5x3 | BF16 |"), md);
        assertNotNull(ImageIO.read(dir.resolve("throughput.png").toFile()), "throughput.png is a PNG");
        String out = printed.toString(StandardCharsets.UTF_8);
        assertTrue(out.contains("== bandwidth probe") && out.contains("cpu: "), out);
    }
}
