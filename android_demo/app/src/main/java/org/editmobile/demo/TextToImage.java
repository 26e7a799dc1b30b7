package org.editmobile.demo;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A pipeline artifact from prompt to pixels, as edit-mobile generate --noise portable does it:
 * tokenize (each of the artifact's tokenizers fills its encode_prompt inputs: one T5 for PixArt,
 * CLIP-L, CLIP-G and T5 for SD3), encode_prompt (and the negative prompt for classifier-free guidance), the seeded
 * latent noise, one denoise call per scheduler step (both guidance branches in one call when the
 * method takes a batch of 2), guidance, PixArt's noise half, the scheduler's step, decode.
 * The program's methods are called through a MethodRunner, so this runs unchanged on a phone
 * (ExecuTorch) and on the JVM (a replay of the Python runtime's calls).
 */
public final class TextToImage {
  /** Called after every denoising step. */
  public interface Progress {
    void step(int done, int total);
  }

  /** The image and where the time went. */
  public static final class Result {
    public final byte[] rgb; // H x W x 3
    public final int height;
    public final int width;
    public final int steps;
    public final long encodeNanos;
    public final long denoiseNanos;
    public final long decodeNanos;

    Result(byte[] rgb, int height, int width, int steps, long encodeNanos, long denoiseNanos,
        long decodeNanos) {
      this.rgb = rgb;
      this.height = height;
      this.width = width;
      this.steps = steps;
      this.encodeNanos = encodeNanos;
      this.denoiseNanos = denoiseNanos;
      this.decodeNanos = decodeNanos;
    }
  }

  private final PipelineSpec spec;
  private final List<TextTokenizer> tokenizers;
  private final Map<String, SafeTensors.Entry> fixedRows; // null: prompts go through encode_prompt
  private final DiffusionScheduler scheduler;
  private final MethodRunner runner;

  /** tokenizers: one a spec.tokenizers entry, in its order (PipelineSpec.loadTokenizers). */
  public TextToImage(PipelineSpec spec, List<TextTokenizer> tokenizers,
      DiffusionScheduler scheduler, MethodRunner runner) {
    this(spec, tokenizers, null, scheduler, runner);
  }

  /** fixedRows: PipelineSpec.loadFixedPrompts, for an artifact exported with --fixed-prompts. */
  public TextToImage(PipelineSpec spec, List<TextTokenizer> tokenizers,
      Map<String, SafeTensors.Entry> fixedRows, DiffusionScheduler scheduler, MethodRunner runner) {
    if (tokenizers.size() != spec.tokenizers.size()) {
      throw new IllegalArgumentException(spec.tokenizers.size() + " tokenizers described, "
          + tokenizers.size() + " given");
    }
    if ((fixedRows == null) != (spec.fixedPrompts == null)) {
      throw new IllegalArgumentException("fixed prompts' embeddings must be given exactly when the"
          + " artifact has them");
    }
    this.spec = spec;
    this.tokenizers = tokenizers;
    this.fixedRows = fixedRows;
    this.scheduler = scheduler;
    this.runner = runner;
  }

  public Result generate(String prompt, int steps, double guidance, long seed, int[] size,
      Progress progress) {
    if (steps < 1) {
      throw new DemoException("steps must be at least 1, not " + steps);
    }
    checkSize(size);
    long start = System.nanoTime();
    boolean guided = guidance > 1.0;
    List<HostTensor> positive = encode(prompt);
    List<List<HostTensor>> branches = guided
        ? Arrays.asList(encode(spec.negativePrompt), positive)
        : Collections.singletonList(positive);
    long encoded = System.nanoTime();
    PipelineSpec.MethodSpec denoise = spec.method(PipelineSpec.denoiseMethod(size));
    long[] latentShape = denoise.inputs.get(0).shape.clone(); // (B, C, h, w)
    latentShape[0] = 1;
    int count = (int) numel(latentShape);
    scheduler.setTimesteps(steps);
    double[] latents = LatentNoise.gaussians(seed, count);
    for (int i = 0; i < count; i++) {
      latents[i] *= scheduler.initNoiseSigma();
    }
    double[] timesteps = scheduler.timesteps();
    for (int step = 0; step < timesteps.length; step++) {
      double[] prediction = predict(denoise, branches, toFloats(latents), latentShape,
          timesteps[step], guided ? guidance : 1.0);
      if (prediction.length == 2 * count) {
        prediction = Guidance.noiseHalf(prediction, 1, spec.latentChannels);
      }
      latents = scheduler.step(prediction, timesteps[step], latents);
      if (progress != null) {
        progress.step(step + 1, timesteps.length);
      }
    }
    long denoised = System.nanoTime();
    List<HostTensor> image = runner.run(PipelineSpec.decodeMethod(size),
        Collections.singletonList(HostTensor.ofFloats(toFloats(latents), latentShape)));
    byte[] rgb = ImageConversion.unitToRgbBytes(image.get(0).floats, size[0], size[1]);
    long decoded = System.nanoTime();
    return new Result(rgb, size[0], size[1], timesteps.length, encoded - start, denoised - encoded,
        decoded - denoised);
  }

  /**
   * encode_prompt's outputs for one prompt, in its output order: every tokenizer's ids (and mask,
   * where the encoder takes one) by input name, passed in the order the method lists its inputs.
   */
  List<HostTensor> encode(String prompt) {
    if (fixedRows != null) {
      return fixedRow(prompt);
    }
    Map<String, HostTensor> named = new HashMap<>();
    for (int i = 0; i < tokenizers.size(); i++) {
      PipelineSpec.TokenizerSpec described = spec.tokenizers.get(i);
      TextTokenizer.Encoding encoding =
          tokenizers.get(i).encode(described.preprocess(prompt), described.maxLength);
      long length = encoding.ids.length;
      named.put(described.inputIds, HostTensor.ofInts(encoding.ids, 1, length));
      if (described.attentionMask != null) {
        named.put(described.attentionMask, HostTensor.ofInts(encoding.attentionMask, 1, length));
      }
    }
    List<HostTensor> inputs = new ArrayList<>();
    for (ArtifactManifest.TensorSpec input : spec.method(PipelineSpec.ENCODE_METHOD).inputs) {
      HostTensor tensor = named.get(input.name);
      if (tensor == null) {
        throw new DemoException(PipelineSpec.ENCODE_METHOD + " takes " + input.name
            + ", which no tokenizer of the artifact gives; re-export the artifact");
      }
      inputs.add(tensor);
    }
    return runner.run(PipelineSpec.ENCODE_METHOD, inputs);
  }

  /**
   * The fixed prompt's row of each embedding (the negative prompt's row for it, unless it is one
   * of the prompts), as Python's PipelineArtifact.encode picks it.
   */
  private List<HostTensor> fixedRow(String prompt) {
    int index = spec.fixedPrompts.indexOf(prompt);
    if (index < 0 && !prompt.equals(spec.negativePrompt)) {
      throw new DemoException("this artifact has no text encoder, only the embeddings of "
          + spec.fixedPrompts.size() + " fixed prompts; pick one of them: " + spec.fixedPrompts);
    }
    int row = index < 0 ? spec.fixedNegativeRow : index + 1;
    List<HostTensor> outputs = new ArrayList<>();
    for (String name : spec.encodeOutputs) {
      SafeTensors.Entry entry = fixedRows.get(name);
      float[] all = entry.toFloats();
      int width = all.length / (int) entry.shape[0];
      long[] shape = entry.shape.clone();
      shape[0] = 1;
      outputs.add(HostTensor.ofFloats(Arrays.copyOfRange(all, row * width, (row + 1) * width), shape));
    }
    return outputs;
  }

  /**
   * The guided noise prediction (in double), from one call per branch or one call of both when
   * the method takes a batch of 2 (unconditional first, as the pipelines concatenate them).
   */
  private double[] predict(PipelineSpec.MethodSpec denoise, List<List<HostTensor>> branches,
      float[] latents, long[] latentShape, double timestep, double guidance) {
    int batch = (int) denoise.inputs.get(0).shape[0];
    if (batch == branches.size()) {
      float[] both = call(denoise, branches, latents, timestep);
      return branches.size() == 2 ? Guidance.combineBatched(both, guidance) : widen(both);
    }
    if (batch == 1) {
      float[] uncond = call(denoise, branches.subList(0, 1), latents, timestep);
      if (branches.size() == 1) {
        return widen(uncond);
      }
      return Guidance.combine(uncond, call(denoise, branches.subList(1, 2), latents, timestep),
          guidance);
    }
    // A batch-2 method run without guidance: the one branch twice, the first half kept.
    float[] twice = call(denoise, Arrays.asList(branches.get(0), branches.get(0)), latents, timestep);
    return widen(Arrays.copyOf(twice, twice.length / 2));
  }

  /** One denoise call: inputs gathered by the method's input names, batch = branches. */
  private float[] call(PipelineSpec.MethodSpec denoise, List<List<HostTensor>> group,
      float[] latents, double timestep) {
    List<HostTensor> inputs = new ArrayList<>();
    for (ArtifactManifest.TensorSpec input : denoise.inputs) {
      if (input.name.equals("hidden_states")) {
        inputs.add(HostTensor.ofFloats(repeat(latents, group.size()), input.shape));
      } else if (input.name.equals("timestep")) {
        float[] values = new float[group.size()];
        Arrays.fill(values, (float) timestep);
        inputs.add(HostTensor.ofFloats(values, input.shape));
      } else {
        int index = spec.encodeOutputs.indexOf(input.name);
        if (index < 0) {
          throw new DemoException("the denoiser takes " + input.name
              + ", which encode_prompt does not give");
        }
        List<float[]> parts = new ArrayList<>();
        for (List<HostTensor> branch : group) {
          parts.add(branch.get(index).floats);
        }
        inputs.add(HostTensor.ofFloats(concat(parts), input.shape));
      }
    }
    return runner.run(denoise.name, inputs).get(0).floats;
  }

  private void checkSize(int[] size) {
    for (int[] available : spec.resolutions) {
      if (Arrays.equals(available, size)) {
        return;
      }
    }
    throw new DemoException("the artifact draws at none of " + size[0] + "x" + size[1]
        + "; pick one of its resolutions");
  }

  static long numel(long[] shape) {
    long count = 1;
    for (long dim : shape) {
      count *= dim;
    }
    return count;
  }

  private static float[] toFloats(double[] values) {
    float[] out = new float[values.length];
    for (int i = 0; i < values.length; i++) {
      out[i] = (float) values[i];
    }
    return out;
  }

  private static double[] widen(float[] values) {
    double[] out = new double[values.length];
    for (int i = 0; i < values.length; i++) {
      out[i] = values[i];
    }
    return out;
  }

  private static float[] repeat(float[] values, int times) {
    float[] out = new float[values.length * times];
    for (int i = 0; i < times; i++) {
      System.arraycopy(values, 0, out, i * values.length, values.length);
    }
    return out;
  }

  private static float[] concat(List<float[]> parts) {
    int total = 0;
    for (float[] part : parts) {
      total += part.length;
    }
    float[] out = new float[total];
    int at = 0;
    for (float[] part : parts) {
      System.arraycopy(part, 0, out, at, part.length);
      at += part.length;
    }
    return out;
  }
}
