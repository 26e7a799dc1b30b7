package org.editmobile.demo;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reader for the safetensors format: an 8-byte little-endian header length, a JSON header
 * {name: {"dtype", "shape", "data_offsets": [begin, end]}} (offsets relative to the end of the
 * header), then the raw little-endian tensor bytes.
 */
public final class SafeTensors {

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
    return parse(ArtifactManifest.readAll(file), file.getName());
  }

  public static Map<String, Entry> parse(byte[] bytes, String label) {
    if (bytes.length < 8) {
      throw new DemoException(label + " is shorter than a safetensors header");
    }
    long headerLength = ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
    if (headerLength <= 0 || 8 + headerLength > bytes.length) {
      throw new DemoException(label + ": header length " + headerLength + " does not fit the file");
    }
    int dataStart = (int) (8 + headerLength);
    String headerText = new String(bytes, 8, (int) headerLength, StandardCharsets.UTF_8);
    Map<String, Entry> tensors = new LinkedHashMap<>();
    for (Map.Entry<String, Object> item : Json.parseObject(headerText).entrySet()) {
      if (item.getKey().equals("__metadata__")) {
        continue;
      }
      tensors.put(item.getKey(), entry(item.getKey(), item.getValue(), bytes, dataStart, label));
    }
    return tensors;
  }

  @SuppressWarnings("unchecked")
  private static Entry entry(String name, Object info, byte[] bytes, int dataStart, String label) {
    Map<String, Object> fields = (Map<String, Object>) info;
    String dtype = (String) fields.get("dtype");
    List<Object> dims = (List<Object>) fields.get("shape");
    List<Object> offsets = (List<Object>) fields.get("data_offsets");
    long[] shape = new long[dims.size()];
    long numel = 1;
    for (int i = 0; i < shape.length; i++) {
      shape[i] = ((Double) dims.get(i)).longValue();
      numel *= shape[i];
    }
    long begin = ((Double) offsets.get(0)).longValue();
    long end = ((Double) offsets.get(1)).longValue();
    if (end - begin != numel * elementSize(dtype) || dataStart + end > bytes.length) {
      throw new DemoException(
          label + ": tensor " + name + " offsets [" + begin + ", " + end + ") do not match its"
              + " shape and dtype or run past the file end; the file is damaged");
    }
    byte[] data = new byte[(int) (end - begin)];
    System.arraycopy(bytes, (int) (dataStart + begin), data, 0, data.length);
    return new Entry(name, dtype, shape, data);
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
