package dev.tokenkernels.cuda;

import dev.tokenkernels.runtime.TokenKernelsException;

/**
 * NVRTC rejected a program: its {@code nvrtcResult} and program log, kept apart from the message
 * so that callers decide on them (the message also lists the options, which name the architecture).
 */
final class NvrtcCompileException extends TokenKernelsException {
    private static final long serialVersionUID = 1L;

    private final int result;
    private final String log;

    NvrtcCompileException(String message, int result, String log) {
        super(message);
        this.result = result;
        this.log = log;
    }

    /** The {@code nvrtcResult} of {@code nvrtcCompileProgram}. */
    int result() {
        return result;
    }

    /** NVRTC's program log, empty when it wrote none. */
    String log() {
        return log;
    }
}
