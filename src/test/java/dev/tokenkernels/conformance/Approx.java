package dev.tokenkernels.conformance;

import static org.junit.jupiter.api.Assertions.fail;

/** Comparison of a computed fp32 value with a float64 reference, NaN and infinities included. */
final class Approx {
    private Approx() {
    }

    static void assertClose(String what, double expected, float actual, double tolerance) {
        if (Double.isNaN(expected) || Double.isInfinite(expected)) {
            if (Double.compare(expected, actual) != 0) {
                fail(what + ": expected " + expected + ", got " + actual);
            }
            return;
        }
        double error = Math.abs(actual - expected);
        if (!(error <= tolerance)) {
            fail(what + ": expected " + expected + " +- " + tolerance + ", got " + actual + " (error " + error + ")");
        }
    }
}
