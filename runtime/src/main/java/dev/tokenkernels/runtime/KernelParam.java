package dev.tokenkernels.runtime;

/** One parameter of a kernel entry point, as the op declares it. */
public record KernelParam(String name, Type type) {

    /** Parameter types kernels use; each has the size it has in the PTX {@code .entry} list. */
    public enum Type {
        /** A device pointer, passed as a {@link DeviceBuffer}. */
        POINTER(8, DeviceBuffer.class),
        /** A 32-bit signed integer, passed as an {@link Integer}. */
        I32(4, Integer.class),
        /** A 64-bit signed integer, passed as a {@link Long}. */
        I64(8, Long.class),
        /** A 32-bit float, passed as a {@link Float}. */
        F32(4, Float.class);

        private final int byteSize;
        private final Class<?> javaType;

        Type(int byteSize, Class<?> javaType) {
            this.byteSize = byteSize;
            this.javaType = javaType;
        }

        /** Size in the PTX {@code .entry} parameter list, in bytes. */
        public int byteSize() {
            return byteSize;
        }

        /** The Java class of an argument for this parameter. */
        public Class<?> javaType() {
            return javaType;
        }
    }

    /** A device pointer parameter called {@code name}. */
    public static KernelParam pointer(String name) {
        return new KernelParam(name, Type.POINTER);
    }

    /** A 32-bit integer parameter called {@code name}. */
    public static KernelParam i32(String name) {
        return new KernelParam(name, Type.I32);
    }

    /** A 64-bit integer parameter called {@code name}. */
    public static KernelParam i64(String name) {
        return new KernelParam(name, Type.I64);
    }

    /** A 32-bit float parameter called {@code name}. */
    public static KernelParam f32(String name) {
        return new KernelParam(name, Type.F32);
    }
}
