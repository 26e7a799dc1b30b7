import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.editmobile.demo.ArtifactCheck;
import org.editmobile.demo.ArtifactManifest;
import org.editmobile.demo.DemoException;
import org.editmobile.demo.DemoReport;
import org.editmobile.demo.DiffusionScheduler;
import org.editmobile.demo.Guidance;
import org.editmobile.demo.ImageConversion;
import org.editmobile.demo.Json;
import org.editmobile.demo.LatentNoise;
import org.editmobile.demo.PipelineBenchmark;
import org.editmobile.demo.PipelineSpec;
import org.editmobile.demo.TestVectors;
import org.editmobile.demo.TextTokenizer;
import org.editmobile.demo.TextToImage;

/**
 * Desktop-JVM driver of the app's prompt-to-pixels logic, used by
 * tests/test_app_pipeline_logic.py (and its pipeline benchmark, by tests/test_demo_apps.py). Each sub-command reads its inputs from files (JSON), prints
 * one JSON object on stdout, and exits 0; a refusal prints {"error": one line} and exits 3,
 * anything else (a bug) exits 4.
 *
 * <pre>
 * tokenize FOLDER TEXTS.json [MAX_LENGTH]   ids and attention masks of each text
 * schedule CONFIG.json STEPS,...            timesteps and sigmas after set_timesteps(STEPS)
 * sample CONFIG.json STEPS,... LATENT.json  a sampling loop whose "model" is
 *                                           0.3 * sample + sin(t / 100): every step's sample
 * guidance REQUEST.json                     {"uncond", "cond", "scale"}: both layouts
 * noise SEED COUNT                          LatentNoise's first COUNT Gaussians of SEED
 * image REQUEST.json                        {"shape": [N, 3, H, W], "values"}: pixels
 * generate ART_DIR CALLS.safetensors REQUEST.json   TextToImage on a pipeline artifact, its
 *                                           program replayed from the Python runtime's recorded
 *                                           calls (ReplayRunner, a test double for ExecuTorch):
 *                                           {"rgb", "calls", "worst_input_error"}
 * benchmark ART_DIR REQUEST.json           PipelineBenchmark on a pipeline artifact, its
 *                                           program a CountingRunner (a test double for
 *                                           ExecuTorch and the clock); REQUEST: {"warmup",
 *                                           "iters", "load_ms", "ms": {method: [ms, ...]}}:
 *                                           {"calls", "loads", "methods", "pipeline", "psnr",
 *                                           "screen"}
 * </pre>
 */
public final class PipelineCheck {
  public static void main(String[] args) {
    try {
      System.out.println(run(args));
    } catch (Throwable err) {
      System.out.println("{\"error\": " + Json.quote(DemoException.describe(err)) + "}");
      System.exit(err instanceof DemoException ? 3 : 4);
    }
  }

  private static String run(String[] args) throws Exception {
    switch (args[0]) {
      case "tokenize":
        return tokenize(args);
      case "schedule":
        return schedule(args);
      case "sample":
        return sample(args);
      case "guidance":
        return guidance(args);
      case "noise":
        return noise(args);
      case "image":
        return image(args);
      case "generate":
        return generate(args);
      case "benchmark":
        return benchmark(args);
      default:
        throw new IllegalArgumentException("unknown sub-command " + args[0]);
    }
  }

  private static String tokenize(String[] args) throws Exception {
    TextTokenizer tokenizer = TextTokenizer.load(new File(args[1]));
    int maxLength = args.length > 3 ? Integer.parseInt(args[3]) : tokenizer.modelMaxLength();
    StringBuilder ids = new StringBuilder();
    StringBuilder masks = new StringBuilder();
    for (Object text : (List<?>) Json.parse(read(args[2]))) {
      TextTokenizer.Encoding encoding = tokenizer.encode((String) text, maxLength);
      ids.append(ids.length() == 0 ? "" : ", ").append(ints(encoding.ids));
      masks.append(masks.length() == 0 ? "" : ", ").append(ints(encoding.attentionMask));
    }
    return "{\"max_length\": " + maxLength + ", \"ids\": [" + ids + "], \"mask\": [" + masks + "]}";
  }

  /** REQUEST: {"prompt", "steps", "guidance", "seed", "size": [H, W]}. */
  private static String generate(String[] args) throws Exception {
    ArtifactManifest manifest = ArtifactManifest.read(new File(args[1]));
    PipelineSpec spec = PipelineSpec.of(manifest);
    List<TextTokenizer> tokenizers = spec.loadTokenizers(manifest);
    DiffusionScheduler scheduler =
        DiffusionScheduler.load(manifest.fileFor(ArtifactManifest.ROLE_SCHEDULER));
    ReplayRunner runner = new ReplayRunner(new File(args[2]));
    Map<String, Object> request = Json.parseObject(read(args[3]));
    List<?> size = (List<?>) request.get("size");
    TextToImage.Result result = new TextToImage(spec, tokenizers, spec.loadFixedPrompts(manifest),
        scheduler, runner).generate(
        (String) request.get("prompt"), ((Double) request.get("steps")).intValue(),
        (Double) request.get("guidance"), ((Double) request.get("seed")).longValue(),
        new int[] {((Double) size.get(0)).intValue(), ((Double) size.get(1)).intValue()}, null);
    StringBuilder rgb = new StringBuilder();
    for (byte value : result.rgb) {
      rgb.append(rgb.length() == 0 ? "" : ",").append(value & 0xFF);
    }
    StringBuilder errors = new StringBuilder();
    for (Map.Entry<String, Double> entry : runner.worstInputError.entrySet()) {
      errors.append(errors.length() == 0 ? "" : ", ").append(Json.quote(entry.getKey()))
          .append(": ").append(entry.getValue());
    }
    return "{\"calls\": " + runner.calls() + ", \"recorded_calls\": " + runner.recordedCalls()
        + ", \"worst_input_error\": {" + errors + "}, \"rgb\": [" + rgb + "]}";
  }

  /**
   * The benchmark as on the phone (files verified, every method's vectors read and checked),
   * its runner and clock the counting test double; "methods" and "pipeline" are the blocks the
   * app writes into its results JSON.
   */
  private static String benchmark(String[] args) throws Exception {
    ArtifactCheck check = ArtifactCheck.prepare(new File(args[1]));
    PipelineSpec spec = PipelineSpec.of(check.manifest);
    Map<String, TestVectors> vectors = PipelineBenchmark.loadVectors(check.manifest, spec);
    Map<String, Object> request = Json.parseObject(read(args[2]));
    Map<String, double[]> script = new LinkedHashMap<>();
    for (Map.Entry<?, ?> entry : ((Map<?, ?>) request.get("ms")).entrySet()) {
      script.put((String) entry.getKey(), numbers((List<?>) entry.getValue()));
    }
    CountingRunner runner =
        new CountingRunner(vectors, script, (Double) request.get("load_ms"));
    List<String> shown = new ArrayList<>();
    PipelineBenchmark.Result result = new PipelineBenchmark(spec, runner)
        .clock(runner).loader(runner).memory(runner).progress(shown::add)
        .run(vectors, ((Double) request.get("warmup")).intValue(),
            ((Double) request.get("iters")).intValue());
    Map<String, Object> psnr = new LinkedHashMap<>();
    for (PipelineBenchmark.MethodTiming method : result.methods.values()) {
      List<Object> values = new ArrayList<>();
      for (DemoReport.OutputCheck output : method.outputs) {
        values.add(output.psnrDb);
      }
      psnr.put(method.name, values);
    }
    Map<String, Object> answer = new LinkedHashMap<>();
    answer.put("calls", new LinkedHashMap<String, Object>(runner.calls));
    answer.put("loads", new LinkedHashMap<String, Object>(runner.loads));
    answer.put("files_verified", new ArrayList<Object>(check.filesVerified));
    answer.put("methods", result.methodsJson("VmHWM", "/sdcard/fake/results.etdp"));
    answer.put("pipeline", result.pipelineJson());
    answer.put("psnr", psnr);
    answer.put("progress", new ArrayList<Object>(shown));
    answer.put("screen", result.toScreenText());
    return Json.write(answer);
  }

  /** For each step count of STEPS,STEPS,...: the timesteps and sigmas set_timesteps makes. */
  private static String schedule(String[] args) throws Exception {
    DiffusionScheduler scheduler = DiffusionScheduler.load(new File(args[1]));
    StringBuilder runs = new StringBuilder();
    for (String steps : args[2].split(",")) {
      scheduler.setTimesteps(Integer.parseInt(steps));
      runs.append(runs.length() == 0 ? "" : ", ")
          .append("{\"steps\": ").append(steps)
          .append(", \"timesteps\": ").append(doubles(scheduler.timesteps()))
          .append(", \"sigmas\": ").append(doubles(scheduler.sigmas())).append('}');
    }
    return "{\"runs\": [" + runs + "]}";
  }

  /**
   * For each step count: a pipeline's loop with a made-up deterministic model, 0.3 * sample +
   * sin(t / 100), in place of the denoiser; every step's sample.
   */
  private static String sample(String[] args) throws Exception {
    DiffusionScheduler scheduler = DiffusionScheduler.load(new File(args[1]));
    double[] initial = numbers((List<?>) Json.parse(read(args[3])));
    StringBuilder runs = new StringBuilder();
    for (String steps : args[2].split(",")) {
      scheduler.setTimesteps(Integer.parseInt(steps));
      double[] latents = initial.clone();
      StringBuilder samples = new StringBuilder();
      for (double t : scheduler.timesteps()) {
        double[] modelOutput = new double[latents.length];
        for (int i = 0; i < latents.length; i++) {
          modelOutput[i] = 0.3 * latents[i] + Math.sin(t / 100);
        }
        latents = scheduler.step(modelOutput, t, latents);
        samples.append(samples.length() == 0 ? "" : ", ").append(doubles(latents));
      }
      runs.append(runs.length() == 0 ? "" : ", ")
          .append("{\"steps\": ").append(steps)
          .append(", \"samples\": [").append(samples).append("]}");
    }
    return "{\"runs\": [" + runs + "]}";
  }

  private static String guidance(String[] args) throws Exception {
    Map<String, Object> request = Json.parseObject(read(args[1]));
    float[] uncond = floats((List<?>) request.get("uncond"));
    float[] cond = floats((List<?>) request.get("cond"));
    double scale = (Double) request.get("scale");
    float[] batched = new float[uncond.length + cond.length];
    System.arraycopy(uncond, 0, batched, 0, uncond.length);
    System.arraycopy(cond, 0, batched, uncond.length, cond.length);
    int channels = ((Double) request.get("channels")).intValue();
    return "{\"combined\": " + doubles(Guidance.combine(uncond, cond, scale))
        + ", \"batched\": " + doubles(Guidance.combineBatched(batched, scale))
        + ", \"noise_half\": "
        + doubles(Guidance.noiseHalf(Guidance.combine(uncond, cond, scale), 1, channels))
        + "}";
  }

  private static String noise(String[] args) {
    return "{\"values\": "
        + doubles(LatentNoise.gaussians(Long.parseLong(args[1]), Integer.parseInt(args[2]))) + "}";
  }

  private static String image(String[] args) throws Exception {
    Map<String, Object> request = Json.parsePythonObject(read(args[1])); // NaN cases too
    List<?> shape = (List<?>) request.get("shape");
    int batch = ((Double) shape.get(0)).intValue();
    int channels = ((Double) shape.get(1)).intValue();
    int height = ((Double) shape.get(2)).intValue();
    int width = ((Double) shape.get(3)).intValue();
    float[] values = floats((List<?>) request.get("values"));
    StringBuilder rgb = new StringBuilder();
    StringBuilder argb = new StringBuilder();
    for (int n = 0; n < batch; n++) {
      byte[] bytes = ImageConversion.toRgbBytes(values, n, channels, height, width);
      int[] pixels = ImageConversion.toArgbPixels(values, n, channels, height, width);
      int[] unsigned = new int[bytes.length];
      for (int i = 0; i < bytes.length; i++) {
        unsigned[i] = bytes[i] & 0xFF;
      }
      rgb.append(n == 0 ? "" : ", ").append(ints(unsigned));
      argb.append(n == 0 ? "" : ", ").append(ints(pixels));
    }
    return "{\"rgb\": [" + rgb + "], \"argb\": [" + argb + "]}";
  }

  private static String read(String path) throws Exception {
    return new String(Files.readAllBytes(new File(path).toPath()), StandardCharsets.UTF_8);
  }

  private static double[] numbers(List<?> values) {
    double[] out = new double[values.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = (Double) values.get(i);
    }
    return out;
  }

  private static float[] floats(List<?> values) {
    float[] out = new float[values.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = ((Double) values.get(i)).floatValue();
    }
    return out;
  }

  private static String ints(int[] values) {
    StringBuilder out = new StringBuilder("[");
    for (int i = 0; i < values.length; i++) {
      out.append(i == 0 ? "" : ", ").append(values[i]);
    }
    return out.append(']').toString();
  }

  /** Full precision: Double.toString reads back as the same double. */
  private static String doubles(double[] values) {
    StringBuilder out = new StringBuilder("[");
    for (int i = 0; i < values.length; i++) {
      out.append(i == 0 ? "" : ", ").append(values[i]);
    }
    return out.append(']').toString();
  }
}
