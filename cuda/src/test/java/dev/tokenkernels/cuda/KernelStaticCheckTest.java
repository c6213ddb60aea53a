package dev.tokenkernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * Static checks of every kernel file of {@code kernels/}: NVRTC compiles it for sm_80 and sm_90
 * with no warnings and no register spills; every {@code extern "C" __global__} entry is in the
 * PTX, and its parameter list there has the sizes the emulator's build of the same source has
 * (so a launch checked on cuda-emu is checked against the GPU's signature too); no multiply by an
 * {@code inv_t} parameter may be contracted into an fma ({@link InverseTemperatureProducts}).
 * Writes the kernel report to {@code target/kernel-report.md}.
 */
class KernelStaticCheckTest {
    private static final List<KernelReport.Row> REPORT = new ArrayList<>();

    @TestFactory
    Stream<DynamicTest> everyKernelCompilesCleanlyForEveryArchitecture() {
        List<String> sources = KernelSource.list(getClass().getClassLoader()).stream()
                .filter(s -> !s.startsWith("broken/")).toList();
        assertTrue(sources.contains("loss/logit_stats.cu"), "the kernels of kernels/ are on the test class path: " + sources);
        return sources.stream().flatMap(source -> KernelReport.ARCHES.stream().map(arch ->
                DynamicTest.dynamicTest(source + " for " + arch, () -> check(source, arch))));
    }

    private static void check(String path, String arch) throws Exception {
        KernelSource source = KernelSource.load(path);
        NvrtcCompiler.Compiled compiled = new NvrtcCompiler(NvrtcLocator.find().nvrtc())
                .compile(source, arch, KernelReport.toolkitIncludes(source));
        assertTrue(compiled.warnings().isEmpty(), "warnings: " + compiled.log());
        NvrtcOptionsTest.assertNoFastMath(compiled.options());
        List<String> entries = EmuModuleBuilder.entryPoints(source.text());
        assertFalse(entries.isEmpty(), "no entry points found in " + path);
        assertEquals(List.of(), InverseTemperatureProducts.contractible(source.text(), compiled.ptx()),
                "multiplies by inv_t that ptxas may contract (use __fmul_rn)");
        Map<String, int[]> ptx = PtxEntries.parse(compiled.ptx());
        for (String entry : entries) {
            assertTrue(ptx.containsKey(entry), entry + " is not a PTX entry of " + path);
            KernelResources r = compiled.resources().stream().filter(k -> k.entry().equals(entry)).findFirst()
                    .orElseThrow(() -> new AssertionError("ptxas said nothing about " + entry));
            assertEquals(0, r.spillStoreBytes() + r.spillLoadBytes(), entry + " spills: " + r);
            assertArrayEquals(ptx.get(entry), EmuDevice.backend().compiledParameterSizes(path, entry),
                    entry + ": parameter sizes differ between the GPU and the emulator builds");
        }
        synchronized (REPORT) {
            REPORT.addAll(KernelReport.compile(source, arch));
            Path out = Path.of("target", "kernel-report.md");
            Files.createDirectories(out.getParent());
            Files.writeString(out, "# Kernel report (" + KernelReport.compilerDescription() + ")\n\n"
                    + KernelReport.markdown(REPORT));
        }
    }
}
