package dev.tokenkernels.ops.loss;

import static dev.tokenkernels.runtime.KernelParam.f32;
import static dev.tokenkernels.runtime.KernelParam.i32;
import static dev.tokenkernels.runtime.KernelParam.i64;
import static dev.tokenkernels.runtime.KernelParam.pointer;

import dev.tokenkernels.runtime.DeviceBuffer;
import dev.tokenkernels.runtime.Kernel;
import dev.tokenkernels.runtime.KernelBackend;
import dev.tokenkernels.runtime.LaunchConfig;
import dev.tokenkernels.runtime.TokenKernelsException;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.stream.IntStream;

/**
 * {@link ClippedKl} on a {@link KernelBackend}: {@code kernels/loss/clipped_kl.cu}, one block per
 * row. Tensors are host tensors for now: logits and bounds go in, losses and gradients come out.
 * Rows whose band edges need more than {@link ClippedKl#KERNEL_RANKED_CLASSES} classes ordered
 * are flagged by the first launch, with their count {@code w}, and run again with global scratch
 * for their sort: 20 bytes per class for {@code w} rounded up to a power of two (so a row of a
 * 151936-class vocabulary whose edges hold 5000 classes takes 160 KiB, not the 5 MiB of the whole
 * vocabulary). The flagged rows go in as few launches as {@link #scratchBytes()} allows: as many
 * rows per launch as fit, and at least one (so a launch exceeds the cap only when one row's
 * scratch alone does).
 */
final class ClippedKlKernel {
    static final String SOURCE = "loss/clipped_kl.cu";
    static final int THREADS = 256;
    /**
     * The system property that caps the sort scratch of one launch, in bytes (default
     * {@value #DEFAULT_SCRATCH_BYTES}); the backends cannot tell free device memory, so the cap is
     * the caller's to lower (or raise).
     */
    static final String SCRATCH_PROPERTY = "tokenkernels.clippedKl.scratchBytes";
    static final long DEFAULT_SCRATCH_BYTES = 1L << 28;
    /** A key (8 bytes) and a gate with its two derivatives (12 bytes) per sorted class. */
    private static final int SCRATCH_BYTES_PER_CLASS = 20;
    /** Pass-1 rounds before giving up on a row whose ordered-class count keeps growing (it changes by rounding only). */
    private static final int SORT_ROUNDS = 4;
    private static final Kernel CLIPPED_KL = new Kernel(SOURCE, "clipped_kl", pointer("student"), i32("student_dtype"),
            pointer("teacher"), i32("teacher_dtype"), pointer("grad"), i32("grad_dtype"), pointer("row_loss"),
            pointer("kept_mass"),
            pointer("lower_grad"), pointer("upper_grad"), pointer("weights"), pointer("grad_coef"),
            pointer("bound_coef"), pointer("lower"), pointer("upper"), pointer("targets"), i64("vocab"), f32("inv_t"),
            f32("gamma"), i32("reverse"), i32("has_grad"), i32("pass"),
            pointer("overflow_rows"), pointer("row_list"), pointer("sort_keys"), pointer("sort_gates"),
            pointer("sort_offsets"));

    private ClippedKlKernel() {
    }

    static void run(KernelBackend gpu, ClippedKl.ClipRows job) {
        int rows = job.rows();
        if (rows == 0) {
            return;
        }
        boolean withGradient = job.gradCoef() != null;
        try (DeviceBuffer student = gpu.allocate(job.student().byteSize());
             DeviceBuffer teacher = gpu.allocate(job.teacher().byteSize());
             DeviceBuffer grad = gpu.allocate(withGradient && !job.inPlace() ? job.gradient().byteSize() : 4);
             DeviceBuffer rowLoss = gpu.allocate(4L * rows);
             DeviceBuffer keptMass = gpu.allocate(4L * rows);
             DeviceBuffer lowerGrad = gpu.allocate(4L * rows);
             DeviceBuffer upperGrad = gpu.allocate(4L * rows);
             DeviceBuffer weights = gpu.allocate(4L * rows);
             DeviceBuffer gradCoef = gpu.allocate(4L * rows);
             DeviceBuffer boundCoef = gpu.allocate(4L * rows);
             DeviceBuffer lower = gpu.allocate(4L * rows);
             DeviceBuffer upper = gpu.allocate(4L * rows);
             DeviceBuffer targets = gpu.allocate(4L * rows);
             DeviceBuffer overflow = gpu.allocate(4L * rows)) {
            gpu.copyToDevice(job.student().segment(), student);
            gpu.copyToDevice(job.teacher().segment(), teacher);
            gpu.copyToDevice(MemorySegment.ofArray(job.weights()), weights);
            gpu.copyToDevice(MemorySegment.ofArray(withGradient ? job.gradCoef() : new float[rows]), gradCoef);
            gpu.copyToDevice(MemorySegment.ofArray(withGradient ? job.boundCoef() : new float[rows]), boundCoef);
            gpu.copyToDevice(MemorySegment.ofArray(job.lower()), lower);
            gpu.copyToDevice(MemorySegment.ofArray(job.upper()), upper);
            gpu.copyToDevice(MemorySegment.ofArray(job.targets()), targets);
            int[] overflowRows = new int[rows];
            gpu.copyToDevice(MemorySegment.ofArray(overflowRows), overflow);
            // In place on the host means in place on the device: the kernel gets the student buffer.
            DeviceBuffer gradTarget = job.inPlace() ? student : grad;
            Object[] common = {student, DivergenceKernel.dtypeCode(job.student().dtype()), teacher,
                DivergenceKernel.dtypeCode(job.teacher().dtype()), gradTarget,
                withGradient ? DivergenceKernel.dtypeCode(job.gradient().dtype()) : 0, rowLoss, keptMass, lowerGrad,
                upperGrad,
                weights, gradCoef, boundCoef, lower, upper, targets, (long) job.vocab(), job.invT(), job.gamma(),
                job.direction() == Divergence.Kind.REVERSE_KL ? 1 : 0, withGradient ? 1 : 0};
            // Pass 0 has no scratch: the row list and sort buffers are placeholders it does not read.
            gpu.launch(CLIPPED_KL, LaunchConfig.of1d(rows, THREADS, 0),
                    arguments(common, 0, overflow, overflow, overflow, overflow, overflow));
            gpu.copyToHost(overflow, MemorySegment.ofArray(overflowRows));
            sortOverflowRows(gpu, common, overflowRows, overflow);
            gpu.copyToHost(rowLoss, MemorySegment.ofArray(job.rowLoss()));
            gpu.copyToHost(keptMass, MemorySegment.ofArray(job.keptMass()));
            if (withGradient) {
                gpu.copyToHost(gradTarget, job.gradient().segment());
                gpu.copyToHost(lowerGrad, MemorySegment.ofArray(job.lowerGradient()));
                gpu.copyToHost(upperGrad, MemorySegment.ofArray(job.upperGradient()));
            }
        }
    }

    /** The sort scratch cap of one launch: {@link #SCRATCH_PROPERTY}, or {@value #DEFAULT_SCRATCH_BYTES}. */
    static long scratchBytes() {
        long bytes = Long.getLong(SCRATCH_PROPERTY, DEFAULT_SCRATCH_BYTES);
        if (bytes <= 0) {
            throw new IllegalArgumentException(SCRATCH_PROPERTY + ": expected a byte count > 0, got " + bytes);
        }
        return bytes;
    }

    /**
     * Pass 1 for the rows with {@code counts[row] > 0} ordered classes: each row's scratch sized by
     * its own count, rows packed into launches of at most {@link #scratchBytes()} (at least one row
     * each). A row whose count grew past its room in pass 1 says so in {@code overflow} and runs
     * again with more.
     */
    private static void sortOverflowRows(KernelBackend gpu, Object[] common, int[] counts, DeviceBuffer overflow) {
        long cap = scratchBytes();
        int[] pending = pendingRows(counts);
        for (int round = 0; round < SORT_ROUNDS && pending.length > 0; round++) {
            gpu.copyToDevice(MemorySegment.ofArray(new int[counts.length]), overflow);
            int first = 0;
            while (first < pending.length) {
                long classes = 0;
                int end = first;
                while (end < pending.length) {
                    long room = room(counts[pending[end]]);
                    if (end > first && SCRATCH_BYTES_PER_CLASS * (classes + room) > cap) {
                        break;
                    }
                    classes += room;
                    end++;
                }
                long[] offsets = new long[end - first + 1];
                for (int i = first; i < end; i++) {
                    offsets[i - first + 1] = offsets[i - first] + room(counts[pending[i]]);
                }
                try (DeviceBuffer rowList = gpu.allocate(4L * (end - first));
                     DeviceBuffer offsetList = gpu.allocate(8L * offsets.length);
                     DeviceBuffer keys = gpu.allocate(8 * classes);
                     DeviceBuffer gates = gpu.allocate(12 * classes)) {
                    gpu.copyToDevice(MemorySegment.ofArray(Arrays.copyOfRange(pending, first, end)), rowList);
                    gpu.copyToDevice(MemorySegment.ofArray(offsets), offsetList);
                    gpu.launch(CLIPPED_KL, LaunchConfig.of1d(end - first, THREADS, 0),
                            arguments(common, 1, overflow, rowList, keys, gates, offsetList));
                }
                first = end;
            }
            gpu.copyToHost(overflow, MemorySegment.ofArray(counts));
            pending = pendingRows(counts);
        }
        if (pending.length > 0) {
            throw new TokenKernelsException("clipped KL: row " + pending[0] + "'s classes to order (last count "
                    + counts[pending[0]] + ") did not fit its sort scratch in " + SORT_ROUNDS + " rounds; this is a bug");
        }
    }

    private static int[] pendingRows(int[] counts) {
        return IntStream.range(0, counts.length).filter(row -> counts[row] > 0).toArray();
    }

    /** A row's sort room: its count rounded up to a power of two (the bitonic sort's length). */
    private static long room(int count) {
        return count <= 1 ? 1 : Long.highestOneBit(count - 1L) << 1;
    }

    private static Object[] arguments(Object[] common, Object... rest) {
        Object[] all = Arrays.copyOf(common, common.length + rest.length);
        System.arraycopy(rest, 0, all, common.length, rest.length);
        return all;
    }
}
