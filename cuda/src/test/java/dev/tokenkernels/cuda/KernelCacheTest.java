package dev.tokenkernels.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The disk cache: intact entries are found, damaged ones are detected and rebuilt, writers never collide. */
class KernelCacheTest {

    @Test
    void anEntryReadsBackAsStored(@TempDir Path dir) {
        KernelCache cache = new KernelCache(dir);
        byte[] payload = "PTX or CUBIN bytes".getBytes(StandardCharsets.UTF_8);
        String key = KernelCache.key("source", "-arch=sm_90");
        Path entry = cache.store(key, "cubin", payload);
        assertEquals(entry, cache.find(key, "cubin").orElseThrow());
        assertArrayEquals(payload, cache.read(entry));
        assertTrue(cache.find(key, "ptx").isEmpty(), "another extension is another entry");
    }

    @Test
    void keysDependOnEveryPartAndItsBoundaries() {
        assertEquals(KernelCache.key("a", "b"), KernelCache.key("a", "b"));
        assertNotEquals(KernelCache.key("a", "b"), KernelCache.key("a", "c"));
        assertNotEquals(KernelCache.key("ab", "c"), KernelCache.key("a", "bc"));
    }

    @Test
    void truncatedCorruptAndForeignEntriesAreDetectedAndDeleted(@TempDir Path dir) throws IOException {
        KernelCache cache = new KernelCache(dir);
        byte[] payload = new byte[4096];
        Arrays.fill(payload, (byte) 7);
        String key = KernelCache.key("x");

        Path entry = cache.store(key, "so", payload);
        byte[] whole = Files.readAllBytes(entry);
        Files.write(entry, Arrays.copyOf(whole, whole.length - 100)); // an interrupted copy
        assertTrue(cache.find(key, "so").isEmpty());
        assertFalse(Files.exists(entry), "a damaged entry is removed");

        entry = cache.store(key, "so", payload);
        whole = Files.readAllBytes(entry);
        whole[100] ^= 1; // one flipped bit in the payload
        Files.write(entry, whole);
        assertTrue(cache.find(key, "so").isEmpty());

        Files.writeString(entry, "not a cache entry"); // written by something else
        assertTrue(cache.find(key, "so").isEmpty());

        entry = cache.store(key, "so", payload);
        assertTrue(cache.find(key, "so").isPresent(), "stored again after the damage");
    }

    @Test
    void aDamagedEmulatorModuleIsRebuiltAndLoads(@TempDir Path dir) throws IOException {
        EmuModuleBuilder builder = new EmuModuleBuilder(HostCompiler.find().orElseThrow(), new KernelCache(dir));
        KernelSource source = KernelSource.load("test/emu_selftest.cu");
        Path module = builder.module(source);
        assertTrue(builder.isCached(source));
        byte[] bytes = Files.readAllBytes(module);
        Files.write(module, Arrays.copyOf(bytes, bytes.length / 2));
        assertFalse(builder.isCached(source));
        Path rebuilt = builder.module(source);
        assertEquals(module, rebuilt);
        assertTrue(builder.isCached(source), "rebuilt intact");
        assertTrue(Files.size(rebuilt) > bytes.length / 2);
    }

    /** Two JVMs build the same module into an empty cache at the same time; both must succeed. */
    @Test
    void twoProcessesCompilingTheSameKernelBothSucceed(@TempDir Path dir) throws Exception {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<Process> processes = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            processes.add(new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
                    BuildModuleMain.class.getName(), dir.toString(), "test/emu_selftest.cu")
                    .redirectErrorStream(true).start());
        }
        for (Process p : processes) {
            String output = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            assertTrue(p.waitFor(120, TimeUnit.SECONDS), "build finished");
            assertEquals(0, p.exitValue(), output);
        }
        try (Stream<Path> files = Files.list(dir)) {
            List<Path> left = files.toList();
            assertEquals(1, left.size(), "one entry and no temporary files or build folders: " + left);
        }
        EmuModuleBuilder builder = new EmuModuleBuilder(HostCompiler.find().orElseThrow(), new KernelCache(dir));
        assertTrue(builder.isCached(KernelSource.load("test/emu_selftest.cu")));
    }

    /** Run in a child JVM by the test above: builds one module into the cache in args[0]. */
    public static final class BuildModuleMain {
        public static void main(String[] args) {
            EmuModuleBuilder builder = new EmuModuleBuilder(HostCompiler.find().orElseThrow(), new KernelCache(Path.of(args[0])));
            System.out.println(builder.module(KernelSource.load(args[1])));
        }
    }
}
