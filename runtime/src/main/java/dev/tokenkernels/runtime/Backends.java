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
 * tensor argument; else {@link #defaultBackend()}: the backend named by the environment variable
 * {@code TOKENKERNELS_BACKEND} (or the system property {@code tokenkernels.backend}), which must
 * start or the call fails with the reason; else {@code cuda} if it starts, else {@code cpu}.
 * Discovery never throws: a backend that cannot start is recorded with its reason, which
 * {@link #status()} reports.
 */
public final class Backends {
    public static final String ENV_BACKEND = "TOKENKERNELS_BACKEND";
    public static final String PROPERTY_BACKEND = "tokenkernels.backend";

    /** Outcome of starting one backend: exactly one of the two fields is set. */
    public record Status(String name, Backend backend, String unavailableReason) {
        public boolean available() {
            return backend != null;
        }
    }

    private static volatile Map<String, Status> statuses;

    private Backends() {
    }

    /** Every known backend, started (once) or with the reason it is unavailable; cpu first. */
    public static List<Status> status() {
        return List.copyOf(statuses().values());
    }

    /**
     * The backend called {@code name}.
     *
     * @throws IllegalArgumentException if no backend has that name
     * @throws BackendUnavailableException if it cannot run here, with the reason
     */
    public static Backend named(String name) {
        Status status = statuses().get(name);
        if (status == null) {
            throw new IllegalArgumentException("backend: expected one of " + statuses().keySet() + ", got '" + name + "'");
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
        Status cuda = statuses().get("cuda");
        return cuda != null && cuda.available() ? cuda.backend() : CpuBackend.shared();
    }

    /** Why {@link #defaultBackend()} chose what it chose, for {@code tokenkernels info}. */
    public static String defaultChoiceReason() {
        String requested = requestedBackend();
        if (requested != null) {
            return "requested by " + ENV_BACKEND + "/" + PROPERTY_BACKEND + "=" + requested;
        }
        Status cuda = statuses().get("cuda");
        if (cuda == null) {
            return "automatic: no cuda backend on the class path (add tokenkernels-cuda), using cpu";
        }
        return cuda.available() ? "automatic: cuda is available"
                : "automatic: cuda unavailable (" + cuda.unavailableReason() + "), using cpu";
    }

    /** The backend for one op call: {@code explicit} if not null, else {@link #defaultBackend()}. */
    public static Backend select(Backend explicit) {
        return explicit != null ? explicit : defaultBackend();
    }

    private static String requestedBackend() {
        String value = System.getProperty(PROPERTY_BACKEND);
        if (value == null || value.isBlank()) {
            value = System.getenv(ENV_BACKEND);
        }
        return value == null || value.isBlank() ? null : value.trim();
    }

    private static Map<String, Status> statuses() {
        Map<String, Status> result = statuses;
        if (result == null) {
            synchronized (Backends.class) {
                result = statuses;
                if (result == null) {
                    result = discover();
                    statuses = result;
                }
            }
        }
        return result;
    }

    private static Map<String, Status> discover() {
        Map<String, Status> found = new LinkedHashMap<>();
        found.put("cpu", new Status("cpu", CpuBackend.shared(), null));
        List<BackendProvider> providers = new ArrayList<>();
        try {
            ServiceLoader.load(BackendProvider.class).forEach(providers::add);
        } catch (ServiceConfigurationError e) {
            found.put("(discovery)", new Status("(discovery)", null, "service loading failed: " + e.getMessage()));
        }
        for (BackendProvider provider : providers) {
            found.putIfAbsent(provider.name(), start(provider));
        }
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
