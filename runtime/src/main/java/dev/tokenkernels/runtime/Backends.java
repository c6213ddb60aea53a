package dev.tokenkernels.runtime;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.ServiceConfigurationError;
import java.util.ServiceLoader;

/**
 * Discovery and selection of backends.
 *
 * <p>Selection for an op call: an explicit backend passed to the op; else the device of a device
 * tensor argument; else {@link #defaultBackend()}: the backend named by the system property
 * {@code tokenkernels.backend} (else the environment variable {@code TOKENKERNELS_BACKEND}), which must
 * start or the call fails with the reason; else {@code cuda} if it starts, else {@code cpu}.
 * Discovery never throws: a backend that cannot start is recorded with its reason, which
 * {@link #status()} reports. A provider is started the first time its backend is asked for (not
 * at discovery), so picking {@code cpu} never pays for compiling or loading another backend.
 */
public final class Backends {
    /** Environment variable naming the default backend. */
    public static final String ENV_BACKEND = "TOKENKERNELS_BACKEND";
    /** System property naming the default backend; it wins over {@link #ENV_BACKEND}. */
    public static final String PROPERTY_BACKEND = "tokenkernels.backend";

    /** Outcome of starting one backend: exactly one of the two fields is set. */
    public record Status(String name, Backend backend, String unavailableReason) {
        /** Whether the backend started; {@code false} means {@link #unavailableReason()} says why. */
        public boolean available() {
            return backend != null;
        }
    }

    /** Providers by name, found once; each is started only when first asked for. */
    private static volatile Map<String, BackendProvider> providers;
    private static final Map<String, Status> started = new java.util.concurrent.ConcurrentHashMap<>();
    private static volatile String discoveryProblem;
    /** Whether the JVM resolved {@code jdk.incubator.vector} (it is not resolved by default). */
    private static final boolean VECTOR_API = ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent();

    private Backends() {
    }

    /** Every known backend, started (once) or with the reason it is unavailable; cpu first. */
    public static List<Status> status() {
        List<Status> all = new ArrayList<>();
        all.add(cpuStatus());
        for (String name : providers().keySet()) {
            all.add(statusOf(name));
        }
        if (discoveryProblem != null) {
            all.add(new Status("(discovery)", null, discoveryProblem));
        }
        return List.copyOf(all);
    }

    /**
     * The backend called {@code name}, started on first use.
     *
     * @throws IllegalArgumentException if no backend has that name
     * @throws BackendUnavailableException if it cannot run here, with the reason
     */
    public static Backend named(String name) {
        Status status = "cpu".equals(name) ? cpuStatus() : providers().containsKey(name) ? statusOf(name) : null;
        if (status == null) {
            List<String> known = new ArrayList<>();
            known.add("cpu");
            known.addAll(providers().keySet());
            throw new IllegalArgumentException("backend: expected one of " + known + ", got '" + name + "'");
        }
        if (!status.available()) {
            throw new BackendUnavailableException(name, status.unavailableReason());
        }
        return status.backend();
    }

    /** The backend ops use when neither the call nor a tensor names one (see the class doc). */
    public static Backend defaultBackend() {
        String requested = requestedBackend();
        if (requested != null) {
            return named(requested);
        }
        Status cuda = providers().containsKey("cuda") ? statusOf("cuda") : null;
        return cuda != null && cuda.available() ? cuda.backend() : CpuBackend.shared();
    }

    /** Why {@link #defaultBackend()} chose what it chose, for {@code tokenkernels info}. */
    public static String defaultChoiceReason() {
        String requested = requestedBackend();
        if (requested != null) {
            return "requested by " + ENV_BACKEND + "/" + PROPERTY_BACKEND + "=" + requested;
        }
        if (!providers().containsKey("cuda")) {
            return "automatic: no cuda backend on the class path (add tokenkernels-cuda), using cpu";
        }
        Status cuda = statusOf("cuda");
        return cuda.available() ? "automatic: cuda is available"
                : "automatic: cuda unavailable (" + cuda.unavailableReason() + "), using cpu";
    }

    /**
     * The backend for one op call: {@code explicit} if not null, else {@link #defaultBackend()}.
     *
     * @throws BackendUnavailableException in a JVM without the Vector API module: the CPU ops are
     *     written in it and the kernel backends' host code converts F16/BF16 with it (they would
     *     fail with a bare NoClassDefFoundError)
     */
    public static Backend select(Backend explicit) {
        Backend backend = explicit != null ? explicit : defaultBackend();
        if (!VECTOR_API) {
            throw new BackendUnavailableException(backend.name(), "the ops use the Vector API; start the JVM"
                    + " with --add-modules jdk.incubator.vector");
        }
        return backend;
    }

    private static String requestedBackend() {
        String value = System.getProperty(PROPERTY_BACKEND);
        if (value == null || value.isBlank()) {
            value = System.getenv(ENV_BACKEND);
        }
        return value == null || value.isBlank() ? null : value.trim();
    }

    private static Status cpuStatus() {
        return new Status("cpu", CpuBackend.shared(), null);
    }

    private static Status statusOf(String name) {
        return started.computeIfAbsent(name, n -> start(providers().get(n)));
    }

    private static Map<String, BackendProvider> providers() {
        Map<String, BackendProvider> result = providers;
        if (result == null) {
            synchronized (Backends.class) {
                result = providers;
                if (result == null) {
                    result = discover();
                    providers = result;
                }
            }
        }
        return result;
    }

    private static Map<String, BackendProvider> discover() {
        Map<String, BackendProvider> found = new LinkedHashMap<>();
        try {
            ServiceLoader.load(BackendProvider.class).forEach(p -> found.putIfAbsent(p.name(), p));
        } catch (ServiceConfigurationError e) {
            discoveryProblem = "service loading failed: " + e.getMessage();
        }
        found.remove("cpu");
        return found;
    }

    private static Status start(BackendProvider provider) {
        try {
            return new Status(provider.name(), provider.start(), null);
        } catch (BackendUnavailableException e) {
            return new Status(provider.name(), null, reasonOf(e));
        } catch (RuntimeException | LinkageError e) {
            return new Status(provider.name(), null, e.getClass().getSimpleName() + ": " + reasonOf(e));
        }
    }

    private static String reasonOf(Throwable e) {
        String prefix = "is unavailable: ";
        String message = String.valueOf(e.getMessage());
        int at = message.indexOf(prefix);
        return at >= 0 ? message.substring(at + prefix.length()) : message;
    }
}
