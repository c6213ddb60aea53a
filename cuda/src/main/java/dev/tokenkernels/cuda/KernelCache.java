package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.Optional;
import java.util.concurrent.ThreadLocalRandom;
import java.util.stream.Stream;

/**
 * The on-disk cache of compiled kernels (CUBINs, PTX, emulator libraries), in
 * {@code TOKENKERNELS_CACHE} or {@code ~/.cache/tokenkernels}.
 *
 * <p>An entry is the payload followed by a 48-byte trailer: SHA-256 of the payload, its length and
 * a magic number. Shared libraries load with the trailer in place (the ELF loader ignores bytes
 * after the sections), so one file serves both as the cache entry and as what is loaded. A
 * truncated or corrupt entry fails the check, is deleted and compiled again.
 *
 * <p>Writes go to a temporary file that is renamed over the entry, so readers never see a partial
 * entry, and two processes that compile the same kernel at once both succeed (the second rename
 * replaces an identical entry; a loaded old file stays valid under its open mapping).
 */
final class KernelCache {
    static final String ENV_CACHE = "TOKENKERNELS_CACHE";
    static final String PROPERTY_CACHE = "tokenkernels.cache";
    private static final long MAGIC = 0x314548434b4b5454L; // "TTKKCHE1" little-endian
    private static final int TRAILER = 32 + 8 + 8;

    private final Path directory;

    KernelCache(Path directory) {
        this.directory = directory;
    }

    /** The cache of this user: the property, else the environment variable, else ~/.cache/tokenkernels. */
    static KernelCache standard() {
        String dir = System.getProperty(PROPERTY_CACHE);
        if (dir == null || dir.isBlank()) {
            dir = System.getenv(ENV_CACHE);
        }
        Path path = dir == null || dir.isBlank()
                ? Path.of(System.getProperty("user.home"), ".cache", "tokenkernels")
                : Path.of(dir);
        return new KernelCache(path.toAbsolutePath());
    }

    Path directory() {
        return directory;
    }

    /** A cache key: the SHA-256 of every part (source texts, options, compiler and arch), hex. */
    static String key(String... parts) {
        MessageDigest sha = sha256();
        for (String part : parts) {
            byte[] bytes = part.getBytes(StandardCharsets.UTF_8);
            sha.update(ByteBuffer.allocate(8).putLong(bytes.length).array());
            sha.update(bytes);
        }
        return HexFormat.of().formatHex(sha.digest()).substring(0, 40);
    }

    /** The path an entry has (whether or not it exists). */
    Path entryPath(String key, String extension) {
        return directory.resolve(key + "." + extension);
    }

    /** The entry's path if it exists and is intact; a damaged entry is deleted. */
    Optional<Path> find(String key, String extension) {
        Path entry = entryPath(key, extension);
        if (!Files.isRegularFile(entry)) {
            return Optional.empty();
        }
        try {
            if (payloadOf(Files.readAllBytes(entry)) != null) {
                return Optional.of(entry);
            }
            Files.deleteIfExists(entry);
        } catch (IOException e) {
            // Unreadable: treat as missing; the store that follows replaces it.
        }
        return Optional.empty();
    }

    /** The payload of an intact entry. */
    byte[] read(Path entry) {
        try {
            byte[] payload = payloadOf(Files.readAllBytes(entry));
            if (payload == null) {
                throw new TokenKernelsException("kernel cache entry " + entry + " is damaged");
            }
            return payload;
        } catch (IOException e) {
            throw new TokenKernelsException("cannot read kernel cache entry " + entry, e);
        }
    }

    /** Stores {@code payload} under the key and returns the entry's path. */
    Path store(String key, String extension, byte[] payload) {
        try {
            Files.createDirectories(directory);
            Path temp = temporaryFile(key, extension);
            Files.write(temp, payload, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
            return publish(temp, key, extension, payload);
        } catch (IOException e) {
            throw new TokenKernelsException("cannot write the kernel cache in " + directory, e);
        }
    }

    /** Moves a file a compiler produced (e.g. a shared library) into the cache under the key. */
    Path storeFile(String key, String extension, Path produced) {
        try {
            Files.createDirectories(directory);
            Path temp = temporaryFile(key, extension);
            Files.move(produced, temp, StandardCopyOption.REPLACE_EXISTING);
            return publish(temp, key, extension, Files.readAllBytes(temp));
        } catch (IOException e) {
            throw new TokenKernelsException("cannot write the kernel cache in " + directory, e);
        }
    }

    /** A fresh directory for a compiler's intermediate files, inside the cache (same file system). */
    Path temporaryDirectory(String prefix) {
        try {
            Files.createDirectories(directory);
            return Files.createTempDirectory(directory, prefix + "-");
        } catch (IOException e) {
            throw new TokenKernelsException("cannot create a build directory in " + directory, e);
        }
    }

    /** Deletes a folder made by {@link #temporaryDirectory} and everything in it. */
    static void deleteTree(Path root) {
        try (Stream<Path> walk = Files.walk(root)) {
            walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException e) {
            // A leftover build folder costs disk space only.
        }
    }

    private Path temporaryFile(String key, String extension) {
        return directory.resolve(key + "." + extension + ".tmp-" + ProcessHandle.current().pid() + "-"
                + Long.toHexString(ThreadLocalRandom.current().nextLong()));
    }

    private Path publish(Path temp, String key, String extension, byte[] payload) throws IOException {
        Files.write(temp, trailer(payload), StandardOpenOption.APPEND);
        Path entry = entryPath(key, extension);
        try {
            Files.move(temp, entry, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(temp, entry, StandardCopyOption.REPLACE_EXISTING);
        }
        return entry;
    }

    private static byte[] trailer(byte[] payload) {
        return ByteBuffer.allocate(TRAILER).order(ByteOrder.LITTLE_ENDIAN)
                .put(sha256().digest(payload)).putLong(payload.length).putLong(MAGIC).array();
    }

    /** The payload if {@code entry} ends with a trailer that matches it, else null. */
    private static byte[] payloadOf(byte[] entry) {
        if (entry.length < TRAILER) {
            return null;
        }
        ByteBuffer tail = ByteBuffer.wrap(entry, entry.length - TRAILER, TRAILER).order(ByteOrder.LITTLE_ENDIAN);
        byte[] hash = new byte[32];
        tail.get(hash);
        long length = tail.getLong();
        long magic = tail.getLong();
        if (magic != MAGIC || length != entry.length - TRAILER) {
            return null;
        }
        byte[] payload = Arrays.copyOf(entry, (int) length);
        return Arrays.equals(hash, sha256().digest(payload)) ? payload : null;
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JDK has SHA-256", e);
        }
    }
}
