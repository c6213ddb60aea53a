package dev.tokenkernels.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class KernelTest {
    private static final Kernel SCALE = new Kernel("test/scale.cu", "scale_f32",
            KernelParam.pointer("x"), KernelParam.i64("n"), KernelParam.f32("factor"));

    private static final DeviceBuffer BUFFER = new DeviceBuffer() {
        @Override
        public long address() {
            return 0x1000;
        }

        @Override
        public long byteSize() {
            return 64;
        }

        @Override
        public void close() {
        }
    };

    @Test
    void acceptsMatchingArguments() {
        SCALE.checkArguments(BUFFER, 16L, 2f);
    }

    @Test
    void namesTheParameterThatDiffers() {
        var e = assertThrows(IllegalArgumentException.class, () -> SCALE.checkArguments(BUFFER, 16, 2f));
        assertEquals("kernel scale_f32 parameter 1 (n): expected I64 (Long), got Integer", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> SCALE.checkArguments(BUFFER, 16L));
        assertEquals("kernel scale_f32: expected 3 arguments [x, n, factor], got 2", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> SCALE.checkArguments(null, 16L, 2f));
        assertEquals("kernel scale_f32 parameter 0 (x): expected POINTER (DeviceBuffer), got null", e.getMessage());
    }

    @Test
    void launchConfigRejectsOversizedBlocks() {
        var e = assertThrows(IllegalArgumentException.class, () -> LaunchConfig.of1d(1, 2048, 0));
        assertEquals("block: expected at most 1024 threads, got 2048", e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> LaunchConfig.of1d(0, 32, 0));
    }
}
