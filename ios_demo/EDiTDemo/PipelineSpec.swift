import Foundation

/// The "pipeline" object of a v2 manifest (`edit-mobile export --pipeline`), as far as this app
/// draws: the program's methods, the resolutions, the sampling defaults, the scheduler, and how a
/// prompt becomes encode_prompt's outputs: the tokenizers of `pipeline.text.tokenizers` (typed
/// prompts, PromptTokenizer) or, for an artifact exported with `--fixed-prompts`, its own prompts'
/// precomputed embeddings.
enum PipelineKeys {
  // BEGIN PIPELINE KEYS -- the "pipeline" fields this app reads (tests/test_pipeline_artifact.py
  // checks them against what edit_mobile.export.pipeline writes and the Android app reads)
  static let pMethods = "methods"
  static let pResolutions = "resolutions"
  static let pText = "text"
  static let pDefaults = "defaults"
  static let pLatentChannels = "latent_channels"
  static let pScheduler = "scheduler"
  static let schedulerClassName = "class_name"
  static let schedulerConfig = "config"
  static let methodInputs = "inputs"
  static let methodOutputs = "outputs"
  static let textTokenizers = "tokenizers"
  static let textNegativePrompt = "negative_prompt"
  // Older artifacts describe their one tokenizer with fields of pipeline.text itself.
  static let textTokenizer = "tokenizer"
  static let textMaxLength = "max_length"
  static let textPreprocessing = "preprocessing"
  static let tokenizerFiles = "files"
  static let tokenizerMaxLength = "max_length"
  static let tokenizerInputIds = "input_ids"
  static let tokenizerAttentionMask = "attention_mask"
  static let tokenizerPreprocessing = "preprocessing"
  // The encode_prompt inputs an older artifact's one tokenizer fills.
  static let olderInputIds = "input_ids"
  static let olderAttentionMask = "attention_mask"
  static let defaultsSteps = "steps"
  static let defaultsGuidance = "guidance"
  static let encodeMethod = "encode_prompt"
  static let fixedPromptsText = "precomputed"
  static let fixedFile = "file"
  static let fixedPrompts = "prompts"
  static let fixedNegativeRow = "negative_row"
  static let fixedOutputs = "outputs"
  static let preprocessingLowerStrip = "lower-strip"
  static let preprocessingNone = "none"
  // END PIPELINE KEYS
}

struct PipelineSpec {
  private typealias K = PipelineKeys

  struct Method {
    let name: String
    let inputs: [TensorSpec]
    let outputs: [TensorSpec]
  }

  /// One tokenizer and the encode_prompt inputs it fills (an entry of pipeline.text.tokenizers):
  /// ids padded to maxLength, truncated, special tokens added, after its preprocessing.
  struct TokenizerSpec {
    let files: String  // its "files" role (and folder) in the artifact
    let maxLength: Int
    let inputIds: String  // the encode_prompt input its ids fill
    let attentionMask: String?  // the input its mask fills; nil: the encoder takes none (SD3)
    let preprocessing: String

    /// The prompt as the exporter's text encoder read it ("lower-strip": PixArtSigmaPipeline
    /// without caption cleaning; "none": as typed, as StableDiffusion3Pipeline).
    func preprocess(_ prompt: String) -> String {
      guard preprocessing == PipelineKeys.preprocessingLowerStrip else { return prompt }
      return prompt.lowercased().trimmingCharacters(in: .whitespacesAndNewlines)
    }
  }

  /// An artifact exported with --fixed-prompts (no text encoder): its prompts (row i + 1 of the
  /// embeddings file), the file's role and the negative prompt's row.
  struct FixedPrompts {
    let prompts: [String]
    let role: String
    let negativeRow: Int
  }

  let methods: [String: Method]
  let resolutions: [[Int]]  // (height, width) pixels
  let tokenizers: [TokenizerSpec]  // in the manifest's order; empty with fixed prompts
  let fixed: FixedPrompts?  // nil: any typed prompt, through the tokenizers and encode_prompt
  let encodeOutputs: [String]  // encode_prompt's output names (the fixed embeddings hold the same)
  let negativePrompt: String
  let defaultSteps: Int
  let defaultGuidance: Double
  let latentChannels: Int
  let schedulerClass: String
  let schedulerConfig: [String: Any]

  init(manifest: ArtifactManifest) throws {
    guard let json = manifest.pipeline else {
      throw DemoError("this artifact holds a denoiser alone; export the model with --pipeline to make images")
    }
    methods = try Self.readMethods(json)
    resolutions = try Self.readResolutions(json, methods)
    let text: [String: Any] = try ArtifactManifest.field(json, K.pText)
    if let precomputed = text[K.fixedPromptsText] as? [String: Any] {
      fixed = try Self.readFixed(precomputed)
      encodeOutputs = try ArtifactManifest.field(precomputed, K.fixedOutputs)
      guard !encodeOutputs.isEmpty else {
        throw DemoError("manifest pipeline.text.\(K.fixedPromptsText) is incomplete; re-export the artifact")
      }
      tokenizers = []
    } else {
      guard let encode = methods[K.encodeMethod] else {
        throw DemoError("manifest pipeline has no \(K.encodeMethod); re-export the artifact")
      }
      fixed = nil
      tokenizers = try Self.readTokenizers(text, encode)
      encodeOutputs = encode.outputs.map(\.name)
    }
    negativePrompt = try ArtifactManifest.field(text, K.textNegativePrompt)
    let defaults: [String: Any] = try ArtifactManifest.field(json, K.pDefaults)
    defaultSteps = try ArtifactManifest.field(defaults, K.defaultsSteps)
    defaultGuidance = try ArtifactManifest.field(defaults, K.defaultsGuidance)
    latentChannels = try ArtifactManifest.field(json, K.pLatentChannels)
    let scheduler: [String: Any] = try ArtifactManifest.field(json, K.pScheduler)
    schedulerClass = try ArtifactManifest.field(scheduler, K.schedulerClassName)
    schedulerConfig = try ArtifactManifest.field(scheduler, K.schedulerConfig)
  }

  private static func readMethods(_ json: [String: Any]) throws -> [String: Method] {
    let methodsJson: [String: Any] = try ArtifactManifest.field(json, K.pMethods)
    var byName: [String: Method] = [:]
    for (name, value) in methodsJson {
      guard let method = value as? [String: Any] else { throw DemoError("manifest pipeline.methods.\(name) is not an object") }
      byName[name] = Method(name: name, inputs: try ArtifactManifest.specs(method, K.methodInputs),
                            outputs: try ArtifactManifest.specs(method, K.methodOutputs))
    }
    return byName
  }

  private static func readResolutions(_ json: [String: Any], _ methods: [String: Method]) throws -> [[Int]] {
    let sizes: [[Int]] = try ArtifactManifest.field(json, K.pResolutions)
    guard !sizes.isEmpty, sizes.allSatisfy({ $0.count == 2 }) else {
      throw DemoError("manifest pipeline.resolutions must hold [height, width] pairs; re-export the artifact")
    }
    for size in sizes {
      for name in [denoiseMethod(size), decodeMethod(size)] where methods[name] == nil {
        throw DemoError("manifest pipeline has no \(name) method; re-export the artifact")
      }
    }
    return sizes
  }

  private static func readFixed(_ precomputed: [String: Any]) throws -> FixedPrompts {
    let fixed = FixedPrompts(prompts: try ArtifactManifest.field(precomputed, K.fixedPrompts),
                             role: try ArtifactManifest.field(precomputed, K.fixedFile),
                             negativeRow: try ArtifactManifest.field(precomputed, K.fixedNegativeRow))
    guard !fixed.prompts.isEmpty, (0...fixed.prompts.count).contains(fixed.negativeRow) else {
      throw DemoError("manifest pipeline.text.\(K.fixedPromptsText) is incomplete; re-export the artifact")
    }
    return fixed
  }

  /// pipeline.text.tokenizers, or the one tokenizer of an older manifest's text fields; every
  /// encode_prompt input must be filled by one of them, (1, max_length), as the Android app asks.
  private static func readTokenizers(_ text: [String: Any], _ encode: Method) throws -> [TokenizerSpec] {
    var specs: [TokenizerSpec] = []
    if let entries = text[K.textTokenizers], !(entries is NSNull) {
      guard let objects = entries as? [[String: Any]] else {
        throw DemoError("manifest pipeline.text.\(K.textTokenizers) must hold objects; re-export the artifact")
      }
      for entry in objects {
        specs.append(try tokenizer(files: ArtifactManifest.field(entry, K.tokenizerFiles),
                                   maxLength: ArtifactManifest.field(entry, K.tokenizerMaxLength),
                                   inputIds: ArtifactManifest.field(entry, K.tokenizerInputIds),
                                   attentionMask: entry[K.tokenizerAttentionMask] as? String,
                                   preprocessing: entry[K.tokenizerPreprocessing] as? String))
      }
    } else {
      specs.append(try tokenizer(files: ArtifactManifest.field(text, K.textTokenizer),
                                 maxLength: ArtifactManifest.field(text, K.textMaxLength),
                                 inputIds: K.olderInputIds, attentionMask: K.olderAttentionMask,
                                 preprocessing: text[K.textPreprocessing] as? String))
    }
    guard !specs.isEmpty else { throw DemoError("manifest pipeline.text.\(K.textTokenizers) is empty; re-export the artifact") }
    for input in encode.inputs {
      guard let giver = specs.last(where: { $0.inputIds == input.name || $0.attentionMask == input.name }) else {
        throw DemoError("\(K.encodeMethod) takes \(input.name), which no tokenizer of the manifest gives; re-export the artifact")
      }
      guard input.shape == [1, giver.maxLength] else {
        throw DemoError("\(K.encodeMethod) takes \(input.name) of shape \(input.shape), not [1, \(giver.maxLength)]"
          + " as tokenizer \(giver.files) gives; re-export the artifact")
      }
    }
    return specs
  }

  private static func tokenizer(files: String, maxLength: Int, inputIds: String, attentionMask: String?,
                                preprocessing: String?) throws -> TokenizerSpec {
    let preprocessing = preprocessing ?? K.preprocessingNone
    guard [K.preprocessingNone, K.preprocessingLowerStrip].contains(preprocessing) else {
      throw DemoError("prompt preprocessing '\(preprocessing)' of tokenizer \(files) is not implemented"
        + " (\(K.preprocessingNone), \(K.preprocessingLowerStrip))")
    }
    guard maxLength >= 1 else {
      throw DemoError("tokenizer \(files) max_length must be at least 1, not \(maxLength); re-export the artifact")
    }
    return TokenizerSpec(files: files, maxLength: maxLength, inputIds: inputIds, attentionMask: attentionMask,
                         preprocessing: preprocessing)
  }

  static func denoiseMethod(_ size: [Int]) -> String { "denoise_\(size[0])x\(size[1])" }

  static func decodeMethod(_ size: [Int]) -> String { "decode_\(size[0])x\(size[1])" }

  func method(_ name: String) throws -> Method {
    guard let method = methods[name] else { throw DemoError("the artifact has no \(name) method") }
    return method
  }

  /// Each encode_prompt output's rows (prompts + 1, ...) from the embeddings file, float32; nil
  /// for an artifact that encodes typed prompts.
  func loadFixedRows(_ manifest: ArtifactManifest) throws -> [String: SafeTensor]? {
    guard let fixed else { return nil }
    let rows = try SafeTensors.read(try manifest.url(for: fixed.role))
    for name in encodeOutputs {
      guard let entry = rows[name], entry.dtype == "F32", entry.shape.first == fixed.prompts.count + 1 else {
        throw DemoError("\(fixed.role) does not hold \(fixed.prompts.count + 1) float32 rows of \(name);"
          + " re-export the artifact")
      }
    }
    return rows
  }
}
