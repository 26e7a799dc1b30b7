package org.editmobile.demo;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reader for the safetensors format: an 8-byte little-endian header length, a JSON header
 * {name: {"dtype", "shape", "data_offsets": [begin, end]}} (offsets relative to the end of the
 * header), then the raw little-endian tensor bytes.
 *
 * <p>The file may be hostile: every length and offset is checked in long arithmetic that cannot
 * overflow, against the bytes really there, before anything is copied.
 */
public final class SafeTensors {

  /** Largest integer a JSON number (a double) holds exactly: beyond it offsets are guesses. */
  private static final double MAX_EXACT_INTEGER = 9007199254740992.0; // 2^53

  /** One tensor: its safetensors dtype ("F32", "F16", ...), shape and raw bytes. */
  public static final class Entry {
    public final String name;
    public final String dtype;
    public final long[] shape;
    /** Little-endian bytes, exactly numel * elementSize(dtype) of them. */
    public final byte[] data;

    Entry(String name, String dtype, long[] shape, byte[] data) {
      this.name = name;
      this.dtype = dtype;
      this.shape = shape;
      this.data = data;
    }

    public long numel() {
      long count = 1;
      for (long dim : shape) {
        count *= dim;
      }
      return count;
    }

    /** Values widened to float32 (F32 as is, F16 / BF16 converted exactly). */
    public float[] toFloats() {
      ByteBuffer buffer = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
      float[] values = new float[(int) numel()];
      switch (dtype) {
        case "F32":
          buffer.asFloatBuffer().get(values);
          return values;
        case "F16":
          for (int i = 0; i < values.length; i++) {
            values[i] = halfToFloat(buffer.getShort(2 * i));
          }
          return values;
        case "BF16":
          for (int i = 0; i < values.length; i++) {
            values[i] = Float.intBitsToFloat((buffer.getShort(2 * i) & 0xffff) << 16);
          }
          return values;
        default:
          throw new DemoException(name + ": dtype " + dtype + " cannot be read as floats");
      }
    }

    /** Raw 16-bit values (F16 bits), e.g. for ExecuTorch's Tensor.fromBlob(ShortArray). */
    /** I64 values (token ids). */
    public long[] toLongs() {
      if (!dtype.equals("I64")) {
        throw new DemoException(name + ": dtype " + dtype + " is not I64");
      }
      long[] out = new long[(int) numel()];
      java.nio.ByteBuffer.wrap(data).order(java.nio.ByteOrder.LITTLE_ENDIAN).asLongBuffer().get(out);
      return out;
    }

    public short[] toShorts() {
      if (!dtype.equals("F16")) {
        throw new DemoException(name + ": dtype " + dtype + " is not F16");
      }
      short[] values = new short[(int) numel()];
      ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN).asShortBuffer().get(values);
      return values;
    }
  }

  /** Safetensors dtype name for a manifest dtype ("float32" -> "F32"). */
  public static String dtypeForManifest(String manifestDtype) {
    switch (manifestDtype) {
      case ArtifactManifest.DTYPE_FLOAT32:
        return "F32";
      case ArtifactManifest.DTYPE_FLOAT16:
        return "F16";
      default:
        throw new DemoException(
            "manifest dtype " + manifestDtype + " is not supported by this app (float32, float16)");
    }
  }

  public static int elementSize(String dtype) {
    switch (dtype) {
      case "F64":
      case "I64":
        return 8;
      case "F32":
      case "I32":
        return 4;
      case "F16":
      case "BF16":
      case "I16":
        return 2;
      case "U8":
      case "I8":
      case "BOOL":
        return 1;
      default:
        throw new DemoException("unknown safetensors dtype " + dtype);
    }
  }

  /** Reads every tensor of the file ("__metadata__" is skipped). */
  public static Map<String, Entry> read(File file) throws IOException {
    return parse(ArtifactManifest.readAll(file, ArtifactManifest.MAX_READ_BYTES), file.getName());
  }

  public static Map<String, Entry> parse(byte[] bytes, String label) {
    if (bytes.length < 8) {
      throw new DemoException(label + " is shorter than a safetensors header");
    }
    long headerLength = ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
    // Compared with what is left after the 8 length bytes: "8 + headerLength" could overflow.
    if (headerLength <= 0 || headerLength > bytes.length - 8L) {
      throw new DemoException(label + ": header length " + headerLength + " does not fit the file");
    }
    int dataStart = 8 + (int) headerLength;
    String headerText = new String(bytes, 8, (int) headerLength, StandardCharsets.UTF_8);
    Map<String, Object> header;
    try {
      header = Json.parseObject(headerText);
    } catch (IllegalArgumentException err) {
      throw new DemoException(label + ": the header is not valid JSON: " + err.getMessage());
    }
    Map<String, Entry> tensors = new LinkedHashMap<>();
    for (Map.Entry<String, Object> item : header.entrySet()) {
      if (item.getKey().equals("__metadata__")) {
        continue;
      }
      tensors.put(item.getKey(), entry(item.getKey(), item.getValue(), bytes, dataStart, label));
    }
    return tensors;
  }

  private static Entry entry(String name, Object info, byte[] bytes, int dataStart, String label) {
    String where = label + ": tensor " + name;
    Map<String, Object> fields = asMap(info, where);
    if (!(fields.get("dtype") instanceof String)) {
      throw new DemoException(where + " has no string dtype; the file is damaged");
    }
    String dtype = (String) fields.get("dtype");
    long[] shape = integers(fields.get("shape"), -1, where + " shape");
    long[] offsets = integers(fields.get("data_offsets"), 2, where + " data_offsets");
    long begin = offsets[0];
    long end = offsets[1];
    long dataLength = bytes.length - (long) dataStart;
    long expectedBytes;
    try {
      expectedBytes = Math.multiplyExact(product(shape), elementSize(dtype));
    } catch (ArithmeticException err) {
      throw new DemoException(
          where + " shape " + Arrays.toString(shape)
              + " has too many elements; the file is damaged");
    }
    if (begin > end) {
      throw new DemoException(
          where + " data_offsets [" + begin + ", " + end + ") are reversed; the file is damaged");
    }
    if (end > dataLength) {
      throw new DemoException(
          where + " data_offsets [" + begin + ", " + end + ") run past the end of the "
              + dataLength + " data bytes; the file is damaged or truncated");
    }
    if (end - begin != expectedBytes) {
      throw new DemoException(
          where + " data_offsets [" + begin + ", " + end + ") hold " + (end - begin)
              + " bytes, shape " + Arrays.toString(shape) + " of " + dtype + " needs "
              + expectedBytes + "; the file is damaged");
    }
    // All three are now within [0, bytes.length], so the int casts are exact.
    byte[] data = new byte[(int) (end - begin)];
    System.arraycopy(bytes, dataStart + (int) begin, data, 0, data.length);
    return new Entry(name, dtype, shape, data);
  }

  /** A JSON array of integers in [0, 2^53] ({@code count} of them unless it is -1). */
  private static long[] integers(Object value, int count, String where) {
    if (!(value instanceof List) || (count >= 0 && ((List<?>) value).size() != count)) {
      throw new DemoException(
          where + " must be an array of " + (count >= 0 ? count + " " : "") + "integers;"
              + " the file is damaged");
    }
    List<?> items = (List<?>) value;
    long[] out = new long[items.size()];
    for (int i = 0; i < out.length; i++) {
      Object item = items.get(i);
      double number = item instanceof Double ? (Double) item : Double.NaN;
      if (!(number >= 0 && number <= MAX_EXACT_INTEGER && number == Math.rint(number))) {
        throw new DemoException(
            where + " has " + show(item) + ", not an integer in [0, 2^53]; the file is damaged");
      }
      out[i] = (long) number;
    }
    return out;
  }

  private static long product(long[] shape) {
    long count = 1;
    for (long dim : shape) {
      count = Math.multiplyExact(count, dim);
    }
    return count;
  }

  /** A JSON value as written: integral numbers without ".0" (so -16 reads as -16). */
  private static String show(Object value) {
    if (value instanceof Double) {
      double number = (Double) value;
      if (number == Math.rint(number) && Math.abs(number) < 1e18) {
        return String.valueOf((long) number);
      }
    }
    return String.valueOf(value);
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> asMap(Object value, String where) {
    if (!(value instanceof Map)) {
      throw new DemoException(where + " has a malformed header entry; the file is damaged");
    }
    return (Map<String, Object>) value;
  }

  /** IEEE 754 binary16 bits to float32, subnormals, infinities and NaN included. */
  public static float halfToFloat(short bits) {
    int h = bits & 0xffff;
    int sign = (h & 0x8000) << 16;
    int exponent = (h >>> 10) & 0x1f;
    int mantissa = h & 0x3ff;
    if (exponent == 0x1f) {
      return Float.intBitsToFloat(sign | 0x7f800000 | (mantissa << 13));
    }
    if (exponent == 0) {
      // Subnormal or zero: mantissa * 2^-24, exact in float32.
      float magnitude = mantissa * 5.9604645e-8f;
      return sign == 0 ? magnitude : -magnitude;
    }
    return Float.intBitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
  }
}
