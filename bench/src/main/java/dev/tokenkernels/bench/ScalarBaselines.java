package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * The plain scalar Java loops that a JVM user would write without this library; the report and
 * the JMH benchmarks give each op's speedup over them. Same inputs, same outputs, one thread.
 */
public final class ScalarBaselines {
    private ScalarBaselines() {
    }

    /** Max, log-sum-exp and entropy of each row of {@code z [rows, vocab] / T}, two passes per row. */
    public static void logitStats(MemorySegment z, DType dtype, int rows, int vocab, float temperature,
                                  float[] max, float[] lse, float[] entropy) {
        for (int r = 0; r < rows; r++) {
            long base = (long) r * vocab;
            float m = Float.NEGATIVE_INFINITY;
            for (int j = 0; j < vocab; j++) {
                m = Math.max(m, load(z, dtype, base + j) / temperature);
            }
            float sum = 0;
            float weighted = 0;
            for (int j = 0; j < vocab; j++) {
                float d = load(z, dtype, base + j) / temperature - m;
                float e = (float) Math.exp(d);
                sum += e;
                weighted += e * d;
            }
            float logSum = (float) Math.log(sum);
            max[r] = m;
            lse[r] = m + logSum;
            entropy[r] = logSum - weighted / sum;
        }
    }

    /**
     * Forward KL {@code KL(softmax(t / T) || softmax(s / T))} of each row and its gradient
     * {@code (p - q) / T} into {@code gradient}: log-sum-exp of both rows, then one sweep.
     */
    public static void forwardKl(MemorySegment s, MemorySegment t, DType dtype, int rows, int vocab, float temperature,
                                 MemorySegment gradient, float[] loss) {
        for (int r = 0; r < rows; r++) {
            long base = (long) r * vocab;
            float lseS = logSumExp(s, dtype, base, vocab, temperature);
            float lseT = logSumExp(t, dtype, base, vocab, temperature);
            float kl = 0;
            for (int j = 0; j < vocab; j++) {
                float ls = load(s, dtype, base + j) / temperature - lseS;
                float lt = load(t, dtype, base + j) / temperature - lseT;
                float p = (float) Math.exp(ls);
                float q = (float) Math.exp(lt);
                if (q > 0) {
                    kl += q * (lt - ls);
                }
                gradient.setAtIndex(ValueLayout.JAVA_FLOAT, base + j, (p - q) / temperature);
            }
            loss[r] = kl;
        }
    }

    /**
     * Lp-Reg's min-p proxy at temperature 1: keep {@code p_v >= kappa max p}, renormalize, and the
     * proxy log-probability of each row's target (-inf if filtered out).
     */
    public static void minPProxy(MemorySegment z, DType dtype, int rows, int vocab, float kappa, long[] targets,
                                 float[] logProb) {
        float cut = (float) Math.log(kappa);
        for (int r = 0; r < rows; r++) {
            long base = (long) r * vocab;
            float m = Float.NEGATIVE_INFINITY;
            for (int j = 0; j < vocab; j++) {
                m = Math.max(m, load(z, dtype, base + j));
            }
            float sum = 0;
            for (int j = 0; j < vocab; j++) {
                float d = load(z, dtype, base + j) - m;
                if (d >= cut) {
                    sum += (float) Math.exp(d);
                }
            }
            float x = load(z, dtype, base + targets[r]);
            logProb[r] = x - m >= cut ? x - m - (float) Math.log(sum) : Float.NEGATIVE_INFINITY;
        }
    }

    /**
     * {@code log softmax(z / T)[y]} of each row and its gradient scaled by {@code c}:
     * {@code (c / T)(onehot(y) - softmax(z / T))} into {@code grad}.
     */
    public static void targetLogProb(MemorySegment z, DType dtype, int rows, int vocab, float temperature,
                                     long[] targets, float[] coefficients, MemorySegment grad, float[] logProb) {
        for (int r = 0; r < rows; r++) {
            long base = (long) r * vocab;
            float lse = logSumExp(z, dtype, base, vocab, temperature);
            float c = coefficients[r] / temperature;
            for (int j = 0; j < vocab; j++) {
                float p = (float) Math.exp(load(z, dtype, base + j) / temperature - lse);
                grad.setAtIndex(ValueLayout.JAVA_FLOAT, base + j, (j == targets[r] ? c : 0f) - c * p);
            }
            logProb[r] = load(z, dtype, base + targets[r]) / temperature - lse;
        }
    }

    /**
     * PPO's clipped loss (token mean, temperature 1) of each row and its gradient into {@code grad}:
     * {@code logp}, the ratio and the clipped branch's slope per token, then {@code slope (onehot - p) / N}.
     */
    public static float clippedPolicyLoss(MemorySegment z, DType dtype, int rows, int vocab, long[] targets,
                                          float[] oldLogProb, float[] advantages, float epsLow, float epsHigh,
                                          MemorySegment grad) {
        double loss = 0;
        for (int r = 0; r < rows; r++) {
            long base = (long) r * vocab;
            float lse = logSumExp(z, dtype, base, vocab, 1f);
            float logp = load(z, dtype, base + targets[r]) - lse;
            float ratio = (float) Math.exp(Math.max(-20f, Math.min(20f, logp - oldLogProb[r])));
            float a = advantages[r];
            float clipped = Math.max(1 - epsLow, Math.min(1 + epsHigh, ratio));
            boolean unclipped = ratio * a <= clipped * a || clipped == ratio;
            loss -= Math.min(ratio * a, clipped * a) / rows;
            float c = unclipped ? -a * ratio / rows : 0f;
            for (int j = 0; j < vocab; j++) {
                float p = (float) Math.exp(load(z, dtype, base + j) - lse);
                grad.setAtIndex(ValueLayout.JAVA_FLOAT, base + j, (j == targets[r] ? c : 0f) - c * p);
            }
        }
        return (float) loss;
    }

    /**
     * cDPO's contrastive target probability of each row, {@code softmax((1 + lambda) zp - lambda zn)[y]},
     * two passes per row over both logits tensors (the plain loop recomputes the combination).
     */
    public static void contrastiveTargetProb(MemorySegment zp, MemorySegment zn, DType dtype, int rows, int vocab,
                                             float lambda, long[] targets, float[] prob) {
        for (int r = 0; r < rows; r++) {
            long base = (long) r * vocab;
            float m = Float.NEGATIVE_INFINITY;
            for (int j = 0; j < vocab; j++) {
                m = Math.max(m, (1 + lambda) * load(zp, dtype, base + j) - lambda * load(zn, dtype, base + j));
            }
            float sum = 0;
            for (int j = 0; j < vocab; j++) {
                sum += (float) Math.exp((1 + lambda) * load(zp, dtype, base + j) - lambda * load(zn, dtype, base + j) - m);
            }
            long y = base + targets[r];
            float x = (1 + lambda) * load(zp, dtype, y) - lambda * load(zn, dtype, y);
            prob[r] = (float) Math.exp(x - m) / sum;
        }
    }

    /**
     * The top {@code k} masked scores as a 0/1 mask, ties to the lower index: the masked (score,
     * index) pairs packed into longs in (value, index) order, sorted, the k-th read, a marking pass.
     */
    public static void topKBySort(MemorySegment scores, MemorySegment mask, int n, long k, MemorySegment out) {
        long[] packed = new long[n];
        int m = 0;
        for (int i = 0; i < n; i++) {
            if (mask.get(ValueLayout.JAVA_BYTE, i) != 0) {
                int bits = Float.floatToRawIntBits(scores.getAtIndex(ValueLayout.JAVA_FLOAT, i));
                int descending = ~(bits ^ ((bits >> 31) & 0x7fffffff)) ^ Integer.MIN_VALUE; // largest first, unsigned
                packed[m++] = ((long) descending << 32 ^ Long.MIN_VALUE) | i; // signed long order = (key, index)
            }
        }
        java.util.Arrays.sort(packed, 0, m);
        out.fill((byte) 0);
        for (int j = 0; j < Math.min(k, m); j++) {
            out.set(ValueLayout.JAVA_BYTE, (int) packed[j], (byte) 1);
        }
    }

    /**
     * One-token rollout (temperature 1, token mean) as a plain loop would do it: per row the
     * log-sum-exp, {@code k} draws by inverse CDF with {@link java.util.SplittableRandom} (a linear
     * scan each), the rewards (1 for the target, {@code -beta} otherwise), then the gradient
     * {@code (1 / (k N)) ((sum r) p - sum of the rewards at the draws)} into {@code grad}.
     */
    public static float oneTokenRollout(MemorySegment z, DType dtype, int rows, int vocab, long[] targets, int k,
                                        float beta, long seed, MemorySegment grad) {
        java.util.SplittableRandom random = new java.util.SplittableRandom(seed);
        int[] draws = new int[k];
        double loss = 0;
        for (int r = 0; r < rows; r++) {
            long base = (long) r * vocab;
            float lse = logSumExp(z, dtype, base, vocab, 1f);
            float rewardSum = 0;
            for (int s = 0; s < k; s++) {
                double u = random.nextDouble();
                double cumulative = 0;
                int a = vocab - 1;
                for (int j = 0; j < vocab; j++) {
                    cumulative += Math.exp(load(z, dtype, base + j) - lse);
                    if (u < cumulative) {
                        a = j;
                        break;
                    }
                }
                draws[s] = a;
                float reward = a == targets[r] ? 1f : -beta;
                rewardSum += reward;
                loss -= reward * (load(z, dtype, base + a) - lse) / ((double) k * rows);
            }
            float c = 1f / ((float) k * rows);
            for (int j = 0; j < vocab; j++) {
                float p = (float) Math.exp(load(z, dtype, base + j) - lse);
                grad.setAtIndex(ValueLayout.JAVA_FLOAT, base + j, c * rewardSum * p);
            }
            for (int s = 0; s < k; s++) {
                long at = base + draws[s];
                float reward = draws[s] == targets[r] ? 1f : -beta;
                grad.setAtIndex(ValueLayout.JAVA_FLOAT, at, grad.getAtIndex(ValueLayout.JAVA_FLOAT, at) - c * reward);
            }
        }
        return (float) loss;
    }

    private static float logSumExp(MemorySegment z, DType dtype, long base, int vocab, float temperature) {
        float m = Float.NEGATIVE_INFINITY;
        for (int j = 0; j < vocab; j++) {
            m = Math.max(m, load(z, dtype, base + j) / temperature);
        }
        float sum = 0;
        for (int j = 0; j < vocab; j++) {
            sum += (float) Math.exp(load(z, dtype, base + j) / temperature - m);
        }
        return m + (float) Math.log(sum);
    }

    private static float load(MemorySegment z, DType dtype, long index) {
        return switch (dtype) {
            case F32 -> z.getAtIndex(ValueLayout.JAVA_FLOAT, index);
            case BF16 -> DType.bf16ToFloat(z.getAtIndex(ValueLayout.JAVA_SHORT, index));
            case F16 -> Float.float16ToFloat(z.getAtIndex(ValueLayout.JAVA_SHORT, index));
            default -> throw new IllegalArgumentException("dtype: expected F32, F16 or BF16, got " + dtype);
        };
    }
}
