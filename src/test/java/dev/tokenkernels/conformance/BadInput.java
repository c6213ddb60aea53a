package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The bad-input check every op's test uses: the call is refused with a message that names the problem. */
final class BadInput {
    private BadInput() {
    }

    /** {@code call} throws an {@link IllegalArgumentException} whose message contains {@code inMessage}. */
    static void expect(Call call, String inMessage) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call::run);
        assertTrue(e.getMessage().contains(inMessage), "message '" + e.getMessage() + "' should contain '" + inMessage + "'");
    }

    @FunctionalInterface
    interface Call {
        void run();
    }
}
