package dev.tokenkernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/** NVRTC through FFM, without a GPU: found, compiles to CUBIN and PTX, reports resources and errors. */
class NvrtcTest {
    private static final String SOURCE = """
            template <typename T>
            __global__ void scale(T* x, T factor) { x[threadIdx.x] *= factor; }
            template __global__ void scale<float>(float*, float);

            struct Pair { double a; int b; };

            extern "C" __global__ void tile_sum(const float* in, float* out, long long n, float bias, Pair p) {
                __shared__ float tile[128];
                tile[threadIdx.x] = threadIdx.x < n ? in[threadIdx.x] : 0.0f;
                __syncthreads();
                if (threadIdx.x == 0) {
                    float s = 0;
                    for (int i = 0; i < 128; i++) s += tile[i];
                    out[0] = s + bias + (float) p.a + p.b;
                }
            }
            """;

    private static Nvrtc nvrtc() {
        NvrtcLocator.Result r = NvrtcLocator.find();
        assertTrue(r.available(), "NVRTC must be found (Bytedeco cuda-redist is a test dependency): " + r.unavailableReason());
        return r.nvrtc();
    }

    @Test
    void compilesForAmpereAndHopperWithResources() {
        NvrtcCompiler compiler = new NvrtcCompiler(nvrtc());
        KernelSource source = new KernelSource("probe.cu", Map.of("probe.cu", SOURCE));
        for (String arch : List.of("sm_80", "sm_90")) {
            NvrtcCompiler.Compiled c = compiler.compile(source, arch, List.of());
            assertTrue(c.cubin().length > 4 && c.cubin()[0] == 0x7f && c.cubin()[1] == 'E', "a CUBIN is an ELF file");
            assertTrue(c.ptx().contains(".entry tile_sum("), c.ptx());
            assertTrue(c.warnings().isEmpty(), c.log());
            assertArrayEquals(new int[] {8, 8, 8, 4, 16}, PtxEntries.parse(c.ptx()).get("tile_sum"),
                    "two pointers, a long long, a float and a 16-byte struct");
            KernelResources r = c.resources().stream().filter(k -> k.entry().equals("tile_sum")).findFirst().orElseThrow();
            assertEquals(arch, r.arch());
            assertTrue(r.registers() > 0, r.toString());
            assertEquals(0, r.spillStoreBytes() + r.spillLoadBytes(), r.toString());
            assertEquals(512, r.sharedBytes(), "128 floats of static shared memory");
            assertEquals(1, r.barriers(), r.toString());
        }
    }

    @Test
    void ptxOnlyForAVirtualArchitecture() {
        NvrtcCompiler.Compiled c = new NvrtcCompiler(nvrtc())
                .compile(new KernelSource("probe.cu", Map.of("probe.cu", SOURCE)), "compute_90", List.of());
        assertNull(c.cubin());
        assertTrue(c.ptx().contains(".target sm_90"), c.ptx());
    }

    @Test
    void compileErrorsCarryTheLog() {
        TokenKernelsException e = assertThrows(TokenKernelsException.class, () -> new NvrtcCompiler(nvrtc())
                .compile(new KernelSource("bad.cu", Map.of("bad.cu", "__global__ void k() { undeclared_name = 1; }")),
                        "sm_90", List.of()));
        assertTrue(e.getMessage().contains("identifier \"undeclared_name\" is undefined") && e.getMessage().contains("bad.cu"),
                "the message carries NVRTC's log: " + e.getMessage());
    }

    @Test
    void nameExpressionsGiveTheMangledNamesOfTemplateKernels() {
        Nvrtc.Output out = nvrtc().compile(SOURCE, "probe.cu", List.of("--gpu-architecture=sm_90"), true,
                List.of("scale<float>"));
        String lowered = out.loweredNames().get(0);
        assertTrue(lowered.startsWith("_Z") && lowered.contains("scale"), lowered);
        assertTrue(out.ptx().contains(".entry " + lowered), "the lowered name is the PTX entry");
    }

    @Test
    void toolkitHalfHeadersCompileWithTheToolkitIncludeFolder() {
        // NVRTC 13.1 has no built-in cuda_fp16.h/cuda_bf16.h; a toolkit's include folder provides them.
        KernelSource source = new KernelSource("halves.cu", Map.of("halves.cu", """
                #include <cuda_fp16.h>
                #include <cuda_bf16.h>
                extern "C" __global__ void to_half(const float* in, __half* h, __nv_bfloat16* b) {
                    h[threadIdx.x] = __float2half(in[threadIdx.x]);
                    b[threadIdx.x] = __float2bfloat16(__half2float(h[threadIdx.x]));
                }
                """));
        List<Path> includes;
        try {
            includes = KernelReport.toolkitIncludes(source);
        } catch (TokenKernelsException e) {
            Assumptions.abort("no CUDA toolkit include folder here: " + e.getMessage());
            return;
        }
        NvrtcCompiler.Compiled c = new NvrtcCompiler(nvrtc()).compile(source, "sm_80", includes);
        assertTrue(c.ptx().contains(".entry to_half("), c.ptx());
        assertArrayEquals(new int[] {8, 8, 8}, PtxEntries.parse(c.ptx()).get("to_half"));
    }

    @Test
    void anExplicitPathThatDoesNotLoadIsAReasonNotAnException() {
        NvrtcLocator.Result missing = NvrtcLocator.locate("/nonexistent/libnvrtc.so.13");
        assertFalse(missing.available());
        assertTrue(missing.unavailableReason().contains("/nonexistent/libnvrtc.so.13"), missing.unavailableReason());
        NvrtcLocator.Result invalid = NvrtcLocator.locate("bad\0path");
        assertFalse(invalid.available(), invalid.unavailableReason());
    }

    @Test
    void theSearchFindsALibraryThatCompiles() {
        NvrtcLocator.Result r = NvrtcLocator.locate(null);
        assertTrue(r.available(), r.unavailableReason());
        assertTrue(r.nvrtc().library().getFileName().toString().startsWith("libnvrtc.so"), r.nvrtc().library().toString());
    }

    @Test
    void versionIsThirteenOrNewer() {
        assertTrue(nvrtc().version() >= 12000, "NVRTC " + nvrtc().version());
        System.out.println("NVRTC " + nvrtc().version() + " from " + nvrtc().library());
    }

    @Test
    void ptxParameterListsParse() {
        String ptx = """
                .visible .entry k(
                	.param .u64 .ptr .global .align 4 k_param_0,
                	.param .f32 k_param_1,
                	.param .u32 k_param_2,
                	.param .align 8 .b8 k_param_3[24],
                	.param .u8 k_param_4
                )
                .visible .entry empty()
                """;
        Map<String, int[]> entries = PtxEntries.parse(ptx);
        assertArrayEquals(new int[] {8, 4, 4, 24, 1}, entries.get("k"));
        assertArrayEquals(new int[0], entries.get("empty"));
    }
}
