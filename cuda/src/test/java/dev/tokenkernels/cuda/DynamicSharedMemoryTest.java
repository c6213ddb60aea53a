package dev.tokenkernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** When a launch must raise its function's dynamic shared memory limit first, without a GPU. */
class DynamicSharedMemoryTest {
    private static final MemorySegment F = MemorySegment.ofAddress(0x1000);
    private static final MemorySegment G = MemorySegment.ofAddress(0x2000);

    private final List<String> raised = new ArrayList<>();
    private final DynamicSharedMemory shared = new DynamicSharedMemory(227 * 1024,
            (function, entry, bytes) -> raised.add(entry + "@" + Long.toHexString(function.address()) + "=" + bytes));

    @Test
    void upTo48KbNeedsNoOptIn() {
        shared.prepare(F, "f", 0);
        shared.prepare(F, "f", 48 * 1024);
        assertEquals(List.of(), raised);
    }

    @Test
    void eachFunctionIsRaisedOnceForEachLargerSize() {
        shared.prepare(F, "f", 64 * 1024);
        shared.prepare(F, "f", 64 * 1024);
        shared.prepare(F, "f", 60 * 1024);
        shared.prepare(F, "f", 100 * 1024);
        shared.prepare(G, "g", 64 * 1024);
        shared.prepare(F, "f", 227 * 1024);
        assertEquals(List.of("f@1000=65536", "f@1000=102400", "g@2000=65536", "f@1000=232448"), raised);
    }

    @Test
    void moreThanTheDeviceMaximumIsRefusedBeforeTheDriverSeesIt() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> shared.prepare(F, "f", 227 * 1024 + 1));
        assertTrue(e.getMessage().contains("kernel f sharedBytes") && e.getMessage().contains("at most 232448 bytes")
                && e.getMessage().contains("got 232449"), e.getMessage());
        assertEquals(List.of(), raised);
    }
}
