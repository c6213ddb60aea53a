package dev.tokenkernels.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.atomic.AtomicIntegerArray;
import org.junit.jupiter.api.Test;

class CpuBackendTest {

    @Test
    void parallelForVisitsEveryRowExactlyOnce() {
        for (int threads : new int[] {1, 2, 3}) {
            try (CpuBackend cpu = CpuBackend.withThreads(threads)) {
                for (int rows : new int[] {0, 1, 7, 1000}) {
                    AtomicIntegerArray seen = new AtomicIntegerArray(rows);
                    cpu.parallelFor(rows, 3, (from, to) -> {
                        for (int i = from; i < to; i++) {
                            seen.incrementAndGet(i);
                        }
                    });
                    for (int i = 0; i < rows; i++) {
                        assertEquals(1, seen.get(i), threads + " threads, " + rows + " rows, row " + i);
                    }
                }
            }
        }
    }

    @Test
    void exceptionsFromRangesPropagate() {
        try (CpuBackend cpu = CpuBackend.withThreads(2)) {
            var e = assertThrows(IllegalStateException.class, () -> cpu.parallelFor(100, 1, (from, to) -> {
                if (from <= 50 && 50 < to) {
                    throw new IllegalStateException("row 50");
                }
            }));
            assertTrue(e.getMessage().contains("row 50"), e.getMessage());
        }
    }

    @Test
    void closedPrivateBackendRefusesWork() {
        CpuBackend cpu = CpuBackend.withThreads(2);
        cpu.close();
        assertThrows(IllegalStateException.class, () -> cpu.parallelFor(10, 1, (from, to) -> { }));
    }

    @Test
    void rejectsBadThreadCounts() {
        var e = assertThrows(IllegalArgumentException.class, () -> CpuBackend.withThreads(0));
        assertEquals("threads: expected >= 1, got 0", e.getMessage());
        String old = System.getProperty(CpuBackend.PROPERTY_THREADS);
        try {
            System.setProperty(CpuBackend.PROPERTY_THREADS, "many");
            e = assertThrows(IllegalArgumentException.class, CpuBackend::configuredThreads);
            assertEquals("tokenkernels.cpu.threads: expected a thread count >= 1, got 'many'", e.getMessage());
            System.setProperty(CpuBackend.PROPERTY_THREADS, "3");
            assertEquals(3, CpuBackend.configuredThreads());
        } finally {
            if (old == null) {
                System.clearProperty(CpuBackend.PROPERTY_THREADS);
            } else {
                System.setProperty(CpuBackend.PROPERTY_THREADS, old);
            }
        }
    }

    @Test
    void cpuIsAlwaysDiscoveredFirst() {
        var status = Backends.status();
        assertEquals("cpu", status.get(0).name());
        assertTrue(status.get(0).available());
        assertEquals(CpuBackend.shared(), Backends.named("cpu"));
    }

    @Test
    void explicitBackendWinsOverDefault() {
        try (CpuBackend mine = CpuBackend.withThreads(1)) {
            assertEquals(mine, Backends.select(mine));
        }
        String old = System.getProperty(Backends.PROPERTY_BACKEND);
        try {
            System.setProperty(Backends.PROPERTY_BACKEND, "nonesuch");
            var e = assertThrows(IllegalArgumentException.class, Backends::defaultBackend);
            assertTrue(e.getMessage().contains("got 'nonesuch'"), e.getMessage());
            System.setProperty(Backends.PROPERTY_BACKEND, "cpu");
            assertEquals(CpuBackend.shared(), Backends.defaultBackend());
            assertTrue(Backends.defaultChoiceReason().startsWith("requested by"));
        } finally {
            if (old == null) {
                System.clearProperty(Backends.PROPERTY_BACKEND);
            } else {
                System.setProperty(Backends.PROPERTY_BACKEND, old);
            }
        }
    }
}
