package dev.tokenkernels.runtime;

/**
 * A failure of a backend or of native code (a compile error, a driver error, a library that did
 * not load), as opposed to a bad argument, which is an {@link IllegalArgumentException}.
 */
public class TokenKernelsException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** A failure described by {@code message}. */
    public TokenKernelsException(String message) {
        super(message);
    }

    /** A failure described by {@code message}, caused by {@code cause}. */
    public TokenKernelsException(String message, Throwable cause) {
        super(message, cause);
    }
}
