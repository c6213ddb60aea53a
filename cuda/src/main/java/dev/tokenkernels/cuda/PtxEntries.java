package dev.tokenkernels.cuda;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The parameter lists of the {@code .entry} functions of a PTX module, as byte sizes: what a
 * launch's arguments are checked against on a GPU, where the compiled kernel is the only
 * authority on its signature.
 */
final class PtxEntries {
    private static final Pattern ENTRY = Pattern.compile("\\.entry\\s+(\\w+)\\s*\\(([^)]*)\\)", Pattern.DOTALL);
    private static final Pattern ARRAY_PARAM = Pattern.compile("\\.param\\s+(?:\\.align\\s+\\d+\\s+)?\\.b8\\s+\\w+\\[(\\d+)\\]");
    private static final Pattern SCALAR_PARAM = Pattern.compile("\\.param\\s+(?:\\.align\\s+\\d+\\s+)?\\.([subf])(8|16|32|64)\\b");

    private PtxEntries() {
    }

    /** Entry name to its parameters' byte sizes, in PTX order. */
    static Map<String, int[]> parse(String ptx) {
        Map<String, int[]> entries = new LinkedHashMap<>();
        Matcher m = ENTRY.matcher(ptx);
        while (m.find()) {
            List<Integer> sizes = new ArrayList<>();
            for (String param : m.group(2).split(",")) {
                if (param.isBlank()) {
                    continue;
                }
                Matcher array = ARRAY_PARAM.matcher(param);
                Matcher scalar = SCALAR_PARAM.matcher(param);
                if (array.find()) {
                    sizes.add(Integer.parseInt(array.group(1)));
                } else if (scalar.find()) {
                    sizes.add(Integer.parseInt(scalar.group(2)) / 8);
                } else {
                    throw new IllegalArgumentException("unrecognized PTX parameter in entry " + m.group(1) + ": " + param.strip());
                }
            }
            entries.put(m.group(1), sizes.stream().mapToInt(Integer::intValue).toArray());
        }
        return entries;
    }
}
