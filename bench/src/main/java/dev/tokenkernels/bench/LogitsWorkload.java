package dev.tokenkernels.bench;

import dev.tokenkernels.runtime.DType;

/** A {@link Workload} over logits of {@code rows x vocab} in one dtype: what the ops' workloads share. */
abstract class LogitsWorkload implements Workload {
    final int rows;
    final int vocab;
    final DType dtype;

    LogitsWorkload(int rows, int vocab, DType dtype) {
        this.rows = rows;
        this.vocab = vocab;
        this.dtype = dtype;
    }

    @Override
    public String shape() {
        return rows + "x" + vocab;
    }

    @Override
    public String dtype() {
        return dtype.name();
    }
}
