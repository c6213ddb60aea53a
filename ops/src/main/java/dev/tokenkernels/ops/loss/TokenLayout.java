package dev.tokenkernels.ops.loss;

import dev.tokenkernels.runtime.Checks;
import dev.tokenkernels.runtime.DType;
import dev.tokenkernels.runtime.Tensor;
import java.util.Arrays;

/**
 * Where {@link PolicyLoss}'s tokens sit: {@code N} packed rows with sequence offsets {@code [B + 1]}
 * (logits {@code [N, V]}, per-token inputs {@code [N]}), or {@code B} padded rows of {@code L}
 * (logits {@code [B, L, V]}, per-token inputs {@code [B, L]}, each row one sequence; padding is
 * left out by a mask or the ignore index). Checks each input's shape against the layout and hands
 * the backends the packed views they read: both layouts are the same row-major bytes, so the padded
 * one is the packed one with offsets {@code 0, L, 2L, ..., BL}.
 */
final class TokenLayout {
    private final int rows;
    private final long vocab;
    private final int[] starts;
    /** {@code [N]} or {@code [B, L]}. */
    private final long[] tokenShape;

    private TokenLayout(int rows, long vocab, int[] starts, long[] tokenShape) {
        this.rows = rows;
        this.vocab = vocab;
        this.starts = starts;
        this.tokenShape = tokenShape;
    }

    /** The layout of {@code logits} ({@code [N, V]} with {@code starts}, or {@code [B, L, V]} with null starts). */
    static TokenLayout of(Tensor logits, int[] starts) {
        Checks.require(logits.rank() == 2 || logits.rank() == 3, "logits",
                "[N, V] (packed, with sequenceStarts) or [B, L, V] (padded)", Arrays.toString(logits.shape()));
        long vocab = logits.dim(logits.rank() - 1);
        long tokens = logits.elementCount() / Math.max(vocab, 1);
        Checks.require(tokens <= Integer.MAX_VALUE, "logits", "fewer than 2^31 tokens", tokens);
        Checks.require(vocab >= 1 && vocab <= Integer.MAX_VALUE, "logits", "1 <= V < 2^31 columns", vocab);
        if (logits.rank() == 2) {
            return new TokenLayout((int) tokens, vocab, Checks.offsets("sequenceStarts", starts, tokens),
                    new long[] {tokens});
        }
        if (starts != null) {
            throw new IllegalArgumentException("sequenceStarts: expected null with [B, L, V] logits (each of the B "
                    + "rows is one sequence), got " + Arrays.toString(starts));
        }
        long batch = logits.dim(0);
        long length = logits.dim(1);
        // B is not bounded by the token count when L = 0
        Checks.require(batch >= 1 && batch < Integer.MAX_VALUE, "logits", "[B, L, V] with 1 <= B < 2^31 - 1 sequences",
                Arrays.toString(logits.shape()));
        int[] padded = new int[(int) batch + 1];
        for (int b = 0; b <= batch; b++) {
            padded[b] = (int) (b * length);
        }
        return new TokenLayout((int) tokens, vocab, padded, new long[] {batch, length});
    }

    /** N, the tokens of the batch (padding included). */
    int rows() {
        return rows;
    }

    /** B, the sequences. */
    int sequences() {
        return starts.length - 1;
    }

    /** Offsets {@code [B + 1]} of the sequences' tokens in the packed rows. */
    int[] starts() {
        return starts;
    }

    /** The shape of a per-token input or output: {@code [N]} or {@code [B, L]}. */
    long[] tokenShape() {
        return tokenShape.clone();
    }

    /** The shape of the logits and of their gradient. */
    long[] logitsShape() {
        long[] shape = Arrays.copyOf(tokenShape, tokenShape.length + 1);
        shape[tokenShape.length] = vocab;
        return shape;
    }

    /** {@code t} ({@code name}, of the logits' shape) as the packed {@code [N, V]} rows. */
    Tensor packedRows(String name, Tensor t) {
        requireShape(name, t, logitsShape(), tokenShape.length == 1 ? "[N, V]" : "[B, L, V]",
                "the shape of logits");
        return t.rank() == 2 ? t : t.reshape(rows, vocab);
    }

    /** A per-token input ({@code [N]} or {@code [B, L]} as the layout is), as {@code [N]}; null passes. */
    Tensor packedTokens(String name, Tensor t) {
        if (t == null) {
            return null;
        }
        requireShape(name, t, tokenShape, tokenShape.length == 1 ? "[N]" : "[B, L]",
                tokenShape.length == 1 ? "the rows of logits" : "the first dimensions of logits");
        return t.rank() == 1 ? t : t.reshape(rows);
    }

    /** How an error names token {@code i} (a packed row) of a per-token input: {@code [i]}, or {@code [b, t]} when padded. */
    String at(int i) {
        if (tokenShape.length == 1) {
            return "[" + i + "]";
        }
        long length = tokenShape[1];
        return "[" + i / length + ", " + i % length + "]";
    }

    /** A per-sequence input, {@code [B]}, as each token's value ({@code [N]} floats, finite where counted). */
    float[] perSequence(String name, Tensor t, boolean[] counted) {
        Checks.notNull(name, t);
        Checks.rank(name, t, 1, "[B], one value per sequence");
        Checks.dtype(name, t, DType.F32);
        Checks.dim(name, t, 0, sequences(), "B, the sequences");
        float[] perToken = new float[rows];
        for (int b = 0; b < sequences(); b++) {
            float v = t.getFloat(b);
            for (int i = starts[b]; i < starts[b + 1]; i++) {
                if (counted[i]) {
                    Checks.require(Float.isFinite(v), name + "[" + b + "]", "a finite number", v);
                    perToken[i] = v;
                }
            }
        }
        return perToken;
    }

    private static void requireShape(String name, Tensor t, long[] shape, String shapeName, String why) {
        Checks.require(Arrays.equals(t.shape(), shape), name,
                shapeName + " = " + Arrays.toString(shape) + " (" + why + ")", Arrays.toString(t.shape()));
    }
}
