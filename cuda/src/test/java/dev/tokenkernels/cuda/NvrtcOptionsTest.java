package dev.tokenkernels.cuda;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.junit.jupiter.api.Test;

/**
 * The kernels are compiled without fast-math, and say so explicitly: the samplers' bit-identity
 * with the CPU and the ops' tolerances assume IEEE denormals, division and square root.
 * {@link KernelStaticCheckTest} applies {@link #assertNoFastMath} to the options of every real compile.
 */
class NvrtcOptionsTest {
    /** Flags (or their prefixes) that switch on approximate arithmetic. */
    private static final List<String> FAST_MATH = List.of("-use_fast_math", "--use_fast_math", "-ftz=true", "--ftz=true",
            "-prec-div=false", "--prec-div=false", "-prec-sqrt=false", "--prec-sqrt=false", "-ftz=1", "--ftz=1",
            "-prec-div=0", "--prec-div=0", "-prec-sqrt=0", "--prec-sqrt=0");

    static void assertNoFastMath(List<String> options) {
        for (String option : options) {
            String o = option.toLowerCase(Locale.ROOT).replace(" ", "=");
            assertFalse(FAST_MATH.contains(o) || o.contains("fast_math") || o.contains("fast-math"),
                    "a fast-math option is passed to NVRTC: " + option + " in " + options);
        }
        for (String required : List.of("--ftz=false", "--prec-div=true", "--prec-sqrt=true", "--fmad=true")) {
            assertTrue(options.contains(required), required + " must be passed explicitly: " + options);
        }
    }

    @Test
    void everyArchitectureIsCompiledWithoutFastMath() {
        for (String arch : List.of("sm_80", "sm_90", "sm_100", "compute_80", "compute_90")) {
            assertNoFastMath(NvrtcCompiler.options(arch));
        }
    }

    @Test
    void theCheckCanFail() {
        List<String> base = NvrtcCompiler.options("sm_90");
        for (String bad : List.of("-use_fast_math", "--ftz=true", "--prec-div=false", "--prec-sqrt=false")) {
            List<String> withBad = new ArrayList<>(base);
            withBad.add(bad);
            assertThrows(AssertionError.class, () -> assertNoFastMath(withBad), bad);
        }
    }
}
