package org.editmobile.demo;

import java.io.File;
import java.io.IOException;
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
  // BEGIN PIPELINE KEYS -- the "pipeline" fields this app reads
  // (tests/test_pipeline_artifact.py checks them against what edit_mobile.export.pipeline writes;
  // TOKENIZER_ keys are those of an entry of pipeline.text.tokenizers).
  public static final String P_METHODS = "methods";
  public static final String P_RESOLUTIONS = "resolutions";
  public static final String P_TEXT = "text";
  public static final String P_DEFAULTS = "defaults";
  public static final String P_LATENT_CHANNELS = "latent_channels";
  public static final String METHOD_INPUTS = "inputs";
  public static final String METHOD_OUTPUTS = "outputs";
  public static final String TEXT_TOKENIZERS = "tokenizers";
  public static final String TEXT_NEGATIVE_PROMPT = "negative_prompt";
  // Older artifacts describe their one tokenizer with fields of pipeline.text itself.
  public static final String TEXT_TOKENIZER = "tokenizer";
  public static final String TEXT_MAX_LENGTH = "max_length";
  public static final String TEXT_PREPROCESSING = "preprocessing";
  public static final String TOKENIZER_FILES = "files";
  public static final String TOKENIZER_MAX_LENGTH = "max_length";
  public static final String TOKENIZER_INPUT_IDS = "input_ids";
  public static final String TOKENIZER_ATTENTION_MASK = "attention_mask";
  public static final String TOKENIZER_PREPROCESSING = "preprocessing";
  // The encode_prompt inputs an older artifact's one tokenizer fills.
  public static final String OLDER_INPUT_IDS = "input_ids";
  public static final String OLDER_ATTENTION_MASK = "attention_mask";
  public static final String DEFAULTS_STEPS = "steps";
  public static final String DEFAULTS_GUIDANCE = "guidance";
  public static final String ENCODE_METHOD = "encode_prompt";
  // pipeline.text's entry of an artifact exported with --fixed-prompts (no text encoder), and
  // its fields: the file role of the embeddings, the prompts (row i + 1), the negative prompt's
  // row and encode_prompt's output names the rows hold.
  public static final String FIXED_PROMPTS_TEXT = "precomputed";
  public static final String FIXED_FILE = "file";
  public static final String FIXED_PROMPTS = "prompts";
  public static final String FIXED_NEGATIVE_ROW = "negative_row";
  public static final String FIXED_OUTPUTS = "outputs";
  public static final String PREPROCESSING_LOWER_STRIP = "lower-strip";
  public static final String PREPROCESSING_NONE = "none";
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

  /**
   * One tokenizer and the encode_prompt inputs it fills (an entry of pipeline.text.tokenizers):
   * ids padded to maxLength, truncated, special tokens added, after its preprocessing.
   */
  public static final class TokenizerSpec {
    public final String files; // its "files" role (and folder) in the artifact
    public final int maxLength;
    public final String inputIds; // the encode_prompt input its ids fill
    public final String attentionMask; // the input its mask fills; null: the encoder takes none
    public final String preprocessing;

    TokenizerSpec(String files, int maxLength, String inputIds, String attentionMask,
        String preprocessing) {
      if (!PREPROCESSING_LOWER_STRIP.equals(preprocessing)
          && !PREPROCESSING_NONE.equals(preprocessing)) {
        throw new DemoException("prompt preprocessing '" + preprocessing + "' of tokenizer "
            + files + " is not implemented (" + PREPROCESSING_NONE + ", "
            + PREPROCESSING_LOWER_STRIP + ")");
      }
      if (maxLength < 1) {
        throw new DemoException("tokenizer " + files + " max_length must be at least 1, not "
            + maxLength + "; re-export the artifact");
      }
      this.files = files;
      this.maxLength = maxLength;
      this.inputIds = inputIds;
      this.attentionMask = attentionMask;
      this.preprocessing = preprocessing;
    }

    /**
     * The prompt as the exporter's text encoder read it ("lower-strip": PixArtSigmaPipeline
     * without caption cleaning; "none": as typed, as StableDiffusion3Pipeline).
     */
    public String preprocess(String prompt) {
      return PREPROCESSING_LOWER_STRIP.equals(preprocessing)
          ? prompt.toLowerCase(java.util.Locale.ROOT).trim()
          : prompt;
    }
  }

  public final Map<String, MethodSpec> methods;
  public final List<int[]> resolutions; // (height, width) pixels
  /** The tokenizers, in the manifest's order. */
  public final List<TokenizerSpec> tokenizers;
  /** The prompts an artifact without a text encoder can draw; null: any prompt. */
  public final List<String> fixedPrompts;
  public final String fixedPromptsFile; // files role of their embeddings; null with a text encoder
  public final int fixedNegativeRow;
  /** encode_prompt's output names in order (the fixed prompts' embeddings hold the same). */
  public final List<String> encodeOutputs;
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
    if (sizes.isEmpty()) {
      throw new DemoException("manifest pipeline has no resolution; re-export the artifact");
    }
    resolutions = Collections.unmodifiableList(sizes);
    Map<String, Object> text = ArtifactManifest.object(json, P_TEXT);
    if (text.containsKey(FIXED_PROMPTS_TEXT)) {
      Map<String, Object> fixed = ArtifactManifest.object(text, FIXED_PROMPTS_TEXT);
      fixedPrompts = strings(fixed, FIXED_PROMPTS);
      fixedPromptsFile = ArtifactManifest.string(fixed, FIXED_FILE);
      fixedNegativeRow = (int) ArtifactManifest.longValue(fixed.get(FIXED_NEGATIVE_ROW));
      encodeOutputs = strings(fixed, FIXED_OUTPUTS);
      tokenizers = Collections.emptyList();
    } else {
      if (!methods.containsKey(ENCODE_METHOD)) {
        throw new DemoException("manifest pipeline has no " + ENCODE_METHOD + "; re-export the artifact");
      }
      tokenizers = readTokenizers(text, method(ENCODE_METHOD));
      List<String> outputs = new ArrayList<>();
      for (ArtifactManifest.TensorSpec output : method(ENCODE_METHOD).outputs) {
        outputs.add(output.name);
      }
      encodeOutputs = Collections.unmodifiableList(outputs);
      fixedPrompts = null;
      fixedPromptsFile = null;
      fixedNegativeRow = -1;
    }
    negativePrompt = ArtifactManifest.string(text, TEXT_NEGATIVE_PROMPT);
    Map<String, Object> defaults = ArtifactManifest.object(json, P_DEFAULTS);
    defaultSteps = (int) ArtifactManifest.longValue(defaults.get(DEFAULTS_STEPS));
    defaultGuidance = ArtifactManifest.number(defaults, DEFAULTS_GUIDANCE);
    latentChannels = (int) ArtifactManifest.longValue(json.get(P_LATENT_CHANNELS));
  }

  /**
   * pipeline.text.tokenizers, or the one tokenizer of an older manifest's text fields; every
   * encode_prompt input must be filled by one of them, (1, max_length) int64.
   */
  private static List<TokenizerSpec> readTokenizers(Map<String, Object> text, MethodSpec encode) {
    List<TokenizerSpec> specs = new ArrayList<>();
    if (text.get(TEXT_TOKENIZERS) != null) {
      for (Object item : ArtifactManifest.array(text, TEXT_TOKENIZERS)) {
        if (!(item instanceof Map)) {
          throw new DemoException("manifest pipeline.text.tokenizers must hold objects");
        }
        @SuppressWarnings("unchecked")
        Map<String, Object> entry = (Map<String, Object>) item;
        Object mask = entry.get(TOKENIZER_ATTENTION_MASK);
        specs.add(new TokenizerSpec(ArtifactManifest.string(entry, TOKENIZER_FILES),
            (int) ArtifactManifest.longValue(ArtifactManifest.number(entry, TOKENIZER_MAX_LENGTH)),
            ArtifactManifest.string(entry, TOKENIZER_INPUT_IDS),
            mask == null ? null : ArtifactManifest.string(entry, TOKENIZER_ATTENTION_MASK),
            optionalString(entry, TOKENIZER_PREPROCESSING, PREPROCESSING_NONE)));
      }
    } else {
      specs.add(new TokenizerSpec(ArtifactManifest.string(text, TEXT_TOKENIZER),
          (int) ArtifactManifest.longValue(ArtifactManifest.number(text, TEXT_MAX_LENGTH)),
          OLDER_INPUT_IDS,
          OLDER_ATTENTION_MASK, optionalString(text, TEXT_PREPROCESSING, PREPROCESSING_NONE)));
    }
    if (specs.isEmpty()) {
      throw new DemoException("manifest pipeline.text.tokenizers is empty; re-export the artifact");
    }
    for (ArtifactManifest.TensorSpec input : encode.inputs) {
      TokenizerSpec giver = null;
      for (TokenizerSpec spec : specs) {
        if (input.name.equals(spec.inputIds) || input.name.equals(spec.attentionMask)) {
          giver = spec;
        }
      }
      if (giver == null) {
        throw new DemoException(ENCODE_METHOD + " takes " + input.name
            + ", which no tokenizer of the manifest gives; re-export the artifact");
      }
      if (input.shape.length != 2 || input.shape[0] != 1 || input.shape[1] != giver.maxLength) {
        throw new DemoException(ENCODE_METHOD + " takes " + input.name + " of shape "
            + java.util.Arrays.toString(input.shape) + ", not [1, " + giver.maxLength
            + "] as tokenizer " + giver.files + " gives; re-export the artifact");
      }
    }
    return Collections.unmodifiableList(specs);
  }

  private static List<String> strings(Map<String, Object> map, String key) {
    List<String> values = new ArrayList<>();
    for (Object item : ArtifactManifest.array(map, key)) {
      if (!(item instanceof String)) {
        throw new DemoException("manifest pipeline.text." + FIXED_PROMPTS_TEXT + "." + key
            + " must hold strings; re-export the artifact");
      }
      values.add((String) item);
    }
    if (values.isEmpty()) {
      throw new DemoException("manifest pipeline.text." + FIXED_PROMPTS_TEXT + "." + key + " is empty");
    }
    return Collections.unmodifiableList(values);
  }

  private static String optionalString(Map<String, Object> map, String key, String absent) {
    return map.get(key) == null ? absent : ArtifactManifest.string(map, key);
  }

  /** One TextTokenizer a tokenizer entry, from the folder of its files role. */
  public List<TextTokenizer> loadTokenizers(ArtifactManifest manifest) throws IOException {
    List<TextTokenizer> loaded = new ArrayList<>();
    for (TokenizerSpec tokenizer : tokenizers) {
      File folder = manifest.fileFor(tokenizer.files);
      loaded.add(TextTokenizer.load(folder));
    }
    return loaded;
  }

  /**
   * The fixed prompts' embeddings by encode_prompt output name, (prompts + 1, ...) each; null
   * for an artifact with a text encoder.
   */
  public Map<String, SafeTensors.Entry> loadFixedPrompts(ArtifactManifest manifest) throws IOException {
    if (fixedPrompts == null) {
      return null;
    }
    Map<String, SafeTensors.Entry> rows = SafeTensors.read(manifest.fileFor(fixedPromptsFile));
    for (String name : encodeOutputs) {
      SafeTensors.Entry entry = rows.get(name);
      if (entry == null || entry.shape.length == 0 || entry.shape[0] != fixedPrompts.size() + 1
          || !"F32".equals(entry.dtype)) {
        throw new DemoException(fixedPromptsFile + " does not hold " + (fixedPrompts.size() + 1)
            + " float32 rows of " + name + "; re-export the artifact");
      }
    }
    return rows;
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
}
