package dev.tokenkernels.cuda;

import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * What ptxas reports for one compiled kernel entry (NVRTC option {@code --ptxas-options=-v}):
 * registers per thread, spills, stack frame, static shared memory and barriers. The kernel report
 * and the static checks (no spills) read these.
 */
record KernelResources(String entry, String arch, int registers, int spillStoreBytes, int spillLoadBytes,
                       int stackFrameBytes, int sharedBytes, int barriers) {
    private static final Pattern COMPILING = Pattern.compile("Compiling entry function '([^']+)' for '([^']+)'");
    private static final Pattern FRAME = Pattern.compile(
            "(\\d+) bytes stack frame, (\\d+) bytes spill stores, (\\d+) bytes spill loads");
    private static final Pattern USED = Pattern.compile("Used (\\d+) registers");
    private static final Pattern SHARED = Pattern.compile("(\\d+) bytes smem");
    private static final Pattern BARRIERS = Pattern.compile("used (\\d+) barriers");

    /** Every entry described in an NVRTC log compiled with {@code --ptxas-options=-v}. */
    static List<KernelResources> parse(String log) {
        List<KernelResources> entries = new ArrayList<>();
        String entry = null;
        String arch = null;
        int[] frame = {0, 0, 0};
        for (String line : log.split("\n")) {
            Matcher m = COMPILING.matcher(line);
            if (m.find()) {
                entry = m.group(1);
                arch = m.group(2);
                frame = new int[] {0, 0, 0};
                continue;
            }
            if (entry == null) {
                continue;
            }
            m = FRAME.matcher(line);
            if (m.find()) {
                frame = new int[] {Integer.parseInt(m.group(1)), Integer.parseInt(m.group(2)), Integer.parseInt(m.group(3))};
                continue;
            }
            m = USED.matcher(line);
            if (m.find()) {
                Matcher shared = SHARED.matcher(line);
                Matcher barriers = BARRIERS.matcher(line);
                entries.add(new KernelResources(entry, arch, Integer.parseInt(m.group(1)), frame[1], frame[2], frame[0],
                        shared.find() ? Integer.parseInt(shared.group(1)) : 0,
                        barriers.find() ? Integer.parseInt(barriers.group(1)) : 0));
                entry = null;
            }
        }
        return entries;
    }
}
