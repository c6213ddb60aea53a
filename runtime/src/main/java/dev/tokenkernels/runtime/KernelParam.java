package dev.tokenkernels.runtime;

/** One parameter of a kernel entry point, as the op declares it. */
public record KernelParam(String name, Type type) {

    /** Parameter types kernels use; each has the size it has in the PTX {@code .entry} list. */
    public enum Type {
        /** A device pointer, passed as a {@link DeviceBuffer}. */
        POINTER(8, DeviceBuffer.class),
        I32(4, Integer.class),
        I64(8, Long.class),
        F32(4, Float.class);

        private final int byteSize;
        private final Class<?> javaType;

        Type(int byteSize, Class<?> javaType) {
            this.byteSize = byteSize;
            this.javaType = javaType;
        }

        public int byteSize() {
            return byteSize;
        }

        /** The Java class of an argument for this parameter. */
        public Class<?> javaType() {
            return javaType;
        }
    }

    public static KernelParam pointer(String name) {
        return new KernelParam(name, Type.POINTER);
    }

    public static KernelParam i32(String name) {
        return new KernelParam(name, Type.I32);
    }

    public static KernelParam i64(String name) {
        return new KernelParam(name, Type.I64);
    }

    public static KernelParam f32(String name) {
        return new KernelParam(name, Type.F32);
    }
}
