package org.editmobile.demo;

/**
 * A tensor passed to or returned by a program method: float32 values or int64 values (token
 * ids), row-major, with its shape. On a phone the runner turns it into an ExecuTorch Tensor.
 */
public final class HostTensor {
  public final long[] shape;
  public final float[] floats; // null for int64
  public final long[] longs; // null for float32

  private HostTensor(long[] shape, float[] floats, long[] longs) {
    this.shape = shape;
    this.floats = floats;
    this.longs = longs;
  }

  public static HostTensor ofFloats(float[] values, long... shape) {
    return new HostTensor(shape, values, null);
  }

  public static HostTensor ofLongs(long[] values, long... shape) {
    return new HostTensor(shape, null, values);
  }

  public static HostTensor ofInts(int[] values, long... shape) {
    long[] wide = new long[values.length];
    for (int i = 0; i < values.length; i++) {
      wide[i] = values[i];
    }
    return ofLongs(wide, shape);
  }

  /** A test vector (F32 or I64, as TestVectors.forMethod checked) as a method input. */
  public static HostTensor of(SafeTensors.Entry entry) {
    return "I64".equals(entry.dtype)
        ? ofLongs(entry.toLongs(), entry.shape)
        : ofFloats(entry.toFloats(), entry.shape);
  }

  public int size() {
    return floats != null ? floats.length : longs.length;
  }
}
