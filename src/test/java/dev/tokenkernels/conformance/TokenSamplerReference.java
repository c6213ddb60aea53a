package dev.tokenkernels.conformance;

import dev.tokenkernels.ops.cpu.Philox;

/**
 * A plain scalar Gumbel-max sampler written from TokenSampler's javadoc: scalar Philox, a scalar
 * copy of VectorMath.log's operations (Math.fma is the same exactly rounded fma) and a plain
 * argmax. It shares no code with the op's vector path, so agreeing with it bit for bit checks
 * the lanes, the masks and the reductions as well as the cross-backend identity.
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
        int[] out = new int[k];
        int[] words = new int[4];
        for (int s = 0; s < k; s++) {
            if (special) {
                out[s] = -1;
                continue;
            }
            float best = Float.NEGATIVE_INFINITY;
            int bestIndex = -1;
            for (int v = 0; v < vocab; v++) {
                Philox.block(v, s / 4, (int) position, (int) (position >>> 32), (int) seed, (int) (seed >>> 32), words);
                float u = Philox.uniform(words[s % 4]);
                float score = x[v] - log(-log(u));
                if (score > best) {
                    best = score;
                    bestIndex = v;
                }
            }
            out[s] = bestIndex;
        }
        return out;
    }
}
