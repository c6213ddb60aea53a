package dev.tokenkernels.runtime;

/**
 * Service-provider interface for backends other than {@code cpu}, registered in
 * {@code META-INF/services/dev.tokenkernels.runtime.BackendProvider}. Providers are instantiated
 * at discovery, so their constructors must be cheap and must not fail; all real work (loading
 * native libraries, finding a device) happens in {@link #start()}.
 */
public interface BackendProvider {

    /** The backend's name, known without starting it. */
    String name();

    /**
     * Starts the backend. Called at most once per JVM by {@link Backends}.
     *
     * @throws BackendUnavailableException (or any exception) with the reason it cannot run here
     */
    Backend start();
}
