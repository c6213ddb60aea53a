package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.TokenKernelsException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.file.FileSystem;
import java.nio.file.FileSystems;
import java.util.ArrayDeque;
import java.util.Collections;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Stream;
import java.util.Deque;
import java.util.Map;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A kernel source file of {@code kernels/} with every file it includes, read from the class path
 * (where the ops and cuda jars ship {@code kernels/} under {@code dev/tokenkernels/kernels/}).
 *
 * <p>Quoted includes resolve against the including file's folder, then {@code kernels/include/},
 * as the compilers are told ({@code -I}); angle-bracket includes are the toolkit's and are left
 * to the compiler. The files are keyed by their path under {@code kernels/}.
 *
 * @param path the main file, e.g. {@code "loss/logit_stats.cu"}
 * @param files every file by path under {@code kernels/}, the main one included
 */
record KernelSource(String path, Map<String, String> files) {
    static final String RESOURCE_ROOT = "dev/tokenkernels/kernels/";
    private static final Pattern QUOTED_INCLUDE = Pattern.compile("^\\s*#\\s*include\\s+\"([^\"]+)\"", Pattern.MULTILINE);

    KernelSource {
        files = Map.copyOf(files);
    }

    /** Loads {@code path} and its includes with the class loader of this class. */
    static KernelSource load(String path) {
        return load(path, KernelSource.class.getClassLoader());
    }

    static KernelSource load(String path, ClassLoader loader) {
        Map<String, String> files = new TreeMap<>();
        Deque<String> pending = new ArrayDeque<>();
        files.put(path, read(path, loader, null));
        pending.add(path);
        while (!pending.isEmpty()) {
            String file = pending.poll();
            Matcher m = QUOTED_INCLUDE.matcher(files.get(file));
            while (m.find()) {
                String included = resolve(file, m.group(1), loader);
                if (!files.containsKey(included)) {
                    files.put(included, read(included, loader, file));
                    pending.add(included);
                }
            }
        }
        return new KernelSource(path, files);
    }

    /**
     * The kernel files ({@code *.cu}) on the class path, by path under {@code kernels/}, sorted;
     * the emulator's own files are not kernels.
     */
    static List<String> list(ClassLoader loader) {
        Set<String> found = new TreeSet<>();
        try {
            for (URL root : Collections.list(loader.getResources(RESOURCE_ROOT))) {
                if (root.getProtocol().equals("jar")) {
                    try (FileSystem jar = FileSystems.newFileSystem(URI.create(root.toString().substring(0,
                            root.toString().indexOf("!/"))), Map.of())) {
                        collect(jar.getPath(RESOURCE_ROOT), found);
                    }
                } else if (root.getProtocol().equals("file")) {
                    collect(Path.of(root.toURI()), found);
                }
            }
        } catch (IOException | URISyntaxException e) {
            throw new TokenKernelsException("cannot list the kernel sources on the class path", e);
        }
        return List.copyOf(found);
    }

    private static void collect(Path root, Set<String> found) throws IOException {
        try (Stream<Path> walk = Files.walk(root)) {
            walk.filter(p -> p.getFileName() != null && p.getFileName().toString().endsWith(".cu"))
                    .map(p -> root.relativize(p).toString().replace('\\', '/'))
                    .filter(p -> !p.startsWith("emu/"))
                    .forEach(found::add);
        }
    }

    /** The main file's text. */
    String text() {
        return files.get(path);
    }

    /** Every file's path and text in one string, for cache keys. */
    String fingerprint() {
        StringBuilder all = new StringBuilder();
        new TreeMap<>(files).forEach((name, text) -> all.append(name).append('\0').append(text).append('\0'));
        return all.toString();
    }

    /** Writes every file under {@code root}, keeping the layout of {@code kernels/}. */
    void writeTo(Path root) {
        try {
            for (Map.Entry<String, String> file : files.entrySet()) {
                Path target = root.resolve(file.getKey());
                Files.createDirectories(target.getParent());
                Files.writeString(target, file.getValue(), StandardCharsets.UTF_8);
            }
        } catch (IOException e) {
            throw new TokenKernelsException("cannot write kernel sources to " + root, e);
        }
    }

    private static String resolve(String includer, String name, ClassLoader loader) {
        int slash = includer.lastIndexOf('/');
        String sibling = normalize((slash < 0 ? "" : includer.substring(0, slash + 1)) + name);
        if (loader.getResource(RESOURCE_ROOT + sibling) != null) {
            return sibling;
        }
        return normalize("include/" + name);
    }

    private static String normalize(String path) {
        Deque<String> parts = new ArrayDeque<>();
        for (String part : path.split("/")) {
            if (part.equals("..")) {
                parts.pollLast();
            } else if (!part.isEmpty() && !part.equals(".")) {
                parts.addLast(part);
            }
        }
        return String.join("/", parts);
    }

    private static String read(String path, ClassLoader loader, String includer) {
        try (InputStream in = loader.getResourceAsStream(RESOURCE_ROOT + path)) {
            if (in == null) {
                throw new TokenKernelsException("kernel source " + path + " not found on the class path"
                        + (includer == null ? "" : " (included from " + includer + ")")
                        + "; is the tokenkernels-ops jar on the class path?");
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new TokenKernelsException("cannot read kernel source " + path, e);
        }
    }
}
