package dev.tokenkernels.bench;

import dev.tokenkernels.ops.loss.RelationGraphKl;
import dev.tokenkernels.runtime.Backend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.SplittableRandom;

/**
 * The token relationship graph loss with its gradient (into a reused F32 buffer): student
 * features {@code [B, L, d_s]} and teacher features {@code [B, L, d_t]} of one dtype, every token
 * valid, TOKEN_MEAN. The shape reads {@code BxLxd_sxd_t}.
 *
 * <p>Bytes are the features read once and the gradient written once, as for every op, but this
 * op is bound by arithmetic: a call costs about {@code B L^2 (3 d_s + 2 d_t)} multiply-adds on the
 * CPU (pass 1's dot products, pass 2's again and its sum of unit vectors), so its GB/s is far below
 * the bandwidth probe by design (at 8x512x768x1024 in F32: about 9.1e9 multiply-adds for 42 MB).
 *
 * <p>No scalar baseline: plain loops at the report's shape would take tens of seconds per call
 * (about 10^10 scalar multiply-adds), longer than the rest of the report; the 1-thread CPU row is
 * the point of comparison.
 */
final class RelationGraphKlWorkload implements Workload {
    private final int batch;
    private final int tokens;
    private final int studentDim;
    private final int teacherDim;
    private final DType dtype;
    private final Tensor student;
    private final Tensor teacher;
    private final Tensor gradient;

    RelationGraphKlWorkload(int batch, int tokens, int studentDim, int teacherDim, DType dtype) {
        this.batch = batch;
        this.tokens = tokens;
        this.studentDim = studentDim;
        this.teacherDim = teacherDim;
        this.dtype = dtype;
        // Tokens around a few shared directions, so the graphs are not uniform; the teacher's
        // clusters match the student's, as after some distillation.
        SplittableRandom random = new SplittableRandom(47);
        int[] cluster = new int[batch * tokens];
        for (int i = 0; i < cluster.length; i++) {
            cluster[i] = random.nextInt(8);
        }
        this.student = features(random, cluster, studentDim);
        this.teacher = features(random, cluster, teacherDim);
        this.gradient = Tensor.allocate(DType.F32, batch, tokens, studentDim);
    }

    /** {@code [B, L, dim]} of the workload's dtype: cluster centre plus noise per token. */
    private Tensor features(SplittableRandom random, int[] cluster, int dim) {
        float[][] centres = new float[8][dim];
        for (float[] centre : centres) {
            for (int x = 0; x < dim; x++) {
                centre[x] = (float) random.nextGaussian();
            }
        }
        Tensor t = Tensor.allocate(dtype, batch, tokens, dim);
        long at = 0;
        for (int c : cluster) {
            for (int x = 0; x < dim; x++) {
                t.setFloat(at++, centres[c][x] + (float) random.nextGaussian());
            }
        }
        return t;
    }

    @Override
    public String op() {
        return "relation_graph_kl";
    }

    @Override
    public String shape() {
        return batch + "x" + tokens + "x" + studentDim + "x" + teacherDim;
    }

    @Override
    public String dtype() {
        return dtype.name();
    }

    /** Student and teacher features read once, the F32 gradient written once. */
    @Override
    public long bytes() {
        return student.byteSize() + teacher.byteSize() + gradient.byteSize();
    }

    @Override
    public void run(Backend backend) {
        RelationGraphKl.computeWithGradient(student, teacher, RelationGraphKl.Options.defaults().on(backend), 1f,
                gradient).close();
    }

    @Override
    public boolean hasScalar() {
        return false;
    }

    @Override
    public void close() {
        student.close();
        teacher.close();
        gradient.close();
    }
}
