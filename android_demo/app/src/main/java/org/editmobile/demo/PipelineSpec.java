package org.editmobile.demo;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The "pipeline" object of a v2 manifest (edit-mobile export --pipeline): the program's methods
 * and their inputs / outputs, the resolutions it draws at, how to tokenize a prompt, and the
 * sampling defaults. The scheduler's own config is the artifact's scheduler/ folder.
 */
public final class PipelineSpec {
  // BEGIN PIPELINE KEYS -- the "pipeline" fields this app reads (tests/test_demo_apps.py checks
  // them against what edit_mobile.export.pipeline writes).
  public static final String P_METHODS = "methods";
  public static final String P_RESOLUTIONS = "resolutions";
  public static final String P_TEXT = "text";
  public static final String P_DEFAULTS = "defaults";
  public static final String P_LATENT_CHANNELS = "latent_channels";
  public static final String METHOD_INPUTS = "inputs";
  public static final String METHOD_OUTPUTS = "outputs";
  public static final String TEXT_MAX_LENGTH = "max_length";
  public static final String TEXT_PREPROCESSING = "preprocessing";
  public static final String TEXT_NEGATIVE_PROMPT = "negative_prompt";
  public static final String DEFAULTS_STEPS = "steps";
  public static final String DEFAULTS_GUIDANCE = "guidance";
  public static final String ENCODE_METHOD = "encode_prompt";
  public static final String PREPROCESSING_LOWER_STRIP = "lower-strip";
  // END PIPELINE KEYS

  /** One method: its inputs and outputs in call order. */
  public static final class MethodSpec {
    public final String name;
    public final List<ArtifactManifest.TensorSpec> inputs;
    public final List<ArtifactManifest.TensorSpec> outputs;

    MethodSpec(String name, List<ArtifactManifest.TensorSpec> inputs,
        List<ArtifactManifest.TensorSpec> outputs) {
      this.name = name;
      this.inputs = inputs;
      this.outputs = outputs;
    }
  }

  public final Map<String, MethodSpec> methods;
  public final List<int[]> resolutions; // (height, width) pixels
  public final int maxLength;
  public final String preprocessing;
  public final String negativePrompt;
  public final int defaultSteps;
  public final double defaultGuidance;
  public final int latentChannels;

  private PipelineSpec(Map<String, Object> json) {
    Map<String, MethodSpec> byName = new LinkedHashMap<>();
    Map<String, Object> methodsJson = ArtifactManifest.object(json, P_METHODS);
    for (String name : methodsJson.keySet()) {
      Map<String, Object> method = ArtifactManifest.object(methodsJson, name);
      byName.put(name, new MethodSpec(name, ArtifactManifest.specs(method, METHOD_INPUTS),
          ArtifactManifest.specs(method, METHOD_OUTPUTS)));
    }
    methods = Collections.unmodifiableMap(byName);
    List<int[]> sizes = new ArrayList<>();
    for (Object pair : ArtifactManifest.array(json, P_RESOLUTIONS)) {
      List<?> values = pair instanceof List ? (List<?>) pair : Collections.emptyList();
      if (values.size() != 2) {
        throw new DemoException("manifest pipeline.resolutions must hold [height, width] pairs");
      }
      int[] size = {(int) ArtifactManifest.longValue(values.get(0)),
          (int) ArtifactManifest.longValue(values.get(1))};
      for (String method : new String[] {denoiseMethod(size), decodeMethod(size)}) {
        if (!methods.containsKey(method)) {
          throw new DemoException("manifest pipeline has no " + method + " method; re-export");
        }
      }
      sizes.add(size);
    }
    if (sizes.isEmpty() || !methods.containsKey(ENCODE_METHOD)) {
      throw new DemoException("manifest pipeline has no resolution or no " + ENCODE_METHOD);
    }
    resolutions = Collections.unmodifiableList(sizes);
    Map<String, Object> text = ArtifactManifest.object(json, P_TEXT);
    maxLength = (int) ArtifactManifest.longValue(text.get(TEXT_MAX_LENGTH));
    preprocessing = ArtifactManifest.string(text, TEXT_PREPROCESSING);
    negativePrompt = ArtifactManifest.string(text, TEXT_NEGATIVE_PROMPT);
    Map<String, Object> defaults = ArtifactManifest.object(json, P_DEFAULTS);
    defaultSteps = (int) ArtifactManifest.longValue(defaults.get(DEFAULTS_STEPS));
    defaultGuidance = ArtifactManifest.number(defaults, DEFAULTS_GUIDANCE);
    latentChannels = (int) ArtifactManifest.longValue(json.get(P_LATENT_CHANNELS));
  }

  /** The pipeline of a v2 manifest; a denoiser-only (v1) artifact is refused in one line. */
  public static PipelineSpec of(ArtifactManifest manifest) {
    if (manifest.pipeline == null) {
      throw new DemoException("this artifact holds a denoiser alone; export the model with --pipeline"
          + " to make images on the phone");
    }
    return new PipelineSpec(manifest.pipeline);
  }

  public static String denoiseMethod(int[] size) {
    return "denoise_" + size[0] + "x" + size[1];
  }

  public static String decodeMethod(int[] size) {
    return "decode_" + size[0] + "x" + size[1];
  }

  public MethodSpec method(String name) {
    MethodSpec spec = methods.get(name);
    if (spec == null) {
      throw new DemoException("the artifact has no " + name + " method");
    }
    return spec;
  }

  /** The prompt as the exporter's text encoder read it (PixArtSigmaPipeline without cleaning). */
  public String preprocess(String prompt) {
    if (PREPROCESSING_LOWER_STRIP.equals(preprocessing)) {
      return prompt.toLowerCase(java.util.Locale.ROOT).trim();
    }
    throw new DemoException("prompt preprocessing '" + preprocessing + "' is not implemented");
  }
}
