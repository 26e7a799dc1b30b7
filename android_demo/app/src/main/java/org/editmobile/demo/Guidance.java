package org.editmobile.demo;

/**
 * Classifier-free guidance, as diffusers' pipelines compute it: uncond + scale * (cond -
 * uncond). With guidance the exported denoiser runs a batch of two, the unconditional half
 * first (the pipelines' torch.cat([negative, positive]) order), so its output splits in two
 * equal halves. Results are in double, ready for the scheduler's step.
 */
public final class Guidance {
  private Guidance() {}

  public static double[] combine(float[] uncond, float[] cond, double scale) {
    if (uncond.length != cond.length) {
      throw new DemoException("the unconditional and conditional predictions differ in size ("
          + uncond.length + " and " + cond.length + ")");
    }
    double[] out = new double[cond.length];
    for (int i = 0; i < out.length; i++) {
      out[i] = uncond[i] + scale * ((double) cond[i] - uncond[i]);
    }
    return out;
  }

  /** The batch-2 output of the denoiser: [unconditional, conditional], each half the values. */
  public static double[] combineBatched(float[] batched, double scale) {
    if (batched.length % 2 != 0) {
      throw new DemoException("a guided denoiser output has a batch of 2; got " + batched.length
          + " values, an odd count");
    }
    int half = batched.length / 2;
    float[] uncond = new float[half];
    float[] cond = new float[half];
    System.arraycopy(batched, 0, uncond, 0, half);
    System.arraycopy(batched, half, cond, 0, half);
    return combine(uncond, cond, scale);
  }

  /**
   * PixArt's transformer predicts noise and variance (2 x latent channels): the pipeline keeps
   * the first latentChannels channels of each (N, 2C, H, W) sample.
   */
  public static double[] noiseHalf(double[] prediction, int batch, int latentChannels) {
    int perSample = prediction.length / batch;
    int plane = perSample / (2 * latentChannels);
    if (perSample * batch != prediction.length || plane * 2 * latentChannels != perSample) {
      throw new DemoException(prediction.length + " values are not " + batch + " samples of "
          + 2 * latentChannels + " channels");
    }
    double[] out = new double[batch * latentChannels * plane];
    for (int n = 0; n < batch; n++) {
      System.arraycopy(prediction, n * perSample, out, n * latentChannels * plane,
          latentChannels * plane);
    }
    return out;
  }
}
