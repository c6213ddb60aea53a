package dev.tokenkernels.cuda;

import java.io.File;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;
import java.net.JarURLConnection;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Enumeration;
import java.util.List;
import java.util.jar.JarEntry;
import java.util.jar.JarFile;

/**
 * Finds and loads libnvrtc, in this order: the path in {@code TOKENKERNELS_NVRTC} (or the property
 * {@code tokenkernels.nvrtc}); a system CUDA toolkit ({@code CUDA_HOME}, {@code CUDA_PATH},
 * {@code /usr/local/cuda}, then the loader's own search path); Bytedeco's {@code cuda-redist} jar
 * on the class path, extracted by JavaCPP's {@code Loader.cacheResource}. Never throws: the
 * result is the loaded bindings or the reasons each place failed.
 */
@SuppressWarnings("restricted") // loads a native library with FFM
final class NvrtcLocator {
    static final String ENV_NVRTC = "TOKENKERNELS_NVRTC";
    static final String PROPERTY_NVRTC = "tokenkernels.nvrtc";
    private static final List<String> SONAMES = List.of("libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so");

    /** Exactly one of the two is set. */
    record Result(Nvrtc nvrtc, String unavailableReason) {
        boolean available() {
            return nvrtc != null;
        }
    }

    private static Result found;

    private NvrtcLocator() {
    }

    /** The NVRTC of this process, located once. */
    static synchronized Result find() {
        if (found == null) {
            String explicit = System.getProperty(PROPERTY_NVRTC);
            found = locate(explicit == null || explicit.isBlank() ? System.getenv(ENV_NVRTC) : explicit);
        }
        return found;
    }

    /**
     * Locates NVRTC afresh (not cached; {@link #find} is what callers use).
     *
     * @param explicit a library path that is the only place tried, or null/blank for the search
     */
    static Result locate(String explicit) {
        try {
            return search(explicit);
        } catch (RuntimeException | LinkageError e) {
            // Probing is on the path of backend selection: a surprise here must read as "unavailable".
            return new Result(null, "locating libnvrtc failed: " + e);
        }
    }

    private static Result search(String explicit) {
        List<String> tried = new ArrayList<>();
        if (explicit != null && !explicit.isBlank()) {
            Result r;
            try {
                r = load(Path.of(explicit), tried);
            } catch (InvalidPathException e) {
                r = null;
                tried.add(e.getMessage());
            }
            return r != null ? r : new Result(null, ENV_NVRTC + "/" + PROPERTY_NVRTC + "=" + explicit
                    + " does not load: " + tried);
        }
        List<Path> toolkits = new ArrayList<>();
        for (String env : List.of("CUDA_HOME", "CUDA_PATH")) {
            String dir = System.getenv(env);
            if (dir != null && !dir.isBlank()) {
                toolkits.add(Path.of(dir));
            }
        }
        toolkits.add(Path.of("/usr/local/cuda"));
        for (Path toolkit : toolkits) {
            for (String lib : List.of("lib64", "lib", "targets/x86_64-linux/lib")) {
                for (String name : SONAMES) {
                    Path candidate = toolkit.resolve(lib).resolve(name);
                    if (Files.exists(candidate)) {
                        Result r = load(candidate, tried);
                        if (r != null) {
                            return r;
                        }
                    }
                }
            }
        }
        for (String name : SONAMES) {
            Result r = load(Path.of(name), tried); // the dynamic loader's search path
            if (r != null) {
                return r;
            }
        }
        try {
            Result r = fromBytedeco(tried);
            if (r != null) {
                return r;
            }
        } catch (LinkageError e) {
            tried.add("Bytedeco: JavaCPP is not on the class path");
        }
        return new Result(null, "libnvrtc not found (no CUDA toolkit, set " + ENV_NVRTC
                + " or add org.bytedeco:cuda-redist to the class path); tried " + tried);
    }

    /** Extracts libnvrtc and its builtins library from Bytedeco's cuda-redist jar, then loads them. */
    private static Result fromBytedeco(List<String> tried) {
        String dir = "/org/bytedeco/cuda/" + org.bytedeco.javacpp.Loader.getPlatform() + "/";
        URL nvrtc = NvrtcLocator.class.getResource(dir + "libnvrtc.so.13");
        if (nvrtc == null) {
            tried.add("Bytedeco: no cuda-redist jar on the class path");
            return null;
        }
        try {
            File library = org.bytedeco.javacpp.Loader.cacheResource(dir + "libnvrtc.so.13");
            // NVRTC opens libnvrtc-builtins.so.<version> by its soname when it compiles; loading it
            // first from the same extracted folder makes that lookup find it.
            for (String builtins : entriesStartingWith(nvrtc, dir.substring(1) + "libnvrtc-builtins.so")) {
                File extracted = org.bytedeco.javacpp.Loader.cacheResource("/" + builtins);
                SymbolLookup.libraryLookup(extracted.toPath(), Arena.global());
            }
            return load(library.toPath(), tried);
        } catch (IOException | RuntimeException e) {
            tried.add("Bytedeco: " + e.getMessage());
            return null;
        }
    }

    private static List<String> entriesStartingWith(URL resource, String prefix) throws IOException {
        List<String> names = new ArrayList<>();
        if (resource.openConnection() instanceof JarURLConnection jar) {
            // Through a URI, so a jar path with spaces or other escaped characters is decoded.
            File path;
            try {
                path = new File(jar.getJarFileURL().toURI());
            } catch (URISyntaxException e) {
                throw new IOException("not a file URL: " + jar.getJarFileURL(), e);
            }
            try (JarFile file = new JarFile(path)) {
                for (Enumeration<JarEntry> e = file.entries(); e.hasMoreElements(); ) {
                    String name = e.nextElement().getName();
                    if (name.startsWith(prefix)) {
                        names.add(name);
                    }
                }
            }
        }
        return names;
    }

    private static Result load(Path library, List<String> tried) {
        try {
            SymbolLookup lookup = library.getNameCount() == 1 && !library.isAbsolute()
                    ? SymbolLookup.libraryLookup(library.toString(), Arena.global())
                    : SymbolLookup.libraryLookup(library, Arena.global());
            Nvrtc nvrtc = new Nvrtc(library, lookup);
            nvrtc.version(); // a library that loads but cannot answer is not usable
            return new Result(nvrtc, null);
        } catch (RuntimeException | LinkageError e) {
            tried.add(library + ": " + e.getMessage());
            return null;
        }
    }
}
