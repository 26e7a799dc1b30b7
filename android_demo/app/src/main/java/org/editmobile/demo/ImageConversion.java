package org.editmobile.demo;

/**
 * The VAE decoder's output (float NCHW, RGB in [-1, 1]) to pixels, as diffusers'
 * VaeImageProcessor.postprocess(output_type="pil"): x * 0.5 + 0.5 clamped to [0, 1], times 255,
 * rounded half to even (numpy's round). Every operation is the float32 one diffusers does, so
 * the bytes are the same, rounding ties included. A NaN (a broken fp16 decode) is refused
 * rather than shown as black.
 */
public final class ImageConversion {
  private ImageConversion() {}

  /** Image n of the batch as RGB bytes, row by row (HWC), as PIL's RGB. */
  public static byte[] toRgbBytes(float[] decoded, int n, int channels, int height, int width) {
    int plane = checkShape(decoded, n, channels, height, width);
    byte[] out = new byte[3 * plane];
    int base = n * 3 * plane;
    for (int i = 0; i < plane; i++) {
      for (int c = 0; c < 3; c++) {
        out[3 * i + c] = (byte) toByte(decoded[base + c * plane + i]);
      }
    }
    return out;
  }

  /** Image n as ARGB_8888 ints (opaque), row by row: Android's Bitmap.createBitmap layout. */
  public static int[] toArgbPixels(float[] decoded, int n, int channels, int height, int width) {
    int plane = checkShape(decoded, n, channels, height, width);
    int[] out = new int[plane];
    int base = n * 3 * plane;
    for (int i = 0; i < plane; i++) {
      int r = toByte(decoded[base + i]);
      int g = toByte(decoded[base + plane + i]);
      int b = toByte(decoded[base + 2 * plane + i]);
      out[i] = 0xFF000000 | r << 16 | g << 8 | b;
    }
    return out;
  }

  /**
   * A pipeline artifact's decode output (1, 3, H, W) already in [0, 1] (the method applies
   * x * 0.5 + 0.5 and the clamp) as RGB bytes: round(v * 255) half to even, in float32 as
   * torch's round does.
   */
  public static byte[] unitToRgbBytes(float[] image, int height, int width) {
    int plane = checkShape(image, 0, 3, height, width);
    byte[] out = new byte[3 * plane];
    for (int i = 0; i < plane; i++) {
      for (int c = 0; c < 3; c++) {
        float value = image[c * plane + i];
        if (!(value >= 0.0f && value <= 1.0f)) {
          throw new DemoException("the decoded image has values outside [0, 1] (" + value
              + "); the decoder run failed");
        }
        out[3 * i + c] = (byte) (int) Math.rint(value * 255.0f);
      }
    }
    return out;
  }

  /** One value to 0..255, in float32 steps as torch and numpy take them. */
  static int toByte(float value) {
    if (Float.isNaN(value)) {
      throw new DemoException("the decoded image has NaN values; the VAE run failed (try fp32)");
    }
    float x = value * 0.5f + 0.5f;
    x = Math.min(Math.max(x, 0.0f), 1.0f);
    return (int) Math.rint(x * 255.0f);
  }

  private static int checkShape(float[] decoded, int n, int channels, int height, int width) {
    long plane = (long) height * width;
    if (channels != 3 || n < 0 || height <= 0 || width <= 0
        || (n + 1) * 3 * plane > decoded.length) {
      throw new DemoException("the decoded image is not image " + n + " of a batch of 3 x "
          + height + " x " + width + " RGB images (" + decoded.length + " values)");
    }
    return (int) plane;
  }
}
