package org.editmobile.demo;

/**
 * The keys of the benchmark results JSON that `edit-mobile profile ART --device android` pulls
 * (schema edit-mobile/device-benchmark, defined in edit_mobile/runtime/device_profile.py and
 * documented in android_demo/README.md). Plain Java, so that the pipeline block built by
 * PipelineBenchmark is checked on the JVM; BenchmarkResults (DemoRun.kt) writes the rest.
 */
public final class ResultsKeys {
  private ResultsKeys() {}

  // BEGIN RESULTS KEYS -- every key of the results JSON; tests/test_device_profile.py compares
  // this block with edit_mobile.runtime.device_profile (RESULTS_TOP, RESULTS_DEVICE,
  // RESULTS_METHOD, RESULTS_PIPELINE, RESULTS_IMAGE). Prefix = where the key lives: TOP_ top
  // level, DEVICE_ in "device", METHOD_ in each "methods" entry, PIPELINE_ in "pipeline",
  // IMAGE_ in each "pipeline"."image_ms" entry.
  public static final String SCHEMA_NAME = "edit-mobile/device-benchmark";
  public static final int SCHEMA_VERSION = 2;
  public static final String TOP_SCHEMA = "schema";
  public static final String TOP_SCHEMA_VERSION = "schema_version";
  public static final String TOP_STATUS = "status";
  public static final String TOP_ERROR = "error";
  public static final String TOP_DEVICE = "device";
  public static final String TOP_RUNTIME = "runtime";
  public static final String TOP_BACKENDS = "backends";
  public static final String TOP_ARTIFACT = "artifact";
  public static final String TOP_MODEL = "model";
  public static final String TOP_THREADS = "threads";
  public static final String TOP_METHODS = "methods";
  public static final String TOP_PIPELINE = "pipeline";
  public static final String DEVICE_MODEL = "model";
  public static final String DEVICE_MANUFACTURER = "manufacturer";
  public static final String DEVICE_OS = "os";
  public static final String DEVICE_ABI = "abi";
  public static final String METHOD_WARMUP = "warmup";
  public static final String METHOD_LATENCIES_MS = "latencies_ms";
  public static final String METHOD_LOAD_MS = "load_ms";
  public static final String METHOD_PEAK_MEMORY_BYTES = "peak_memory_bytes";
  public static final String METHOD_MEMORY_SOURCE = "memory_source";
  public static final String METHOD_ETDUMP = "etdump";
  public static final String PIPELINE_STEPS = "steps";
  public static final String PIPELINE_GUIDANCE = "guidance";
  public static final String PIPELINE_IMAGE_MS = "image_ms";
  public static final String IMAGE_ENCODE = "encode";
  public static final String IMAGE_PER_STEP = "per_step";
  public static final String IMAGE_DECODE = "decode";
  public static final String IMAGE_TOTAL = "total";
  // END RESULTS KEYS
}
