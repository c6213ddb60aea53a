package dev.tokenkernels.ops.loss;

import dev.tokenkernels.ops.cpu.ExponentScale;
import dev.tokenkernels.ops.cpu.HalfFloats;
import dev.tokenkernels.ops.cpu.VectorMath;
import dev.tokenkernels.runtime.CpuBackend;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector API implementation of {@link Divergence}, row by row, with one exponential per element
 * and side:
 * <ol>
 *   <li>one sweep over the row pair in blocks of {@link #BLOCK} columns: a block of each row is
 *       copied (decoded, extrapolated) into an fp32 array in L1 and its max taken (on z: for
 *       {@code T > 0} the max class of z is that of z / T), then {@code e = 2^d} into a scratch row
 *       per side, {@code d = fp32(z - m_b) invT2}, {@code invT2 = log2(e) / T}, {@code m_b} the
 *       running max of z so far: in base 2 the exponential needs no range reduction by ln 2, and the
 *       difference before the scaling keeps the classes near the max exact. The running sums
 *       {@code S} are rescaled in fp64 when the max grows, and
 *       {@code p = e_s 2^((m_b - M_s) invT2) / S_s} costs a multiply by the block's scale. For the
 *       KLs the same sweep sums the cross term ({@code sum e_t d} for forward KL, with
 *       {@code d = (z_t - m_b) invT2 - (z_s - o_b) invT2}, {@code o_b} the student's running max:
 *       offsets between the two rows' logits stay out of the fp32 sums), which with the sums is the
 *       loss: {@code log q - log p = ln2 d + bracket_b}, the bracket in fp64;</li>
 *   <li>JSD and total variation: a sweep for the loss, from the scratch rows (and, for JSD, the
 *       blocks copied again);</li>
 *   <li>the gradient, block by block into an array that is then stored in the gradient row (copied,
 *       or rounded to F16/BF16):
 *       forward KL {@code (p - q) coef} and total variation from the scratch rows alone, reverse
 *       KL from them and the {@code d} that sweep 1 kept, JSD from the {@code log p - log m} its loss
 *       sweep kept.</li>
 * </ol>
 * Logits enter every exponential and log as a difference from a max of z, scaled after: a
 * rounded product {@code z / T} would put an ulp of {@code |z / T|} into each (1e-6 relative at 100,
 * all of exp's range once {@code |z / T| > 2^31}).
 * The gradient sweeps read no row, so the gradient may be the student itself. Sums are accumulated per lane in fp32 over a block and in fp64 across blocks.
 *
 * <p>Why arrays: in a loop, a Vector API load or store on a {@code MemorySegment} costs several
 * times one on a Java array (the segment's checks stay in the loop); one bulk copy per block
 * and array loops are faster. The last block is padded to whole vectors with {@code -inf} in
 * both rows, classes of probability 0 that add nothing and get a zero gradient, so there are no
 * masked loops. Hot loops hold at most one inlined exponential or logarithm each: a loop with two
 * exceeds C2's inlining budget for vector code, and then every vector is boxed.
 */
final class DivergenceCpu {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    /** Columns per block: the block arrays and the scratch rows' blocks stay in L1. */
    private static final int BLOCK = 1024;
    private static final int ELEMENTS_PER_TASK = 1 << 16;
    private static final double LN2 = Math.log(2);
    private static final FloatVector LN2_F = FloatVector.broadcast(F, (float) LN2);

    private DivergenceCpu() {
    }

    static void run(CpuBackend cpu, DivergenceRows job) {
        int grain = Math.max(1, ELEMENTS_PER_TASK / job.vocab());
        cpu.parallelFor(job.rows(), grain, (from, to) -> {
            RowWork work = new RowWork(job);
            for (int row = from; row < to; row++) {
                job.rowLoss()[row] = work.row(row);
            }
        });
    }

    /** The sweeps of the class doc for one thread, with its scratch, reused row after row. */
    private static final class RowWork {
        private final DivergenceRows job;
        private final Divergence.Kind kind;
        private final float beta;
        private final float invT;
        /** {@code invT2 = log2(e) / T}: the sweeps' exponentials are {@code 2^((z - m) invT2)}. */
        private final ExponentScale exponents;
        private final int vocab;
        /** The vocabulary rounded up to whole vectors. */
        private final int padded;
        private final MemorySegment gradient;
        /** F32, F16 or BF16: the gradient is formed in fp32 and rounded once when stored. */
        private final DType gradientType;

        private final float[] s = new float[BLOCK];
        private final float[] t = new float[BLOCK];
        /** F16/BF16 bits of a block, before decoding. */
        private final short[] bits = new short[BLOCK];
        private final float[] reference;
        private final float[] g = new float[BLOCK];
        private final float[] logMixture;
        private final float[] expS;
        private final float[] expT;
        /**
         * What the gradient needs besides {@code p}, kept by an earlier sweep: reverse KL's
         * {@code d = (z_s - m_b) invT2 - (z_t - o_b) invT2}, JSD's {@code log p - log m}.
         */
        private final float[] difference;
        /** The whole teacher row, made once per row when the Lp-Reg filter needs its max first. */
        private final float[] teacherRow;
        /** Which side's cross term sweep 1 sums: the KL's weighting side. */
        private final boolean crossStudent;
        private final boolean crossTeacher;

        /** The running max of each side's z when block b was exponentiated ({@code m_b}). */
        private final float[] blockMaxS;
        private final float[] blockMaxT;
        /** Per block: {@code sum e}, and the cross term {@code sum e d} of the KLs (d in base 2). */
        private final double[] blockSumS;
        private final double[] blockSumT;
        private final double[] blockCross;
        /** Per block: {@code o_b}, the offset of the other side's logits in the cross term. */
        private final double[] blockOffset;
        /** p = e_s * scaleS[b], q = e_t * scaleT[b] in block b. */
        private final float[] scaleS;
        private final float[] scaleT;

        /** The running max of each side's z. */
        private float runningS;
        private float runningT;
        /** The maxes of the last {@link #stage} with maxes. */
        private float stagedMaxS;
        private float stagedMaxT;
        private double sumS;
        private double sumT;
        /** {@code ln S} of each side ({@code S = sum 2^((z - M) invT2)}), for {@link #shift}. */
        private double lnSumS;
        private double lnSumT;
        private float coef;
        private double first;
        private double second;
        /** sum_v p_v dL/dp_v, which the gradient subtracts. */
        private float pg;

        RowWork(DivergenceRows job) {
            this.job = job;
            this.kind = job.kind();
            this.beta = job.beta();
            this.invT = job.invT();
            this.exponents = ExponentScale.of(invT);
            this.vocab = job.vocab();
            this.padded = (vocab + F.length() - 1) / F.length() * F.length();
            this.gradient = job.gradient() == null ? null : job.gradient().segment();
            this.gradientType = job.gradient() == null ? null : job.gradient().dtype();
            this.reference = job.reference() == null ? null : new float[BLOCK];
            this.logMixture = kind == Divergence.Kind.JSD ? new float[BLOCK] : null;
            this.expS = new float[padded];
            this.expT = new float[padded];
            this.crossStudent = kind == Divergence.Kind.REVERSE_KL;
            this.crossTeacher = kind == Divergence.Kind.FORWARD_KL;
            this.difference = (crossStudent || kind == Divergence.Kind.JSD) && gradient != null ? new float[padded]
                    : null;
            this.teacherRow = job.filter() == null ? null : new float[padded];
            int blocks = (padded + BLOCK - 1) / BLOCK;
            this.blockMaxS = new float[blocks];
            this.blockMaxT = new float[blocks];
            this.blockSumS = new double[blocks];
            this.blockSumT = new double[blocks];
            this.blockCross = new double[blocks];
            this.blockOffset = new double[blocks];
            this.scaleS = new float[blocks];
            this.scaleT = new float[blocks];
        }

        float row(int row) {
            if (job.weights()[row] == 0f) {
                if (gradient != null) {
                    HalfFloats.fill(gradient, gradientType, (long) row * vocab, vocab, 0f);
                }
                return 0f;
            }
            coef = job.gradCoef() == null ? 0f : job.gradCoef()[row];
            if (teacherRow != null && !filterTeacher(row)) {
                return noDistribution(row);
            }
            if (!firstSweep(row) || !finishSoftmaxes()) {
                return noDistribution(row); // NaN, +inf, or all -inf on one side
            }
            if (kind == Divergence.Kind.JSD || kind == Divergence.Kind.TOTAL_VARIATION) {
                for (int start = 0, b = 0; start < padded; start += BLOCK, b++) {
                    int len = Math.min(BLOCK, padded - start);
                    if (kind == Divergence.Kind.JSD) {
                        stage(row, start, len, false);
                        mixtureLogs(b, start, len);
                        jsdSums(b, start, len);
                    } else {
                        tvdSums(b, start, len);
                    }
                }
            }
            if (gradient != null) {
                pg = (float) switch (kind) {
                    case REVERSE_KL -> first;
                    case JSD -> (1 - beta) * second;
                    default -> second;
                };
                for (int start = 0, b = 0; start < padded; start += BLOCK, b++) {
                    int len = Math.min(BLOCK, padded - start);
                    switch (kind) {
                        case FORWARD_KL -> forwardKlGradient(b, start, len);
                        case REVERSE_KL -> reverseKlGradient(b, start, len);
                        case JSD -> jsdGradient(b, start, len);
                        case TOTAL_VARIATION -> tvdGradient(b, start, len);
                    }
                    HalfFloats.store(g, Math.min(len, vocab - start), gradientType, bits, gradient,
                            ((long) row * vocab + start) * gradientType.byteSize());
                }
            }
            double divergence = switch (kind) {
                case FORWARD_KL, REVERSE_KL -> first;
                case JSD -> beta * first + (1 - beta) * second;
                case TOTAL_VARIATION -> 0.5 * first;
            };
            // rounding below the lower bound 0; NaN, +inf and a -inf (a bug, not rounding) stay
            return divergence < 0 && divergence > Double.NEGATIVE_INFINITY ? 0f : (float) divergence;
        }

        private float noDistribution(int row) {
            if (gradient != null) {
                HalfFloats.fill(gradient, gradientType, (long) row * vocab, vocab, Float.NaN);
            }
            return Float.NaN;
        }

        // ---- staging: a block of both rows as fp32 in s and t ----

        /**
         * Columns {@code [start, start + len)} of both rows into {@code s} and {@code t}, {@code -inf}
         * past the row; with {@code maxes}, the max of each into {@link #stagedMaxS} and {@link #stagedMaxT}.
         */
        private void stage(int row, int start, int len, boolean maxes) {
            stagedMaxS = stageRow(job.student(), (long) row * vocab, start, len, s, maxes);
            if (teacherRow != null) {
                System.arraycopy(teacherRow, start, t, 0, len);
                stagedMaxT = maxes ? VectorMath.max(t, len) : 0f;
            } else {
                stagedMaxT = stageTeacher(row, start, len, t, maxes);
            }
        }

        /** The teacher's block, extrapolated from the reference when there is one; its max if asked (else 0). */
        private float stageTeacher(int row, int start, int len, float[] out, boolean max) {
            long rowStart = (long) row * job.teacherStride();
            float teacherMax = stageRow(job.teacher(), rowStart, start, len, out, max && reference == null);
            if (reference == null) {
                return teacherMax;
            }
            stageRow(job.reference(), rowStart, start, len, reference, false);
            float extrapolatedMax = extrapolate(out, reference, len, job.alpha()[row]);
            return max ? extrapolatedMax : 0f;
        }

        /** One row's block as fp32 into {@code out}; its max if asked (else 0), which F16/BF16 take while decoding. */
        private float stageRow(Tensor tensor, long rowStart, int start, int len, float[] out, boolean max) {
            int count = Math.min(len, vocab - start);
            long element = rowStart + start;
            DType dtype = tensor.dtype();
            float rowMax = 0f;
            if (dtype == DType.F32) {
                MemorySegment.copy(tensor.segment(), ValueLayout.JAVA_FLOAT, 4L * element, out, 0, count);
            } else if (max) {
                rowMax = HalfFloats.decodeMax(tensor.segment(), element * dtype.byteSize(), dtype, bits, out, count);
            } else {
                HalfFloats.decode(tensor.segment(), element * dtype.byteSize(), dtype, bits, out, count);
            }
            Arrays.fill(out, count, len, Float.NEGATIVE_INFINITY);
            return dtype == DType.F32 && max ? VectorMath.max(out, len) : rowMax;
        }

        /**
         * Makes the Lp-Reg proxy of the teacher row in {@link #teacherRow}: the classes the proxy
         * drops read as {@code -inf} from here on. False if the teacher row has no distribution.
         */
        private boolean filterTeacher(int row) {
            for (int start = 0; start < padded; start += BLOCK) {
                int len = Math.min(BLOCK, padded - start);
                stageTeacher(row, start, len, t, false);
                System.arraycopy(t, 0, teacherRow, start, len);
            }
            float max = VectorMath.max(teacherRow, padded) * invT;
            if (!Float.isFinite(max)) {
                return false; // NaN, +inf, or all -inf
            }
            float ref = max;
            if (job.filter() == ProxyDistribution.Mode.FIXED) {
                // ProxyDistribution's own log-sum-exp (x rounded as a product, no fma), so both ops
                // keep exactly the same classes.
                ref = ProxyDistributionCpu.fixedReference(MemorySegment.ofArray(teacherRow), 0, vocab, invT, max);
            }
            keepProxyClasses(teacherRow, padded, invT, max, ref, job.filterLogThreshold());
            return true;
        }

        // ---- sweep 1: maxes, exponentials, cross terms ----

        /** Sweep 1 over the row's blocks. False on a NaN or {@code +inf} logit (the row has no distribution). */
        private boolean firstSweep(int row) {
            runningS = Float.NEGATIVE_INFINITY;
            runningT = Float.NEGATIVE_INFINITY;
            sumS = 0;
            sumT = 0;
            first = 0;
            second = 0;
            for (int start = 0, b = 0; start < padded; start += BLOCK, b++) {
                int len = Math.min(BLOCK, padded - start);
                stage(row, start, len, true);
                float zMaxS = stagedMaxS;
                float zMaxT = stagedMaxT;
                // NaN compares false: this also catches a NaN max
                if (!(zMaxS * invT < Float.POSITIVE_INFINITY && zMaxT * invT < Float.POSITIVE_INFINITY)) {
                    return false;
                }
                if (zMaxS > runningS) {
                    sumS *= Math.pow(2, ((double) runningS - zMaxS) * exponents.invT2()); // 0 while running is -inf
                    runningS = zMaxS;
                }
                if (zMaxT > runningT) {
                    sumT *= Math.pow(2, ((double) runningT - zMaxT) * exponents.invT2());
                    runningT = zMaxT;
                }
                blockMaxS[b] = runningS;
                blockMaxT[b] = runningT;
                // The cross term's other side is taken relative to its running max (0 while that is
                // -inf: then its logits so far are all -inf and d is +inf or NaN-masked anyway).
                float offsetS = runningS == Float.NEGATIVE_INFINITY ? 0f : runningS;
                float offsetT = runningT == Float.NEGATIVE_INFINITY ? 0f : runningT;
                blockOffset[b] = crossStudent ? offsetT : offsetS;
                blockCross[b] = 0;
                blockSumS[b] = 0;
                blockSumT[b] = 0;
                if (runningS != Float.NEGATIVE_INFINITY) { // else every weight so far is 0
                    blockSumS[b] = exponentials(s, t, len, exponents, runningS, offsetT, expS, start, crossStudent,
                            blockCross, b, difference);
                } else {
                    Arrays.fill(expS, start, start + len, 0f);
                }
                if (runningT != Float.NEGATIVE_INFINITY) {
                    blockSumT[b] = exponentials(t, s, len, exponents, runningT, offsetS, expT, start, crossTeacher,
                            blockCross, b, null);
                } else {
                    Arrays.fill(expT, start, start + len, 0f);
                }
                sumS += blockSumS[b];
                sumT += blockSumT[b];
            }
            return true;
        }

        /**
         * The log-sum-exps and block scales, and the KLs' loss from the cross terms; false if a
         * side has no class of positive probability.
         */
        private boolean finishSoftmaxes() {
            if (runningS == Float.NEGATIVE_INFINITY || runningT == Float.NEGATIVE_INFINITY) {
                return false;
            }
            lnSumS = Math.log(sumS);
            lnSumT = Math.log(sumT);
            double cross = 0;
            for (int b = 0; b < scaleS.length; b++) {
                // p = e 2^((m_b - M) invT2) / S; the running max rarely changes from block to block: one power per change.
                scaleS[b] = b > 0 && blockMaxS[b] == blockMaxS[b - 1] ? scaleS[b - 1]
                        : (float) (Math.pow(2, ((double) blockMaxS[b] - runningS) * exponents.invT2()) / sumS);
                scaleT[b] = b > 0 && blockMaxT[b] == blockMaxT[b - 1] ? scaleT[b - 1]
                        : (float) (Math.pow(2, ((double) blockMaxT[b] - runningT) * exponents.invT2()) / sumT);
                // As the other sweeps see it: q = e * (float scale); a block whose scale is 0 adds 0, not 0 * inf.
                double weight = crossStudent ? scaleS[b] : scaleT[b];
                double mass = crossStudent ? blockSumS[b] : blockSumT[b];
                if ((crossStudent || crossTeacher) && weight != 0 && mass != 0) {
                    // log q - log p = ln2 d + bracket for forward KL, alike for reverse
                    cross += weight * (LN2 * blockCross[b] + bracket(b) * mass);
                }
            }
            first = cross;
            return true;
        }

        /**
         * {@code shift(m_b) - shift_other(o_b)} of the cross side, in fp64 (close to 0 where the rows
         * agree), {@code shift(m) = ln2 (m - M) invT2 - ln S} being {@code log p - ln2 d2} for
         * {@code d2 = (z - m) invT2}.
         */
        private double bracket(int b) {
            return crossStudent ? shift(blockMaxS[b], runningS, lnSumS) - shift(blockOffset[b], runningT, lnSumT)
                    : shift(blockMaxT[b], runningT, lnSumT) - shift(blockOffset[b], runningS, lnSumS);
        }

        /** {@code ln2 (m - max) invT2 - lnSum}: {@code log p - ln2 (z - m) invT2} of a side with that max and sum. */
        private double shift(double m, float max, double lnSum) {
            return LN2 * ((m - max) * exponents.invT2()) - lnSum;
        }

        // ---- forward KL: sum q (log q - log p) from sweep 1; gradient (p - q) coef ----

        private void forwardKlGradient(int b, int start, int len) {
            float[] es = expS;
            float[] et = expT;
            float[] out = g;
            FloatVector sS = FloatVector.broadcast(F, scaleS[b]);
            FloatVector sT = FloatVector.broadcast(F, scaleT[b]);
            FloatVector c = FloatVector.broadcast(F, coef);
            for (int i = 0; i < len; i += F.length()) {
                FloatVector p = FloatVector.fromArray(F, es, start + i).mul(sS);
                FloatVector q = FloatVector.fromArray(F, et, start + i).mul(sT);
                p.sub(q).mul(c).intoArray(out, i);
            }
        }

        // ---- reverse KL: sum p (log p - log q) from sweep 1; gradient p (f - KL) coef, f = log p - log q ----

        private void reverseKlGradient(int b, int start, int len) {
            float[] es = expS;
            float[] d = difference;
            float[] out = g;
            FloatVector sS = FloatVector.broadcast(F, scaleS[b]);
            // f - KL = ln2 d + bracket - KL
            FloatVector shift = FloatVector.broadcast(F, (float) (bracket(b) - first));
            FloatVector c = FloatVector.broadcast(F, coef);
            for (int i = 0; i < len; i += F.length()) {
                FloatVector p = FloatVector.fromArray(F, es, start + i).mul(sS);
                FloatVector f = FloatVector.fromArray(F, d, start + i).fma(LN2_F, shift);
                times(p, f).mul(c).intoArray(out, i);
            }
        }

        // ---- JSD: beta KL(q||m) + (1-beta) KL(p||m); d/dp = (1-beta) log(p/m) ----

        /**
         * {@code log(beta q + (1 - beta) p)} of the staged block into {@link #logMixture} (a loop
         * of its own: the inlined log is as large as an exponential). Where the mixture underflows
         * to 0 although one side is not 0 (tiny beta or 1 - beta), the larger of
         * {@code log beta + log q} and {@code log(1 - beta) + log p} stands in for it.
         */
        private void mixtureLogs(int b, int start, int len) {
            float[] zs = s;
            float[] zt = t;
            float[] es = expS;
            float[] et = expT;
            float[] out = logMixture;
            FloatVector sS = FloatVector.broadcast(F, scaleS[b]);
            FloatVector sT = FloatVector.broadcast(F, scaleT[b]);
            FloatVector a = FloatVector.broadcast(F, exponents.loopScale() * (float) LN2);
            float maxS = offset(blockMaxS[b]);
            float maxT = offset(blockMaxT[b]);
            float shiftS = (float) shift(maxS, runningS, lnSumS);
            float shiftT = (float) shift(maxT, runningT, lnSumT);
            FloatVector betaV = FloatVector.broadcast(F, beta);
            FloatVector oneMinusBeta = FloatVector.broadcast(F, 1f - beta);
            FloatVector logBeta = FloatVector.broadcast(F, (float) Math.log(beta));
            FloatVector logOneMinusBeta = FloatVector.broadcast(F, (float) Math.log1p(-beta));
            for (int i = 0; i < len; i += F.length()) {
                FloatVector p = FloatVector.fromArray(F, es, start + i).mul(sS);
                FloatVector q = FloatVector.fromArray(F, et, start + i).mul(sT);
                FloatVector m = q.fma(betaV, p.mul(oneMinusBeta));
                FloatVector ls = logProb(zs, i, a, maxS, shiftS);
                FloatVector lt = logProb(zt, i, a, maxT, shiftT);
                FloatVector dominant = lt.add(logBeta).max(ls.add(logOneMinusBeta));
                VectorMath.log(m).blend(dominant, m.eq(0f)).intoArray(out, i);
            }
        }

        private void jsdSums(int b, int start, int len) {
            float[] zs = s;
            float[] zt = t;
            float[] es = expS;
            float[] et = expT;
            float[] logM = logMixture;
            float[] kept = difference;
            FloatVector sS = FloatVector.broadcast(F, scaleS[b]);
            FloatVector sT = FloatVector.broadcast(F, scaleT[b]);
            FloatVector a = FloatVector.broadcast(F, exponents.loopScale() * (float) LN2);
            float maxS = offset(blockMaxS[b]);
            float maxT = offset(blockMaxT[b]);
            float shiftS = (float) shift(maxS, runningS, lnSumS);
            float shiftT = (float) shift(maxT, runningT, lnSumT);
            FloatVector teacherTerms = FloatVector.zero(F);
            FloatVector studentTerms = FloatVector.zero(F);
            for (int i = 0; i < len; i += F.length()) {
                FloatVector ls = logProb(zs, i, a, maxS, shiftS);
                FloatVector lt = logProb(zt, i, a, maxT, shiftT);
                FloatVector p = FloatVector.fromArray(F, es, start + i).mul(sS);
                FloatVector q = FloatVector.fromArray(F, et, start + i).mul(sT);
                FloatVector m = FloatVector.fromArray(F, logM, i);
                FloatVector studentLog = ls.sub(m);
                teacherTerms = teacherTerms.add(times(q, lt.sub(m)));
                studentTerms = studentTerms.add(times(p, studentLog));
                if (kept != null) { // for the gradient, which then needs neither the block nor the log again
                    studentLog.intoArray(kept, start + i);
                }
            }
            first += VectorMath.sumLanes(teacherTerms);
            second += VectorMath.sumLanes(studentTerms);
        }

        /** A running max of z as the offset {@link #logProb} subtracts: 0 while it is {@code -inf}. */
        private static float offset(float runningMax) {
            return runningMax == Float.NEGATIVE_INFINITY ? 0f : runningMax;
        }

        /**
         * {@code log p} of the lanes at {@code i} of a staged block: {@code (z - m) ln2 invT2 + shift},
         * {@code m} the block's running max (or 0), {@code shift} its {@link #shift}: the difference
         * first, exact near the max, and {@code (m - M) invT2 - ln S} from fp64 (a rounded
         * {@code x - lse} in fp32 keeps only an ulp of {@code |x|} of it: log 2 lost at {@code |x| = 1e10}).
         */
        private FloatVector logProb(float[] z, int i, FloatVector a, float offset, float shift) {
            return exponents.exponent(FloatVector.fromArray(F, z, i), FloatVector.broadcast(F, exponents.offset(offset)), a)
                    .add(shift);
        }

        private void jsdGradient(int b, int start, int len) {
            float[] es = expS;
            float[] studentLog = difference;
            float[] out = g;
            FloatVector sS = FloatVector.broadcast(F, scaleS[b]);
            FloatVector oneMinusBeta = FloatVector.broadcast(F, 1f - beta);
            FloatVector c = FloatVector.broadcast(F, coef);
            FloatVector minusPg = FloatVector.broadcast(F, -pg);
            for (int i = 0; i < len; i += F.length()) {
                FloatVector p = FloatVector.fromArray(F, es, start + i).mul(sS);
                FloatVector f = FloatVector.fromArray(F, studentLog, start + i);
                times(p, f.fma(oneMinusBeta, minusPg)).mul(c).intoArray(out, i);
            }
        }

        // ---- total variation: 0.5 sum |p - q|; d/dp = 0.5 sign(p - q) ----

        /** {@code sum |p - q|} into {@link #first}; with a gradient also {@code sum p sign(p - q) / 2} into {@link #second}. */
        private void tvdSums(int b, int start, int len) {
            float[] es = expS;
            float[] et = expT;
            FloatVector sS = FloatVector.broadcast(F, scaleS[b]);
            FloatVector sT = FloatVector.broadcast(F, scaleT[b]);
            FloatVector distance = FloatVector.zero(F);
            if (gradient == null) { // the loss alone (AlignDistil's TVD): half the loop
                for (int i = 0; i < len; i += F.length()) {
                    FloatVector p = FloatVector.fromArray(F, es, start + i).mul(sS);
                    distance = distance.add(p.sub(FloatVector.fromArray(F, et, start + i).mul(sT)).abs());
                }
                first += VectorMath.sumLanes(distance);
                return;
            }
            FloatVector pgSum = FloatVector.zero(F);
            for (int i = 0; i < len; i += F.length()) {
                FloatVector p = FloatVector.fromArray(F, es, start + i).mul(sS);
                FloatVector d = p.sub(FloatVector.fromArray(F, et, start + i).mul(sT));
                distance = distance.add(d.abs());
                pgSum = pgSum.add(p.mul(halfSign(d)));
            }
            first += VectorMath.sumLanes(distance);
            second += VectorMath.sumLanes(pgSum);
        }

        private void tvdGradient(int b, int start, int len) {
            float[] es = expS;
            float[] et = expT;
            float[] out = g;
            FloatVector sS = FloatVector.broadcast(F, scaleS[b]);
            FloatVector sT = FloatVector.broadcast(F, scaleT[b]);
            FloatVector c = FloatVector.broadcast(F, coef);
            FloatVector pgV = FloatVector.broadcast(F, pg);
            for (int i = 0; i < len; i += F.length()) {
                FloatVector p = FloatVector.fromArray(F, es, start + i).mul(sS);
                FloatVector d = p.sub(FloatVector.fromArray(F, et, start + i).mul(sT));
                p.mul(halfSign(d).sub(pgV)).mul(c).intoArray(out, i);
            }
        }
    }

    // ---- loops over fp32 arrays ----

    /**
     * Fills {@code e[start + i] = 2^x}, {@code x = (z - max) invT2} ({@code invT2 = log2(e) / T}),
     * and returns its sum; with {@code cross}, sets {@code crossSums[b]} to {@code sum e d},
     * {@code d = x - (z_other - otherMax) invT2} (0 where {@code e} is 0, so that a class
     * impossible on both sides adds nothing; {@code +inf} where only the other side is impossible);
     * with {@code difference}, keeps {@code d} there.
     */
    private static double exponentials(float[] z, float[] other, int len, ExponentScale exponents, float max,
                                       float otherMax, float[] e, int start, boolean cross, double[] crossSums, int b,
                                       float[] difference) {
        FloatVector a = FloatVector.broadcast(F, exponents.loopScale());
        FloatVector minusMax = FloatVector.broadcast(F, exponents.offset(max));
        FloatVector minusOtherMax = FloatVector.broadcast(F, exponents.offset(otherMax));
        FloatVector sum = FloatVector.zero(F);
        FloatVector crossSum = FloatVector.zero(F);
        for (int i = 0; i < len; i += F.length()) {
            FloatVector x = exponents.exponent(FloatVector.fromArray(F, z, i), minusMax, a);
            FloatVector v = VectorMath.exp2NonPositive(x);
            v.intoArray(e, start + i);
            sum = sum.add(v);
            if (cross) {
                FloatVector d = x.sub(exponents.exponent(FloatVector.fromArray(F, other, i), minusOtherMax, a));
                crossSum = crossSum.add(times(v, d));
                if (difference != null) {
                    d.intoArray(difference, start + i);
                }
            }
        }
        if (cross) {
            crossSums[b] = VectorMath.sumLanes(crossSum);
        }
        return VectorMath.sumLanes(sum);
    }

    /**
     * {@code z} where the proxy keeps the class ({@code x - ref >= cut} or {@code x >= max},
     * {@code x = z * invT}: {@link ProxyDistribution}'s rule), else {@code -inf}; in place.
     */
    private static void keepProxyClasses(float[] z, int len, float invT, float max, float ref, float cut) {
        FloatVector a = FloatVector.broadcast(F, invT);
        FloatVector minusMax = FloatVector.broadcast(F, -max);
        FloatVector minusRef = FloatVector.broadcast(F, -ref);
        for (int i = 0; i < len; i += F.length()) {
            FloatVector v = FloatVector.fromArray(F, z, i);
            FloatVector x = v.mul(a);
            var keep = x.add(minusRef).compare(VectorOperators.GE, cut).or(x.add(minusMax).compare(VectorOperators.GE, 0f));
            v.blend(Float.NEGATIVE_INFINITY, keep.not()).intoArray(z, i);
        }
    }

    /**
     * {@code z = fma(alpha, z - ref, z)} over a block, in place: AlignDistil's extrapolated teacher
     * logits. A class masked in the teacher or the reference ({@code -inf}) is masked:
     * extrapolating from or towards an impossible class has no finite meaning (and
     * {@code alpha = 0} would give NaN). Returns the block's new max ({@link VectorMath#max}'s),
     * taken in the same loop (AlignDistil with its rows in cache: 0.82-0.91 of the time with a second
     * pass; from DRAM no difference).
     */
    private static float extrapolate(float[] z, float[] ref, int len, float alpha) {
        FloatVector a = FloatVector.broadcast(F, alpha);
        IntVector highest = IntVector.broadcast(IntVector.SPECIES_PREFERRED, Integer.MIN_VALUE);
        IntVector lowest = IntVector.broadcast(IntVector.SPECIES_PREFERRED, Integer.MAX_VALUE);
        for (int i = 0; i < len; i += F.length()) {
            FloatVector t = FloatVector.fromArray(F, z, i);
            FloatVector r = FloatVector.fromArray(F, ref, i);
            VectorMask<Float> masked = t.eq(Float.NEGATIVE_INFINITY).or(r.eq(Float.NEGATIVE_INFINITY));
            FloatVector x = t.sub(r).fma(a, t).blend(Float.NEGATIVE_INFINITY, masked);
            x.intoArray(z, i);
            IntVector key = VectorMath.orderKey(x.reinterpretAsInts());
            highest = highest.max(key);
            lowest = lowest.min(key);
        }
        return VectorMath.maxOfKeys(highest, lowest);
    }

    /** {@code probability * value}, 0 where the probability is 0 (so that 0 log 0 = 0). */
    private static FloatVector times(FloatVector probability, FloatVector value) {
        return probability.mul(value).blend(0f, probability.eq(0f));
    }

    /** 0.5, -0.5 or 0 by the sign of {@code d}. */
    private static FloatVector halfSign(FloatVector d) {
        return FloatVector.zero(F).blend(0.5f, d.compare(VectorOperators.GT, 0f)).blend(-0.5f, d.lt(0f));
    }
}
