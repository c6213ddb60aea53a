package dev.tokenkernels.cuda;

import java.nio.file.Path;
import java.util.Map;

/** Loads kernels on {@code cuda-emu}: host libraries built by {@link EmuModuleBuilder}. */
final class EmuModuleLoader implements ModuleLoader {
    private final EmuModuleBuilder builder;

    EmuModuleLoader(EmuModuleBuilder builder) {
        this.builder = builder;
    }

    @Override
    public Loaded load(CudaDriver driver, KernelSource source) {
        long start = System.nanoTime();
        boolean cached = builder.isCached(source);
        Path library = builder.module(source);
        // The emulator's cuFuncGetParamInfo reports each entry's parameter sizes from its C++ signature.
        return new Loaded(driver.loadModuleFile(library), Map.of(), cached, (System.nanoTime() - start) / 1e6);
    }

    @Override
    public ModuleLoader withCache(KernelCache cache) {
        return new EmuModuleLoader(new EmuModuleBuilder(builder.compiler(), cache));
    }

    @Override
    public String describe() {
        return "host compiler " + builder.compiler().executable() + " (" + builder.compiler().version() + ")";
    }
}
