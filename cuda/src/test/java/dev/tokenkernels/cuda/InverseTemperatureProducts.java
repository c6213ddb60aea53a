package dev.tokenkernels.cuda;

import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The multiplies by a kernel's {@code float inv_t} parameter that ptxas may contract into an fma
 * ({@code mul.f32}, not {@code mul.rn.f32}). The kernels scale logits as {@code x = z * inv_t} and
 * subtract maxes and log-sum-exps made from the same rounded x; a contracted
 * {@code fma(z, inv_t, -lse)} uses the exact product instead, off by up to half an ulp of
 * {@code |x|} (for {@code z = 1e10}, {@code T = 1/3.3}: log p = +35 and a KL of -70 between equal
 * rows). cuda-emu builds with {@code -ffp-contract=off} and cannot show it, so every such multiply
 * must be {@code __fmul_rn}, which PTX keeps as {@code mul.rn.f32}.
 */
final class InverseTemperatureProducts {
    private static final Pattern SIGNATURE = Pattern.compile(
            "extern\\s+\"C\"\\s+__global__\\s+void\\s+(?:__launch_bounds__\\s*\\([^)]*\\)\\s*)?(\\w+)\\s*\\(([^)]*)\\)");

    private InverseTemperatureProducts() {
    }

    /** The contractible multiplies by {@code inv_t} in {@code ptx}, per entry of {@code source} that takes one. */
    static List<String> contractible(String source, String ptx) {
        List<String> found = new ArrayList<>();
        Matcher entry = SIGNATURE.matcher(source.replaceAll("//[^\\n]*", ""));
        while (entry.find()) {
            String[] parameters = entry.group(2).split(",");
            for (int i = 0; i < parameters.length; i++) {
                if (!parameters[i].trim().matches("(const\\s+)?float\\s+inv_t")) {
                    continue;
                }
                String body = body(ptx, entry.group(1));
                Matcher load = Pattern.compile("ld\\.param\\.f32\\s+(%f\\d+), \\[" + entry.group(1) + "_param_" + i + "\\]")
                        .matcher(body);
                boolean loaded = false;
                while (load.find()) { // every register the parameter is loaded into
                    loaded = true;
                    String register = Pattern.quote(load.group(1));
                    Matcher mul = Pattern.compile("mul\\.f32\\s+%f\\d+, (%f\\d+, " + register + "|" + register
                            + ", %f\\d+);").matcher(body);
                    while (mul.find()) {
                        found.add(entry.group(1) + ": " + mul.group());
                    }
                }
                if (!loaded) {
                    found.add(entry.group(1) + ": inv_t is never loaded (renamed parameter?)");
                }
            }
        }
        return found;
    }

    /** The PTX of entry {@code name}: from its {@code .entry} line to the next one. */
    private static String body(String ptx, String name) {
        int start = ptx.indexOf(".entry " + name + "(");
        if (start < 0) {
            return "";
        }
        int end = ptx.indexOf(".entry ", start + 1);
        return ptx.substring(start, end < 0 ? ptx.length() : end);
    }
}
