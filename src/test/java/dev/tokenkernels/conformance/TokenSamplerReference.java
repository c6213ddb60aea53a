package dev.tokenkernels.conformance;

import dev.tokenkernels.ops.cpu.Philox;

/**
 * A plain scalar exponential-race sampler written from TokenSampler's javadoc: scalar Philox,
 * scalar copies of VectorMath.log's and VectorMath.expNonPositive's operations (Math.fma is the
 * same exactly rounded fma) and a plain argmin over every entry (no skip rule). It shares no code
 * with the op's vector path, so agreeing with it bit for bit checks the lanes, the masks, the skip
 * rule and the reductions as well as the cross-backend identity.
 */
final class TokenSamplerReference {
    private TokenSamplerReference() {
    }

    /** VectorMath.log, one lane at a time, for {@code x >= 0}. */
    static float log(float x) {
        boolean subnormal = x < Float.MIN_NORMAL;
        float scaled = subnormal ? x * 8388608f : x;
        int bits = Float.floatToRawIntBits(scaled);
        int exponent = (bits >>> 23) - 127;
        float m = Float.intBitsToFloat((bits & 0x007fffff) | 0x3f800000);
        boolean high = m >= 1.41421356f;
        if (high) {
            m *= 0.5f;
        }
        float e = exponent;
        if (high) {
            e += 1f;
        }
        if (subnormal) {
            e -= 23f;
        }
        float s = (m - 1f) / (m + 1f);
        float s2 = s * s;
        float series = Math.fma(s2, 2f / 9, 2f / 7);
        series = Math.fma(series, s2, 2f / 5);
        series = Math.fma(series, s2, 2f / 3);
        series = Math.fma(series, s2, 2f);
        series *= s;
        float result = Math.fma(e, 0.69314718055994531f, series);
        if (x == 0f) {
            return Float.NEGATIVE_INFINITY;
        }
        return x == Float.POSITIVE_INFINITY || Float.isNaN(x) ? x : result;
    }

    /** VectorMath.expNonPositive, one lane at a time, for {@code x <= 0}. */
    static float expNonPositive(float x) {
        float round = 12582912f;
        float shifted = Math.fma(x, 1.44269504088896341f, round);
        float n = shifted - round;
        float r = Math.fma(n, -0.693359375f, x);
        r = Math.fma(n, 2.12194440e-4f, r);
        float p = Math.fma(r, 0x1.687c24p-10f, 0x1.123b94p-7f);
        p = Math.fma(p, r, 0x1.555b58p-5f);
        p = Math.fma(p, r, 0x1.55548ep-3f);
        p = Math.fma(p, r, 0x1.fffff8p-2f);
        p = Math.fma(p, r, 1f);
        p = Math.fma(p, r, 1f);
        float scaled = Float.intBitsToFloat(Float.floatToRawIntBits(p) + (Float.floatToRawIntBits(shifted) << 23));
        return x < -86f ? 0f : scaled;
    }

    /** The {@code k} samples of one row of fp32 logits {@code z} (special rows give -1). */
    static int[] sample(float[] z, int offset, int vocab, float temperature, int k, long seed, long position) {
        float invT = 1f / temperature;
        float[] x = new float[vocab];
        boolean special = true;
        for (int v = 0; v < vocab; v++) {
            x[v] = z[offset + v] * invT;
            if (Float.isNaN(x[v]) || x[v] == Float.POSITIVE_INFINITY) {
                special = true;
                break;
            }
            special &= x[v] == Float.NEGATIVE_INFINITY;
        }
        float max = Float.NEGATIVE_INFINITY;
        for (float xv : x) {
            max = Math.max(max, xv);
        }
        int[] out = new int[k];
        int[] words = new int[4];
        for (int s = 0; s < k; s++) {
            if (special) {
                out[s] = -1;
                continue;
            }
            float best = Float.POSITIVE_INFINITY;
            int bestIndex = -1;
            for (int v = 0; v < vocab; v++) {
                Philox.block(v, s / 4, (int) position, (int) (position >>> 32), (int) seed, (int) (seed >>> 32), words);
                float u = Philox.uniform(words[s % 4]);
                float r = 1f / expNonPositive(x[v] - max); // +inf for x = -inf: never wins
                float score = -log(u) * r;
                if (score < best) {
                    best = score;
                    bestIndex = v;
                }
            }
            out[s] = bestIndex;
        }
        return out;
    }
}
