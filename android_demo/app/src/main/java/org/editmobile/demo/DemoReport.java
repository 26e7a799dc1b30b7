package org.editmobile.demo;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * What one run found, as text for the screen and as one JSON line for `adb logcat` scraping:
 * {@code EDIT_DEMO_RESULT {"status": "ok", ...}} (the iOS app prints the same line).
 * An output identical to its reference has PSNR Metrics.PERFECT_DB (200), as in the runtime.
 */
public final class DemoReport {
  public static final String LOG_PREFIX = "EDIT_DEMO_RESULT ";

  /** PSNR and worst error of one output against its expected test vector. */
  public static final class OutputCheck {
    public final String name;
    public final double psnrDb;
    public final double maxAbsError;

    public OutputCheck(String name, double psnrDb, double maxAbsError) {
      this.name = name;
      this.psnrDb = psnrDb;
      this.maxAbsError = maxAbsError;
    }
  }

  private final String runtime;
  private final ArtifactManifest manifest;
  private final List<String> filesVerified;
  private final double loadMs;
  private final List<OutputCheck> outputs;
  private final int warmupRuns;
  private final Metrics.Latency latency;

  public DemoReport(
      String runtime,
      ArtifactManifest manifest,
      List<String> filesVerified,
      double loadMs,
      List<OutputCheck> outputs,
      int warmupRuns,
      Metrics.Latency latency) {
    this.runtime = runtime;
    this.manifest = manifest;
    this.filesVerified = new ArrayList<>(filesVerified);
    this.loadMs = loadMs;
    this.outputs = new ArrayList<>(outputs);
    this.warmupRuns = warmupRuns;
    this.latency = latency;
  }

  public String toLogLine() {
    StringBuilder json = new StringBuilder("{");
    json.append("\"status\": \"ok\"");
    json.append(", \"runtime\": ").append(Json.quote(runtime));
    json.append(", \"model\": ").append(Json.quote(manifest.modelSource));
    json.append(", \"backend\": ").append(Json.quote(manifest.backend));
    json.append(", \"precision\": ").append(Json.quote(manifest.precision));
    json.append(", \"resolution\": ").append(Json.quote(manifest.resolution));
    json.append(", \"files_verified\": [");
    for (int i = 0; i < filesVerified.size(); i++) {
      json.append(i == 0 ? "" : ", ").append(Json.quote(filesVerified.get(i)));
    }
    json.append("], \"load_ms\": ").append(number(loadMs));
    json.append(", \"outputs\": [");
    for (int i = 0; i < outputs.size(); i++) {
      OutputCheck check = outputs.get(i);
      json.append(i == 0 ? "{" : ", {");
      json.append("\"name\": ").append(Json.quote(check.name));
      json.append(", \"psnr_db\": ").append(number(check.psnrDb));
      json.append(", \"max_abs_err\": ").append(number(check.maxAbsError)).append("}");
    }
    json.append("], \"latency_ms\": {\"warmup\": ").append(warmupRuns);
    json.append(", \"runs\": ").append(latency.runs);
    json.append(", \"median\": ").append(number(latency.medianMs));
    json.append(", \"min\": ").append(number(latency.minMs));
    json.append(", \"p90\": ").append(number(latency.p90Ms)).append("}}");
    return LOG_PREFIX + json;
  }

  public static String errorLogLine(String message) {
    return LOG_PREFIX + "{\"status\": \"error\", \"error\": " + Json.quote(message) + "}";
  }

  /** The text shown on screen. */
  public String toScreenText() {
    StringBuilder text = new StringBuilder();
    text.append(manifest.modelSource).append(" @ ").append(manifest.resolution).append('\n');
    text.append("backend ").append(manifest.backend).append(", ").append(manifest.precision);
    text.append(", runtime ").append(runtime).append('\n');
    text.append("sha256 verified: ").append(String.join(", ", filesVerified)).append('\n');
    text.append(String.format(Locale.US, "load %.1f ms%n%n", loadMs));
    for (OutputCheck check : outputs) {
      text.append(
          String.format(
              Locale.US,
              "%s: PSNR %s dB, max |err| %.3g%n",
              check.name,
              check.psnrDb >= Metrics.PERFECT_DB
                  ? "200 (identical)"
                  : String.format(Locale.US, "%.2f", check.psnrDb),
              check.maxAbsError));
    }
    text.append(
        String.format(
            Locale.US,
            "%nlatency over %d runs (after %d warm-up):%nmedian %.2f ms, min %.2f ms, p90 %.2f ms",
            latency.runs,
            warmupRuns,
            latency.medianMs,
            latency.minMs,
            latency.p90Ms));
    return text.toString();
  }

  private static String number(double value) {
    if (Double.isNaN(value) || Double.isInfinite(value)) {
      return "null";
    }
    return String.format(Locale.US, "%.6g", value);
  }
}
