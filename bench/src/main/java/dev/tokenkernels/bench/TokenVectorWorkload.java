package dev.tokenkernels.bench;

/** A {@link Workload} over per-token F32 vectors of {@code tokens} entries: what those workloads share. */
abstract class TokenVectorWorkload implements Workload {
    final int tokens;

    TokenVectorWorkload(int tokens) {
        this.tokens = tokens;
    }

    @Override
    public String shape() {
        return String.valueOf(tokens);
    }

    @Override
    public String dtype() {
        return "F32";
    }
}
