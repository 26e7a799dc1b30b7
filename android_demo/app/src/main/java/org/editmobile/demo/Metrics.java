package org.editmobile.demo;

import java.util.Arrays;

/** Accuracy and latency figures, computed the way `edit-mobile validate` / `profile` do. */
public final class Metrics {
  private Metrics() {}

  /**
   * Reported instead of infinity when the error is exactly zero, as edit_mobile.runtime.metrics
   * does, so that the log line stays plain JSON.
   */
  public static final double PERFECT_DB = 200.0;

  /**
   * PSNR in dB: 20 log10(max|ref| / RMSE), accumulated in double, capped at PERFECT_DB; the
   * cases as in edit_mobile.runtime.metrics: no error is PERFECT_DB (all-zero tensors included),
   * error against an all-zero reference is -PERFECT_DB, and a NaN or inf anywhere is NaN (a
   * failure, never a pass: see ArtifactCheck.checkOutput).
   */
  public static double psnrDb(float[] ref, float[] out) {
    checkSameLength(ref, out);
    if (countNonFinite(ref) > 0 || countNonFinite(out) > 0) {
      return Double.NaN;
    }
    double peak = 0;
    double squaredError = 0;
    for (int i = 0; i < ref.length; i++) {
      peak = Math.max(peak, Math.abs((double) ref[i]));
      double diff = (double) out[i] - (double) ref[i];
      squaredError += diff * diff;
    }
    double rmse = Math.sqrt(squaredError / ref.length);
    if (rmse == 0) {
      return PERFECT_DB;
    }
    if (peak == 0) {
      return -PERFECT_DB;
    }
    return Math.min(PERFECT_DB, 20 * Math.log10(peak / rmse));
  }

  /** How many values are NaN or infinite. */
  public static int countNonFinite(float[] values) {
    int count = 0;
    for (float value : values) {
      if (Float.isNaN(value) || Float.isInfinite(value)) {
        count++;
      }
    }
    return count;
  }

  public static double maxAbsError(float[] ref, float[] out) {
    checkSameLength(ref, out);
    double worst = 0;
    for (int i = 0; i < ref.length; i++) {
      worst = Math.max(worst, Math.abs((double) out[i] - (double) ref[i]));
    }
    return worst;
  }

  /** Latency summary of timed runs (milliseconds). */
  public static final class Latency {
    public final int runs;
    public final double medianMs;
    public final double minMs;
    public final double p90Ms;

    Latency(int runs, double medianMs, double minMs, double p90Ms) {
      this.runs = runs;
      this.medianMs = medianMs;
      this.minMs = minMs;
      this.p90Ms = p90Ms;
    }
  }

  public static Latency latency(double[] runsMs) {
    if (runsMs.length == 0) {
      throw new IllegalArgumentException("no timed runs");
    }
    double[] sorted = runsMs.clone();
    Arrays.sort(sorted);
    return new Latency(sorted.length, percentile(sorted, 50), sorted[0], percentile(sorted, 90));
  }

  /** Linear interpolation between closest ranks (numpy.percentile's default) on sorted data. */
  static double percentile(double[] sorted, double percent) {
    double rank = percent / 100.0 * (sorted.length - 1);
    int below = (int) Math.floor(rank);
    int above = Math.min(below + 1, sorted.length - 1);
    return sorted[below] + (rank - below) * (sorted[above] - sorted[below]);
  }

  private static void checkSameLength(float[] ref, float[] out) {
    if (ref.length != out.length || ref.length == 0) {
      throw new DemoException(
          "output has " + out.length + " values, reference has " + ref.length);
    }
  }
}
