package dev.tokenkernels.runtime;

/** An explicitly requested backend cannot run here; the message says why. */
public class BackendUnavailableException extends TokenKernelsException {
    private static final long serialVersionUID = 1L;

    /** Says that {@code backend} is unavailable, and why. */
    public BackendUnavailableException(String backend, String reason) {
        super("backend '" + backend + "' is unavailable: " + reason);
    }
}
