package dev.tokenkernels.cuda;

import static dev.tokenkernels.cuda.EmuDevice.backend;
import static dev.tokenkernels.cuda.EmuDevice.floats;
import static dev.tokenkernels.cuda.EmuDevice.ints;
import static dev.tokenkernels.cuda.EmuDevice.longs;
import static dev.tokenkernels.cuda.EmuDevice.shorts;
import static dev.tokenkernels.cuda.EmuDevice.upload;
import static dev.tokenkernels.runtime.KernelParam.f32;
import static dev.tokenkernels.runtime.KernelParam.i32;
import static dev.tokenkernels.runtime.KernelParam.i64;
import static dev.tokenkernels.runtime.KernelParam.pointer;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.LaunchConfig;
import dev.tokenkernels.runtime.TokenKernelsException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/**
 * The emulator itself, through the same launch path as a GPU: each kernel of
 * {@code kernels/test/emu_selftest.cu} needs the feature it tests to give the expected answer.
 */
class CudaEmuTest {
    private static final String SOURCE = "test/emu_selftest.cu";

    private static float[] randomIntegers(Random random, int n, int bound) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = random.nextInt(2 * bound + 1) - bound; // integers: float sums are exact
        }
        return v;
    }

    @Test
    void barrierMakesEveryWriteVisibleBeforeAnyRead() {
        int threads = 256;
        int blocks = 3;
        float[] in = randomIntegers(new Random(1), threads * blocks, 1000);
        Kernel k = new Kernel(SOURCE, "barrier_reverse", pointer("in"), pointer("out"));
        try (DeviceBuffer din = upload(in); DeviceBuffer dout = upload(new float[in.length])) {
            backend().launch(k, LaunchConfig.of1d(blocks, threads, 0), din, dout);
            float[] out = floats(dout, in.length);
            for (int b = 0; b < blocks; b++) {
                for (int t = 0; t < threads; t++) {
                    assertEquals(in[b * threads + threads - 1 - t], out[b * threads + t], "block " + b + " thread " + t);
                }
            }
        }
    }

    @Test
    void treeReductionOverATwoDimensionalGrid() {
        int threads = 128;
        int gx = 5;
        int gy = 3;
        long n = (long) gx * gy * threads - 17;
        float[] in = randomIntegers(new Random(2), (int) n, 100);
        Kernel k = new Kernel(SOURCE, "block_sum", pointer("in"), pointer("out"), i64("n"));
        try (DeviceBuffer din = upload(in); DeviceBuffer dout = upload(new float[gx * gy])) {
            backend().launch(k, new LaunchConfig(gx, gy, 1, threads, 1, 1, 0), din, dout, n);
            float[] out = floats(dout, gx * gy);
            for (int b = 0; b < gx * gy; b++) {
                float expected = 0;
                for (int i = b * threads; i < Math.min(n, (long) (b + 1) * threads); i++) {
                    expected += in[i];
                }
                assertEquals(expected, out[b], "block " + b);
            }
        }
    }

    @Test
    void warpShufflesExchangeValuesAsOnHardware() {
        int threads = 64;
        float[] in = randomIntegers(new Random(3), threads, 50);
        Kernel k = new Kernel(SOURCE, "warp_shuffles", pointer("in"), pointer("out"));
        try (DeviceBuffer din = upload(in); DeviceBuffer dout = upload(new float[6 * threads])) {
            backend().launch(k, LaunchConfig.of1d(1, threads, 0), din, dout);
            float[] out = floats(dout, 6 * threads);
            for (int warp = 0; warp < threads / 32; warp++) {
                float[] v = new float[32];
                System.arraycopy(in, 32 * warp, v, 0, 32);
                float[] down = v.clone();
                for (int o = 16; o > 0; o >>= 1) {
                    float[] next = down.clone();
                    for (int l = 0; l < 32; l++) {
                        next[l] = down[l] + (l + o < 32 ? down[l + o] : down[l]);
                    }
                    down = next;
                }
                float total = 0;
                float scan = 0;
                for (int l = 0; l < 32; l++) {
                    total += v[l];
                }
                for (int l = 0; l < 32; l++) {
                    int t = 32 * warp + l;
                    scan += v[l];
                    float segment = 0;
                    for (int s = l & ~7; s < (l & ~7) + 8; s++) {
                        segment += v[s];
                    }
                    String at = "warp " + warp + " lane " + l;
                    assertEquals(total, out[6 * t], at + " butterfly");
                    assertEquals(down[l], out[6 * t + 1], at + " shfl_down");
                    assertEquals(scan, out[6 * t + 2], at + " shfl_up scan");
                    assertEquals(v[7], out[6 * t + 3], at + " broadcast");
                    assertEquals(segment, out[6 * t + 4], at + " width-8 butterfly");
                    assertEquals(v[(l & ~15) + ((l + 3) & 15)], out[6 * t + 5], at + " width-16 shfl");
                }
            }
        }
    }

    @Test
    void warpVotesSeeEveryLaneOfTheMask() {
        int threads = 64;
        float[] in = randomIntegers(new Random(4), threads, 3);
        in[40] = 1; // warp 1 has at least one positive lane
        for (int l = 0; l < 32; l++) {
            in[l] = 1 + l; // warp 0: all positive
        }
        in[5] = -1;    // ... but one
        Kernel k = new Kernel(SOURCE, "warp_votes", pointer("in"), pointer("out"));
        try (DeviceBuffer din = upload(in); DeviceBuffer dout = upload(new int[4 * threads])) {
            backend().launch(k, LaunchConfig.of1d(1, threads, 0), din, dout);
            int[] out = ints(dout, 4 * threads);
            for (int warp = 0; warp < 2; warp++) {
                int ballot = 0;
                for (int l = 0; l < 32; l++) {
                    ballot |= in[32 * warp + l] > 0 ? 1 << l : 0;
                }
                for (int l = 0; l < 32; l++) {
                    int t = 32 * warp + l;
                    assertEquals(ballot, out[4 * t], "ballot, lane " + t);
                    assertEquals(ballot != 0 ? 1 : 0, out[4 * t + 1], "any, lane " + t);
                    assertEquals(ballot == -1 ? 1 : 0, out[4 * t + 2], "all, lane " + t);
                    assertEquals((l & 1) == 1 ? ballot & 0xaaaaaaaa : 0, out[4 * t + 3], "odd-lane ballot, lane " + t);
                }
            }
        }
    }

    @Test
    void warpMatchGroupsTheLanesOfEqualValue() {
        int threads = 64;
        Random random = new Random(6);
        int[] keys = new int[threads];
        for (int t = 0; t < threads; t++) {
            keys[t] = random.nextInt(6); // few distinct keys: groups of several lanes
        }
        keys[33] = 1000; // a lane alone in its group
        Kernel k = new Kernel(SOURCE, "warp_match", pointer("keys"), pointer("out"));
        try (DeviceBuffer dkeys = upload(keys); DeviceBuffer dout = upload(new int[3 * threads])) {
            backend().launch(k, LaunchConfig.of1d(1, threads, 0), dkeys, dout);
            int[] out = ints(dout, 3 * threads);
            for (int t = 0; t < threads; t++) {
                int warp = t & ~31;
                int same = 0;
                int sameEven = 0;
                for (int l = 0; l < 32; l++) {
                    if (keys[warp + l] == keys[t]) {
                        same |= 1 << l;
                        sameEven |= (l & 1) == 0 ? 1 << l : 0;
                    }
                }
                assertEquals(same, out[3 * t], "int match, lane " + t);
                assertEquals(same, out[3 * t + 1], "double match, lane " + t);
                assertEquals((t & 1) == 0 ? sameEven : 0, out[3 * t + 2], "even-lane match, lane " + t);
            }
            assertEquals(1 << 1, out[3 * 33], "the lone key matches only itself");
        }
    }

    @Test
    void dynamicSharedMemoryHoldsABlockScan() {
        int threads = 512;
        float[] in = randomIntegers(new Random(5), threads, 20);
        Kernel k = new Kernel(SOURCE, "dynamic_shared_scan", pointer("in"), pointer("out"));
        try (DeviceBuffer din = upload(in); DeviceBuffer dout = upload(new float[threads])) {
            backend().launch(k, LaunchConfig.of1d(1, threads, 4 * threads), din, dout);
            float[] out = floats(dout, threads);
            float sum = 0;
            for (int t = 0; t < threads; t++) {
                sum += in[t];
                assertEquals(sum, out[t], "thread " + t);
            }
            // Above 48 KB a GPU needs the function's attribute raised; up to the maximum it runs.
            backend().launch(k, LaunchConfig.of1d(1, threads, EmuModuleBuilder.MAX_DYNAMIC_SHARED), din, dout);
            assertEquals(sum, floats(dout, threads)[threads - 1]);
            IllegalArgumentException tooMuch = assertThrows(IllegalArgumentException.class,
                    () -> backend().launch(k, LaunchConfig.of1d(1, threads, EmuModuleBuilder.MAX_DYNAMIC_SHARED + 1),
                            din, dout));
            assertTrue(tooMuch.getMessage().contains("at most " + EmuModuleBuilder.MAX_DYNAMIC_SHARED
                    + " bytes of dynamic shared memory"), tooMuch.getMessage());
        }
    }

    @Test
    void atomicsUnderContentionFromManyBlocksAndHostThreads() {
        int n = 100_000;
        int bins = 7;
        Random random = new Random(6);
        int[] values = new int[n];
        int[] histogram = new int[bins];
        int max = Integer.MIN_VALUE;
        int min = Integer.MAX_VALUE;
        long casSum = 0;
        for (int i = 0; i < n; i++) {
            values[i] = random.nextInt(2001) - 1000;
            histogram[Math.floorMod(values[i], bins)]++;
            max = Math.max(max, values[i]);
            min = Math.min(min, values[i]);
            casSum += values[i] & 0xff;
        }
        Kernel k = new Kernel(SOURCE, "atomics_contention", pointer("values"), i64("n"), pointer("histogram"),
                i32("bins"), pointer("extremes"), pointer("float_sum"), pointer("cas_sum"), pointer("exchanged"));
        try (DeviceBuffer dv = upload(values); DeviceBuffer dh = upload(new int[bins]);
             DeviceBuffer de = upload(new int[] {Integer.MIN_VALUE, Integer.MAX_VALUE});
             DeviceBuffer df = upload(new float[1]); DeviceBuffer dc = upload(new long[1]);
             DeviceBuffer dx = upload(new int[1])) {
            backend().launch(k, LaunchConfig.of1d((n + 255) / 256, 256, 0), dv, (long) n, dh, bins, de, df, dc, dx);
            assertArrayEquals(histogram, ints(dh, bins));
            assertArrayEquals(new int[] {max, min}, ints(de, 2));
            assertEquals(n, floats(df, 1)[0]);
            assertEquals(casSum, longs(dc, 1)[0]);
            assertEquals(1, ints(dx, 1)[0]);
        }
    }

    @Test
    void threeDimensionalGridsOfThreeDimensionalBlocks() {
        int[] grid = {3, 2, 2};
        int[] block = {4, 3, 2};
        int total = grid[0] * grid[1] * grid[2] * block[0] * block[1] * block[2];
        Kernel k = new Kernel(SOURCE, "grid_ids", pointer("out"));
        try (DeviceBuffer dout = upload(new int[6 * total])) {
            backend().launch(k, new LaunchConfig(grid[0], grid[1], grid[2], block[0], block[1], block[2], 0), dout);
            int[] out = ints(dout, 6 * total);
            int g = 0;
            for (int bz = 0; bz < grid[2]; bz++) {
                for (int by = 0; by < grid[1]; by++) {
                    for (int bx = 0; bx < grid[0]; bx++) {
                        for (int tz = 0; tz < block[2]; tz++) {
                            for (int ty = 0; ty < block[1]; ty++) {
                                for (int tx = 0; tx < block[0]; tx++) {
                                    int[] expected = {bx, by, bz, tx, ty, tz};
                                    int[] actual = java.util.Arrays.copyOfRange(out, 6 * g, 6 * g + 6);
                                    assertArrayEquals(expected, actual, "thread " + g);
                                    g++;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    @Test
    void barrierReductionsCountAndCombinePredicates() {
        Kernel k = new Kernel(SOURCE, "barrier_votes", pointer("in"), pointer("out"));
        float[] mixed = randomIntegers(new Random(7), 96, 5);
        int positives = 0;
        for (float v : mixed) {
            positives += v > 0 ? 1 : 0;
        }
        float[] allPositive = new float[96];
        java.util.Arrays.fill(allPositive, 2f);
        try (DeviceBuffer din = upload(mixed); DeviceBuffer dout = upload(new int[3])) {
            backend().launch(k, LaunchConfig.of1d(1, 96, 0), din, dout);
            assertArrayEquals(new int[] {positives, 0, positives > 0 ? 1 : 0}, ints(dout, 3));
            backend().copyToDevice(java.lang.foreign.MemorySegment.ofArray(allPositive), din);
            backend().launch(k, LaunchConfig.of1d(1, 96, 0), din, dout);
            assertArrayEquals(new int[] {96, 1, 1}, ints(dout, 3));
        }
    }

    @Test
    void exitedThreadsDoNotBlockTheBarrier() {
        Kernel k = new Kernel(SOURCE, "barrier_after_exit", pointer("out"), i32("active"));
        int active = 100;
        try (DeviceBuffer dout = upload(new float[128])) {
            backend().launch(k, LaunchConfig.of1d(1, 128, 0), dout, active);
            float[] out = floats(dout, 128);
            for (int t = 0; t < active; t++) {
                assertEquals(active - 1 - t, out[t], "thread " + t);
            }
        }
    }

    @Test
    void aDeadlockIsReportedNotHung() {
        Kernel k = new Kernel(SOURCE, "deadlock", pointer("out"));
        try (DeviceBuffer dout = upload(new float[64])) {
            TokenKernelsException e = assertThrows(TokenKernelsException.class,
                    () -> backend().launch(k, LaunchConfig.of1d(2, 64, 0), dout));
            assertTrue(e.getMessage().contains("deadlock in block"), e.getMessage());
            assertTrue(e.getMessage().contains("CUDA_ERROR_LAUNCH_FAILED"), e.getMessage());
        }
    }

    @Test
    void anInvalidShuffleWidthFailsTheLaunch() {
        Kernel k = new Kernel(SOURCE, "shuffle_width", pointer("out"), i32("width"));
        try (DeviceBuffer dout = upload(new float[32])) {
            backend().launch(k, LaunchConfig.of1d(1, 32, 0), dout, 8);
            float[] out = floats(dout, 32);
            for (int t = 0; t < 32; t++) {
                assertEquals(t & ~7, out[t], "thread " + t);
            }
            for (int width : new int[] {3, 0, 64}) {
                TokenKernelsException e = assertThrows(TokenKernelsException.class,
                        () -> backend().launch(k, LaunchConfig.of1d(1, 32, 0), dout, width));
                assertTrue(e.getMessage().contains("CUDA_ERROR_LAUNCH_FAILED")
                        && e.getMessage().contains("__shfl_sync") && e.getMessage().contains("width " + width + " "),
                        e.getMessage());
            }
        }
    }

    @Test
    void aWarpCollectiveWhoseMaskLeavesOutTheCallerFailsTheLaunch() {
        Kernel k = new Kernel(SOURCE, "ballot_mask", pointer("out"), i32("mask"));
        try (DeviceBuffer dout = upload(new int[32])) {
            backend().launch(k, LaunchConfig.of1d(1, 32, 0), dout, -1);
            assertArrayEquals(java.util.stream.IntStream.generate(() -> -1).limit(32).toArray(), ints(dout, 32));
            // Lanes 1..31 complete their ballot; lane 0 is in no group. The timeout turns a hang into a failure.
            TokenKernelsException e = assertTimeoutPreemptively(Duration.ofSeconds(60), () -> assertThrows(
                    TokenKernelsException.class, () -> backend().launch(k, LaunchConfig.of1d(1, 32, 0), dout, 0xfffffffe)));
            assertTrue(e.getMessage().contains("CUDA_ERROR_LAUNCH_FAILED") && e.getMessage().contains("__ballot_sync")
                    && e.getMessage().contains("mask 0xfffffffe does not include the calling lane 0"), e.getMessage());
        }
    }

    @Test
    void anExceptionInKernelCodeFailsTheLaunch() {
        Kernel k = new Kernel(SOURCE, "allocate", pointer("out"), i64("bytes"));
        try (DeviceBuffer dout = upload(new long[64])) {
            backend().launch(k, LaunchConfig.of1d(2, 32, 0), dout, 64L);
            // Host `new` throws std::bad_alloc: before, it unwound off the fiber's stack and aborted the JVM.
            TokenKernelsException e = assertThrows(TokenKernelsException.class,
                    () -> backend().launch(k, LaunchConfig.of1d(2, 32, 0), dout, 1L << 62));
            assertTrue(e.getMessage().contains("CUDA_ERROR_OUT_OF_MEMORY") && e.getMessage().contains("std::bad_alloc")
                    && e.getMessage().matches("(?s).*thread \\d+ of block.*"), e.getMessage()); // any thread: the order is the emulator's
            backend().launch(k, LaunchConfig.of1d(2, 32, 0), dout, 64L); // the emulator still runs kernels
        }
    }

    @Test
    void fiberStacksAreMappedOnceAndReusedByLaterLaunches() {
        int threads = 1024;
        int blocks = 8;
        float[] in = randomIntegers(new Random(9), threads * blocks, 1000);
        Kernel reverse = new Kernel(SOURCE, "barrier_reverse", pointer("in"), pointer("out"));
        Kernel half = new Kernel("test/emu_half.cu", "half_conversions", pointer("in"), pointer("half_bits"),
                pointer("bf16_bits"), pointer("half_back"), pointer("bf16_back"), i64("n"));
        try (DeviceBuffer din = upload(in); DeviceBuffer dout = upload(new float[in.length]);
             DeviceBuffer dh = backend().allocate(2L * in.length); DeviceBuffer db = backend().allocate(2L * in.length);
             DeviceBuffer back = upload(new float[in.length])) {
            backend().launch(reverse, LaunchConfig.of1d(blocks, threads, 0), din, dout);
            long mapped = stacksMapped();
            assertTrue(mapped >= threads, "stacks mapped: " + mapped);
            // Later launches, of this module and of another one with no more blocks, map no new stacks.
            for (int i = 0; i < 3; i++) {
                backend().launch(reverse, LaunchConfig.of1d(blocks, threads, 0), din, dout);
            }
            backend().launch(half, LaunchConfig.of1d(blocks, 256, 0), din, dh, db, back, back, 256L * blocks);
            assertEquals(mapped, stacksMapped());
            backend().launch(reverse, LaunchConfig.of1d(blocks, threads, 0), din, dout);
            float[] out = floats(dout, in.length);
            for (int i = 0; i < in.length; i++) {
                assertEquals(in[i - i % threads + threads - 1 - i % threads], out[i], "thread " + i);
            }
        }
    }

    /** How many fiber stacks the emulator's driver has mapped in this process. */
    @SuppressWarnings("restricted")
    private static long stacksMapped() {
        Path library = new EmuModuleBuilder(HostCompiler.find().orElseThrow(), KernelCache.standard()).driverLibrary();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment symbol = SymbolLookup.libraryLookup(library, arena).find("tkEmuStacksMapped").orElseThrow();
            return (long) Linker.nativeLinker().downcallHandle(symbol, FunctionDescriptor.of(ValueLayout.JAVA_LONG))
                    .invokeExact();
        } catch (Throwable t) {
            throw new AssertionError("cannot call tkEmuStacksMapped", t);
        }
    }

    @Test
    void sizesThatWrapAroundAreRejectedNotUsed() {
        CudaDriver d = driver();
        // (bytes + 255) rounded up to 256 wraps to 0: the allocation must fail, not succeed with a bogus size.
        TokenKernelsException huge = assertThrows(TokenKernelsException.class, () -> d.malloc(-1L));
        assertTrue(huge.getMessage().contains("CUDA_ERROR_OUT_OF_MEMORY"), huge.getMessage());
        long p = d.malloc(64);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(64);
            // 2^64 - 8 bytes at offset 16: offset + bytes wraps to 8, inside the 64 bytes.
            long wraps = -8L;
            List<Executable> calls = List.of(() -> d.copyToHost(host, p + 16, wraps),
                    () -> d.copyToDevice(p + 16, host, wraps), () -> d.memset(p + 16, (byte) 0, wraps));
            for (Executable call : calls) {
                TokenKernelsException e = assertThrows(TokenKernelsException.class, call);
                assertTrue(e.getMessage().contains("CUDA_ERROR_INVALID_VALUE")
                        && e.getMessage().contains("not inside a live device allocation"), e.getMessage());
            }
            d.copyToDevice(p + 16, host, 48); // the last bytes of the allocation are still in range
        } finally {
            d.free(p);
        }
    }

    /** Bindings of their own to the emulator's driver, for calls the backend checks before making. */
    private static CudaDriver driver() {
        Path library = new EmuModuleBuilder(HostCompiler.find().orElseThrow(), KernelCache.standard()).driverLibrary();
        @SuppressWarnings("restricted")
        SymbolLookup lookup = SymbolLookup.libraryLookup(library, Arena.global());
        CudaDriver driver = new CudaDriver(library, lookup);
        driver.init();
        return driver;
    }

    @Test
    void halfAndBfloat16ConversionsRoundToNearestEven() {
        Random random = new Random(8);
        int n = 65536 + 20000;
        float[] in = new float[n];
        for (int i = 0; i < 65536; i++) {
            in[i] = Float.float16ToFloat((short) i); // every half value, NaNs and infinities included
        }
        for (int i = 65536; i < n; i++) {
            in[i] = switch (i % 4) {
                case 0 -> Float.intBitsToFloat(random.nextInt()); // any float
                case 1 -> (random.nextFloat() - 0.5f) * 1e-4f;    // half subnormals
                case 2 -> (random.nextFloat() - 0.5f) * 140000f;  // around half overflow
                default -> { // exact midpoints between adjacent halves: ties must go to even
                    short h = (short) random.nextInt(0x7bff);
                    yield (Float.float16ToFloat(h) + Float.float16ToFloat((short) (h + 1))) / 2;
                }
            };
        }
        Kernel k = new Kernel("test/emu_half.cu", "half_conversions", pointer("in"), pointer("half_bits"), pointer("bf16_bits"),
                pointer("half_back"), pointer("bf16_back"), i64("n"));
        try (DeviceBuffer din = upload(in); DeviceBuffer dh = backend().allocate(2L * n);
             DeviceBuffer db = backend().allocate(2L * n); DeviceBuffer dhb = upload(new float[n]);
             DeviceBuffer dbb = upload(new float[n])) {
            backend().launch(k, LaunchConfig.of1d((n + 255) / 256, 256, 0), din, dh, db, dhb, dbb, (long) n);
            short[] half = shorts(dh, n);
            short[] bf16 = shorts(db, n);
            float[] halfBack = floats(dhb, n);
            float[] bf16Back = floats(dbb, n);
            for (int i = 0; i < n; i++) {
                float x = in[i];
                if (Float.isNaN(x)) {
                    assertTrue(Float.isNaN(Float.float16ToFloat(half[i])) && Float.isNaN(halfBack[i]), "half of NaN at " + i);
                    assertTrue(Float.isNaN(Float.intBitsToFloat(bf16[i] << 16)) && Float.isNaN(bf16Back[i]), "bf16 NaN " + i);
                    continue;
                }
                assertEquals(Float.floatToFloat16(x), half[i], "half bits of " + x);
                assertEquals(Float.float16ToFloat(half[i]), halfBack[i], "half back of " + x);
                short expectedBf16 = bfloat16RoundToNearestEven(x);
                assertEquals(expectedBf16, bf16[i], "bfloat16 bits of " + x);
                assertEquals(Float.intBitsToFloat(expectedBf16 << 16), bf16Back[i], "bfloat16 back of " + x);
            }
        }
    }

    /** Rounds to the nearer of the two bfloat16 neighbours of x (ties to even), compared in double. */
    private static short bfloat16RoundToNearestEven(float x) {
        int bits = Float.floatToRawIntBits(x);
        int low = bits & 0xffff0000;
        if (low == bits) {
            return (short) (low >>> 16); // exactly representable, infinities included
        }
        int high = low + 0x10000;
        double lowValue = Float.intBitsToFloat(low);
        // Above the largest bfloat16 the upper neighbour is 2^128, which rounds to infinity.
        double highValue = (high & 0x7fffffff) == 0x7f800000 ? Math.copySign(0x1p128, x) : Float.intBitsToFloat(high);
        double toLow = Math.abs(x - lowValue);
        double toHigh = Math.abs(highValue - x);
        boolean up = toHigh < toLow || (toHigh == toLow && ((low >>> 16) & 1) == 1);
        return (short) ((up ? high : low) >>> 16);
    }

    @Test
    void aJavaSignatureThatDiffersFromTheCompiledEntryIsRejected() {
        // block_sum takes (const float*, float*, long long): declare n as 32-bit.
        Kernel wrongSize = new Kernel(SOURCE, "block_sum", pointer("in"), pointer("out"), i32("n"));
        Kernel wrongCount = new Kernel(SOURCE, "block_sum", pointer("in"), pointer("out"));
        Kernel right = new Kernel(SOURCE, "block_sum", pointer("in"), pointer("out"), i64("n"));
        try (DeviceBuffer d = upload(new float[32])) {
            // A correct declaration resolved first must not let a wrong one through later.
            backend().launch(right, LaunchConfig.of1d(1, 32, 0), d, d, 32L);
            TokenKernelsException size = assertThrows(TokenKernelsException.class,
                    () -> backend().launch(wrongSize, LaunchConfig.of1d(1, 32, 0), d, d, 32));
            assertTrue(size.getMessage().contains("block_sum") && size.getMessage().contains("parameter 2 (n)")
                    && size.getMessage().contains("8 bytes"), size.getMessage());
            TokenKernelsException count = assertThrows(TokenKernelsException.class,
                    () -> backend().launch(wrongCount, LaunchConfig.of1d(1, 32, 0), d, d));
            assertTrue(count.getMessage().contains("3 parameters"), count.getMessage());
        }
    }

    @Test
    void badArgumentsAreClearErrors() {
        Kernel k = new Kernel(SOURCE, "block_sum", pointer("in"), pointer("out"), i64("n"));
        try (DeviceBuffer d = upload(new float[32])) {
            IllegalArgumentException type = assertThrows(IllegalArgumentException.class,
                    () -> backend().launch(k, LaunchConfig.of1d(1, 32, 0), d, d, 32)); // Integer for an I64
            assertTrue(type.getMessage().contains("parameter 2 (n)"), type.getMessage());
            assertThrows(IllegalArgumentException.class, () -> backend().copyToHost(d, java.lang.foreign.MemorySegment.ofArray(new float[33])));
            assertThrows(IllegalArgumentException.class, () -> backend().copyToDevice(java.lang.foreign.MemorySegment.ofArray(new float[33]), d));
            TokenKernelsException missing = assertThrows(TokenKernelsException.class,
                    () -> backend().launch(new Kernel(SOURCE, "no_such_kernel", f32("x")), LaunchConfig.of1d(1, 1, 0), 1f));
            assertTrue(missing.getMessage().contains("no_such_kernel"), missing.getMessage());
        }
        DeviceBuffer closed = upload(new float[4]);
        closed.close();
        closed.close(); // closing twice is harmless
        assertThrows(IllegalStateException.class, closed::address);
        assertThrows(IllegalStateException.class, () -> backend().launch(k, LaunchConfig.of1d(1, 32, 0), closed, closed, 4L));
    }

    @Test
    void compileErrorsCarryTheCompilerLog() {
        Kernel k = new Kernel("broken/syntax_error.cu", "syntax_error", pointer("out"));
        try (DeviceBuffer d = upload(new float[32])) {
            TokenKernelsException e = assertThrows(TokenKernelsException.class,
                    () -> backend().launch(k, LaunchConfig.of1d(1, 32, 0), d));
            assertTrue(e.getMessage().contains("undeclared_name"), e.getMessage());
        }
    }
}
