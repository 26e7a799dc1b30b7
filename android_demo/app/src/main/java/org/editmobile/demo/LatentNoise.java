package org.editmobile.demo;

/**
 * The initial latent noise from a seed, the same on every device and in the test's numpy twin:
 * SplitMix64 (Steele, Lea, Flood 2014) gives 64-bit words; the top 53 bits of a word make a
 * uniform double in [0, 1); Box-Muller turns two uniforms u1, u2 into two Gaussians
 * r cos(2 pi u2), r sin(2 pi u2) with r = sqrt(-2 ln(1 - u1)) (1 - u1 is never 0). StrictMath
 * (fdlibm) makes log / sin / cos the same on every JVM and Android version.
 *
 * <p>Not torch.randn: a PyTorch run from the same seed gives other noise, hence other images.
 */
public final class LatentNoise {
  private static final long GOLDEN_GAMMA = 0x9E3779B97F4A7C15L;

  private long state;

  public LatentNoise(long seed) {
    state = seed;
  }

  /** SplitMix64's next word. */
  long nextLong() {
    state += GOLDEN_GAMMA;
    long z = state;
    z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
    z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
    return z ^ (z >>> 31);
  }

  /** Uniform in [0, 1) with 53 random bits. */
  double nextUniform() {
    return (nextLong() >>> 11) * 0x1.0p-53;
  }

  /**
   * count standard Gaussians, in pairs; an odd count drops the last pair's second value. The
   * initial latents (N, C, H, W) are the first N*C*H*W in NCHW order, times the scheduler's
   * initNoiseSigma.
   */
  public static double[] gaussians(long seed, int count) {
    LatentNoise noise = new LatentNoise(seed);
    double[] out = new double[count];
    for (int i = 0; i < count; i += 2) {
      double radius = StrictMath.sqrt(-2.0 * StrictMath.log(1.0 - noise.nextUniform()));
      double angle = 2.0 * StrictMath.PI * noise.nextUniform();
      out[i] = radius * StrictMath.cos(angle);
      if (i + 1 < count) {
        out[i + 1] = radius * StrictMath.sin(angle);
      }
    }
    return out;
  }
}
