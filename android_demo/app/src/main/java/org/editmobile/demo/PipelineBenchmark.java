package org.editmobile.demo;

import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Benchmark mode on a pipeline artifact (export --pipeline), as `edit-mobile profile ART` times
 * one on the host (edit_mobile/runtime/profile_pipeline.py): every method of the program
 * (encode_prompt, each denoise_HxW, each decode_HxW) loaded, then run on its test vectors: once
 * untimed, its outputs compared with the vectors' (PSNR, as the denoiser benchmark does), then
 * the warm-up runs, then the timed runs; the process's peak memory after each method's runs.
 * Then what one image costs at each resolution, from the medians, at the pipeline's default
 * steps and guidance (imageCosts: image_estimate's formula).
 *
 * <p>The methods are called through a MethodRunner and timed with a Clock, so on the phone they
 * are ExecuTorch's (PipelineMethods.kt) and System.nanoTime, and on the JVM a counting test
 * double with a fake clock (jvm_check/CountingRunner.java).
 */
public final class PipelineBenchmark {
  /** Nanoseconds from an arbitrary origin. */
  public interface Clock {
    long nanoTime();
  }

  /** Loads one method of the program (ExecuTorch's Module.loadMethod), so runs are not charged it. */
  public interface Loader {
    void load(String method);
  }

  /** The process's peak resident memory in bytes, or null when it cannot be read. */
  public interface MemoryReader {
    Long peakBytes();
  }

  /** One line of what is being done, for the screen. */
  public interface Progress {
    void show(String text);
  }

  /** One method's figures. */
  public static final class MethodTiming {
    public final String name;
    public final double loadMs;
    public final int warmup;
    public final double[] runsMs; // every timed run, in order
    public final Metrics.Latency latency;
    public final Long peakMemoryBytes; // after this method's runs; null: unknown
    public final List<DemoReport.OutputCheck> outputs; // of the untimed first run

    MethodTiming(String name, double loadMs, int warmup, double[] runsMs, Long peakMemoryBytes,
        List<DemoReport.OutputCheck> outputs) {
      this.name = name;
      this.loadMs = loadMs;
      this.warmup = warmup;
      this.runsMs = runsMs;
      this.latency = Metrics.latency(runsMs);
      this.peakMemoryBytes = peakMemoryBytes;
      this.outputs = Collections.unmodifiableList(outputs);
    }
  }

  /** One image at one resolution, milliseconds, from the methods' medians. */
  public static final class ImageCost {
    public final String size; // "HxW"
    public final int steps;
    public final boolean guided;
    public final int denoiseCalls; // a step: 2 with guidance and a batch-1 denoiser, else 1
    public final double encodeMs;
    public final double perStepMs;
    public final double decodeMs;
    public final double totalMs;

    ImageCost(String size, int steps, boolean guided, int denoiseCalls, double encodeMs,
        double perStepMs, double decodeMs) {
      this.size = size;
      this.steps = steps;
      this.guided = guided;
      this.denoiseCalls = denoiseCalls;
      this.encodeMs = encodeMs;
      this.perStepMs = perStepMs;
      this.decodeMs = decodeMs;
      this.totalMs = encodeMs + steps * perStepMs + decodeMs;
    }
  }

  /** Every method's figures, in the manifest's order, and the image cost per resolution. */
  public static final class Result {
    public final int steps;
    public final double guidance;
    public final Map<String, MethodTiming> methods;
    public final Map<String, ImageCost> images;

    Result(int steps, double guidance, Map<String, MethodTiming> methods,
        Map<String, ImageCost> images) {
      this.steps = steps;
      this.guidance = guidance;
      this.methods = Collections.unmodifiableMap(methods);
      this.images = Collections.unmodifiableMap(images);
    }

    /**
     * The results JSON's "methods" object: every method, the keys of a denoiser's "forward"
     * entry. memorySource names how peakBytes measured; etdump is the one ETDump of all the
     * runs (or null), named by every method.
     */
    public Map<String, Object> methodsJson(String memorySource, String etdump) {
      Map<String, Object> json = new LinkedHashMap<>();
      for (MethodTiming method : methods.values()) {
        List<Object> latencies = new ArrayList<>();
        for (double ms : method.runsMs) {
          latencies.add(ms);
        }
        Map<String, Object> entry = new LinkedHashMap<>();
        entry.put(ResultsKeys.METHOD_WARMUP, method.warmup);
        entry.put(ResultsKeys.METHOD_LATENCIES_MS, latencies);
        entry.put(ResultsKeys.METHOD_LOAD_MS, method.loadMs);
        entry.put(ResultsKeys.METHOD_PEAK_MEMORY_BYTES, method.peakMemoryBytes);
        entry.put(ResultsKeys.METHOD_MEMORY_SOURCE, memorySource);
        entry.put(ResultsKeys.METHOD_ETDUMP, etdump);
        json.put(method.name, entry);
      }
      return json;
    }

    /** The results JSON's "pipeline" object: the defaults the image cost assumes, and it. */
    public Map<String, Object> pipelineJson() {
      Map<String, Object> sizes = new LinkedHashMap<>();
      for (ImageCost image : images.values()) {
        Map<String, Object> entry = new LinkedHashMap<>();
        entry.put(ResultsKeys.IMAGE_ENCODE, image.encodeMs);
        entry.put(ResultsKeys.IMAGE_PER_STEP, image.perStepMs);
        entry.put(ResultsKeys.IMAGE_DECODE, image.decodeMs);
        entry.put(ResultsKeys.IMAGE_TOTAL, image.totalMs);
        sizes.put(image.size, entry);
      }
      Map<String, Object> json = new LinkedHashMap<>();
      json.put(ResultsKeys.PIPELINE_STEPS, steps);
      json.put(ResultsKeys.PIPELINE_GUIDANCE, guidance);
      json.put(ResultsKeys.PIPELINE_IMAGE_MS, sizes);
      return json;
    }

    /** The text shown on screen: a line per method, a line per image size. */
    public String toScreenText() {
      StringBuilder text = new StringBuilder();
      for (MethodTiming method : methods.values()) {
        double worst = Double.POSITIVE_INFINITY;
        for (DemoReport.OutputCheck check : method.outputs) {
          worst = Math.min(worst, check.psnrDb);
        }
        text.append(String.format(Locale.US,
            "%s: median %.2f ms, min %.2f, p90 %.2f over %d runs (after %d warm-up); load %.1f ms;"
                + " PSNR %.1f dB%n",
            method.name, method.latency.medianMs, method.latency.minMs, method.latency.p90Ms,
            method.latency.runs, method.warmup, method.loadMs, worst));
      }
      for (ImageCost image : images.values()) {
        text.append(String.format(Locale.US,
            "%n" + "one %s image, %d steps%s: %.2f s (encode %.0f ms, %.1f ms a step, decode %.0f ms)",
            image.size, image.steps, image.guided ? " with guidance" : "", image.totalMs / 1000,
            image.encodeMs, image.perStepMs, image.decodeMs));
      }
      return text.toString();
    }
  }

  private final PipelineSpec spec;
  private final MethodRunner runner;
  private Clock clock = System::nanoTime;
  private Loader loader = method -> { };
  private MemoryReader memory = () -> null;
  private Progress progress = text -> { };

  public PipelineBenchmark(PipelineSpec spec, MethodRunner runner) {
    this.spec = spec;
    this.runner = runner;
  }

  public PipelineBenchmark clock(Clock value) {
    clock = value;
    return this;
  }

  public PipelineBenchmark loader(Loader value) {
    loader = value;
    return this;
  }

  public PipelineBenchmark memory(MemoryReader value) {
    memory = value;
    return this;
  }

  public PipelineBenchmark progress(Progress value) {
    progress = value;
    return this;
  }

  /** Every method's test vectors, checked against its spec (name, shape, dtype), in spec order. */
  public static Map<String, TestVectors> loadVectors(ArtifactManifest manifest, PipelineSpec spec)
      throws IOException {
    File file = manifest.fileFor(ArtifactManifest.ROLE_TEST_VECTORS);
    Map<String, SafeTensors.Entry> tensors = SafeTensors.read(file);
    Map<String, TestVectors> vectors = new LinkedHashMap<>();
    for (PipelineSpec.MethodSpec method : spec.methods.values()) {
      vectors.put(method.name, TestVectors.forMethod(tensors, method, file));
    }
    return vectors;
  }

  /**
   * Loads every method (each load timed), then per method: one untimed run whose outputs are
   * compared with the vectors, `warmup` untimed runs, `iters` timed runs, the peak memory.
   */
  public Result run(Map<String, TestVectors> vectors, int warmup, int iters) {
    if (warmup < 0 || iters < 1) {
      throw new DemoException("warm-up runs must be 0 or more and timed runs 1 or more, not "
          + warmup + " and " + iters);
    }
    Map<String, Double> loadMs = new LinkedHashMap<>();
    for (String name : spec.methods.keySet()) {
      progress.show("loading " + name + " ...");
      long start = clock.nanoTime();
      loader.load(name);
      loadMs.put(name, (clock.nanoTime() - start) / 1e6);
    }
    Map<String, MethodTiming> timings = new LinkedHashMap<>();
    Map<String, Double> medians = new LinkedHashMap<>();
    int index = 0;
    for (PipelineSpec.MethodSpec method : spec.methods.values()) {
      index++;
      TestVectors methodVectors = vectors.get(method.name);
      if (methodVectors == null) {
        throw new DemoException("no test vectors for " + method.name + "; re-export the artifact");
      }
      List<HostTensor> inputs = new ArrayList<>();
      for (SafeTensors.Entry entry : methodVectors.inputs) {
        inputs.add(HostTensor.of(entry));
      }
      progress.show(String.format(Locale.US, "%s (%d of %d): checking its outputs, %d warm-up,"
          + " %d timed runs ...", method.name, index, spec.methods.size(), warmup, iters));
      List<DemoReport.OutputCheck> checks =
          compare(method, methodVectors.expectedOutputs, runner.run(method.name, inputs));
      for (int i = 0; i < warmup; i++) {
        runner.run(method.name, inputs);
      }
      double[] runsMs = new double[iters];
      for (int i = 0; i < iters; i++) {
        long start = clock.nanoTime();
        runner.run(method.name, inputs);
        runsMs[i] = (clock.nanoTime() - start) / 1e6;
      }
      MethodTiming timing = new MethodTiming(
          method.name, loadMs.get(method.name), warmup, runsMs, memory.peakBytes(), checks);
      timings.put(method.name, timing);
      medians.put(method.name, timing.latency.medianMs);
    }
    return new Result(spec.defaultSteps, spec.defaultGuidance, timings, imageCosts(spec, medians));
  }

  /**
   * One image per resolution from the methods' median milliseconds, as the host's
   * image_estimate: the prompt encoded once per guidance branch (2 when guidance > 1), a step
   * one denoise call per branch, or one for both when the method's batch holds them, then one
   * decode; total = encode + steps x per step + decode.
   */
  public static Map<String, ImageCost> imageCosts(PipelineSpec spec, Map<String, Double> medianMs) {
    boolean guided = spec.defaultGuidance > 1.0;
    int branches = guided ? 2 : 1;
    // Fixed prompts (no encode_prompt): their embeddings are read, not computed.
    double encode = spec.fixedPrompts != null ? 0.0 : median(medianMs, PipelineSpec.ENCODE_METHOD) * branches;
    Map<String, ImageCost> costs = new LinkedHashMap<>();
    for (int[] size : spec.resolutions) {
      String denoise = PipelineSpec.denoiseMethod(size);
      long batch = spec.method(denoise).inputs.get(0).shape[0];
      int calls = batch == branches ? 1 : branches;
      String label = size[0] + "x" + size[1];
      costs.put(label, new ImageCost(label, spec.defaultSteps, guided, calls, encode,
          median(medianMs, denoise) * calls, median(medianMs, PipelineSpec.decodeMethod(size))));
    }
    return costs;
  }

  private static double median(Map<String, Double> medianMs, String method) {
    Double value = medianMs.get(method);
    if (value == null) {
      throw new DemoException("no timing of " + method + ", which one image needs");
    }
    return value;
  }

  /** The first run's outputs against the method's expected outputs (NaN / inf refused). */
  private static List<DemoReport.OutputCheck> compare(PipelineSpec.MethodSpec method,
      List<SafeTensors.Entry> expected, List<HostTensor> produced) {
    if (produced.size() != expected.size()) {
      throw new DemoException(method.name + " returned " + produced.size()
          + " outputs, the manifest declares " + expected.size());
    }
    List<DemoReport.OutputCheck> checks = new ArrayList<>();
    for (int i = 0; i < expected.size(); i++) {
      HostTensor output = produced.get(i);
      String name = method.name + "." + method.outputs.get(i).name;
      if (output.floats == null) {
        throw new DemoException(name + " came back as int64, not float32; re-export the artifact");
      }
      checks.add(ArtifactCheck.checkOutput(name, expected.get(i).toFloats(), output.floats));
    }
    return checks;
  }
}
