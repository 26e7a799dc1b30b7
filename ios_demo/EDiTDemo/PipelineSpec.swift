import Foundation

/// The "pipeline" object of a v2 manifest (`edit-mobile export --pipeline`), as far as this app
/// draws: the program's methods, the resolutions, the sampling defaults, the scheduler, and the
/// fixed prompts of an artifact exported with `--fixed-prompts` (this app has no tokenizers:
/// typed prompts are the Android app's; here the artifact's own prompts are offered).
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
  static let textNegativePrompt = "negative_prompt"
  static let defaultsSteps = "steps"
  static let defaultsGuidance = "guidance"
  static let fixedPromptsText = "precomputed"
  static let fixedFile = "file"
  static let fixedPrompts = "prompts"
  static let fixedNegativeRow = "negative_row"
  static let fixedOutputs = "outputs"
  // END PIPELINE KEYS
}

struct PipelineSpec {
  private typealias K = PipelineKeys

  struct Method {
    let name: String
    let inputs: [TensorSpec]
  }

  let methods: [String: Method]
  let resolutions: [[Int]]  // (height, width) pixels
  let fixedPrompts: [String]
  let fixedPromptsRole: String  // files role of their embeddings
  let fixedNegativeRow: Int
  let encodeOutputs: [String]  // encode_prompt's output names, which the embeddings file holds
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
    let methodsJson: [String: Any] = try ArtifactManifest.field(json, K.pMethods)
    var byName: [String: Method] = [:]
    for (name, value) in methodsJson {
      guard let method = value as? [String: Any] else { throw DemoError("manifest pipeline.methods.\(name) is not an object") }
      byName[name] = Method(name: name, inputs: try ArtifactManifest.specs(method, K.methodInputs))
    }
    methods = byName
    let sizes: [[Int]] = try ArtifactManifest.field(json, K.pResolutions)
    guard !sizes.isEmpty, sizes.allSatisfy({ $0.count == 2 }) else {
      throw DemoError("manifest pipeline.resolutions must hold [height, width] pairs; re-export the artifact")
    }
    for size in sizes {
      for name in [Self.denoiseMethod(size), Self.decodeMethod(size)] where byName[name] == nil {
        throw DemoError("manifest pipeline has no \(name) method; re-export the artifact")
      }
    }
    resolutions = sizes
    let text: [String: Any] = try ArtifactManifest.field(json, K.pText)
    guard let fixed = text[K.fixedPromptsText] as? [String: Any] else {
      throw DemoError("this artifact encodes typed prompts, which needs the tokenizers of the Android app;"
        + " export with --fixed-prompts FILE for this app")
    }
    fixedPrompts = try ArtifactManifest.field(fixed, K.fixedPrompts)
    fixedPromptsRole = try ArtifactManifest.field(fixed, K.fixedFile)
    fixedNegativeRow = try ArtifactManifest.field(fixed, K.fixedNegativeRow)
    encodeOutputs = try ArtifactManifest.field(fixed, K.fixedOutputs)
    guard !fixedPrompts.isEmpty, !encodeOutputs.isEmpty, (0...fixedPrompts.count).contains(fixedNegativeRow) else {
      throw DemoError("manifest pipeline.text.\(K.fixedPromptsText) is incomplete; re-export the artifact")
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

  static func denoiseMethod(_ size: [Int]) -> String { "denoise_\(size[0])x\(size[1])" }

  static func decodeMethod(_ size: [Int]) -> String { "decode_\(size[0])x\(size[1])" }

  func method(_ name: String) throws -> Method {
    guard let method = methods[name] else { throw DemoError("the artifact has no \(name) method") }
    return method
  }

  /// Each encode_prompt output's rows (prompts + 1, ...) from the embeddings file, float32.
  func loadFixedRows(_ manifest: ArtifactManifest) throws -> [String: SafeTensor] {
    let rows = try SafeTensors.read(try manifest.url(for: fixedPromptsRole))
    for name in encodeOutputs {
      guard let entry = rows[name], entry.dtype == "F32", entry.shape.first == fixedPrompts.count + 1 else {
        throw DemoError("\(fixedPromptsRole) does not hold \(fixedPrompts.count + 1) float32 rows of \(name);"
          + " re-export the artifact")
      }
    }
    return rows
  }
}
