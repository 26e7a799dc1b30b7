import CoreGraphics
import ExecuTorch
import Foundation

/// One tensor handed to or returned by a program method, row-major, and its shape: float32
/// values, or int64 ones (encode_prompt's token ids and attention masks).
struct HostTensor {
  let values: [Float]
  let ids: [Int64]?  // an int64 tensor's values (`values` is then empty); nil: float32
  let shape: [Int]

  init(values: [Float], shape: [Int]) {
    self.values = values
    self.ids = nil
    self.shape = shape
  }

  init(ids: [Int64], shape: [Int]) {
    self.values = []
    self.ids = ids
    self.shape = shape
  }
}

/// The program's methods by name (encode_prompt, denoise_HxW, decode_HxW); outputs widened to Float.
protocol PipelineMethods: AnyObject {
  func run(_ method: String, _ inputs: [HostTensor]) throws -> [[Float]]
}

/// A pipeline .pte in ExecuTorch (its weights in model.ptd when the manifest lists them: the
/// Swift Module takes .ptd files, unlike the Android AAR's Module.load). Methods load on first use.
final class ExecuTorchPipelineMethods: PipelineMethods {
  private let module: Module

  init(manifest: ArtifactManifest) throws {
    module = ExecuTorchRunner.module(programURL: try manifest.url(for: ManifestKeys.roleProgram),
                                     weightsURL: manifest.files[ManifestKeys.roleWeights]?.url)
  }

  func run(_ method: String, _ inputs: [HostTensor]) throws -> [[Float]] {
    let tensors: [ValueConvertible] = inputs.map { input -> ValueConvertible in
      if let ids = input.ids { return Tensor<Int64>(ids, shape: input.shape) }
      return Tensor<Float>(input.values, shape: input.shape)
    }
    let outputs: [Value] = try module.execute(method, tensors)
    return try ExecuTorchRunner.floats(outputs, of: method)
  }
}

/// A pipeline artifact from prompt to pixels, as the Android app's TextToImage and
/// `edit-mobile generate --noise portable` do it: the prompt's embeddings (and the negative
/// prompt's, for classifier-free guidance) from encode_prompt on the tokenizers' ids, or the
/// precomputed ones of a --fixed-prompts artifact; the seeded latent noise, one denoise call per
/// scheduler step (both branches in one call when the method takes a batch of 2), guidance,
/// PixArt's noise half, the scheduler step, decode.
final class TextToImage {
  struct Result {
    let image: CGImage
    let steps: Int
    let encodeSeconds: Double
    let denoiseSeconds: Double
    let decodeSeconds: Double
  }

  private typealias Rows = [String: (values: [Float], shape: [Int])]  // encode_prompt output -> all rows

  private let spec: PipelineSpec
  private let rows: Rows?  // nil: prompts go through the tokenizers and encode_prompt
  private let tokenizers: [PromptTokenizer]  // one a spec.tokenizers entry, in its order
  private let scheduler: DiffusionScheduler
  private let methods: PipelineMethods

  /// fixedRows: PipelineSpec.loadFixedRows (nil unless --fixed-prompts); tokenizers: PromptTokenizer.load
  /// of each spec.tokenizers entry.
  init(spec: PipelineSpec, fixedRows: [String: SafeTensor]?, tokenizers: [PromptTokenizer],
       scheduler: DiffusionScheduler, methods: PipelineMethods) throws {
    guard (fixedRows == nil) == (spec.fixed == nil), tokenizers.count == spec.tokenizers.count else {
      throw DemoError("the fixed prompts' rows are needed exactly when the artifact has them, and one tokenizer"
        + " an entry: \(spec.tokenizers.count) described, \(tokenizers.count) given")
    }
    self.spec = spec
    self.rows = try fixedRows.map { try TextToImage.decode($0, spec.encodeOutputs) }
    self.tokenizers = tokenizers
    self.scheduler = scheduler
    self.methods = methods
  }

  private static func decode(_ fixedRows: [String: SafeTensor], _ names: [String]) throws -> Rows {
    var decoded: Rows = [:]
    for name in names {
      guard let entry = fixedRows[name] else { throw DemoError("the prompt embeddings have no \(name)") }
      decoded[name] = (try entry.floats(), entry.shape)
    }
    return decoded
  }

  func generate(prompt: String, steps: Int, guidance: Double, seed: UInt64, size: [Int],
                progress: (Int, Int) -> Void) throws -> Result {
    guard steps >= 1 else { throw DemoError("steps must be at least 1, not \(steps)") }
    guard spec.resolutions.contains(size) else {
      throw DemoError("the artifact draws at none of \(size[0])x\(size[1]); pick one of its resolutions")
    }
    let start = DispatchTime.now()
    let guided = guidance > 1.0
    let positive = try embeddings(of: prompt)
    let branches = guided ? [try embeddings(of: spec.negativePrompt), positive] : [positive]
    let encoded = DispatchTime.now()
    let denoise = try spec.method(PipelineSpec.denoiseMethod(size))
    guard let latentSpec = denoise.inputs.first else { throw DemoError("\(denoise.name) takes no inputs") }
    var latentShape = latentSpec.shape
    latentShape[0] = 1
    let count = latentShape.reduce(1, *)
    try scheduler.setTimesteps(steps)
    var latents = LatentNoise.gaussians(seed: seed, count: count).map { $0 * scheduler.initNoiseSigma }
    let timesteps = scheduler.timesteps
    for (index, timestep) in timesteps.enumerated() {
      var prediction = try predict(denoise, branches, latents.map { Float($0) }, timestep, guided ? guidance : 1.0)
      if prediction.count == 2 * count {  // PixArt: noise and learned variance; the noise half
        prediction = Array(prediction[0..<count])
      }
      latents = try scheduler.step(prediction, timestep, latents)
      progress(index + 1, timesteps.count)
    }
    let denoised = DispatchTime.now()
    let decoded = try methods.run(PipelineSpec.decodeMethod(size), [HostTensor(values: latents.map { Float($0) }, shape: latentShape)])
    let image = try ImageConversion.cgImage(unitRGB: decoded[0], height: size[0], width: size[1])
    let done = DispatchTime.now()
    return Result(image: image, steps: timesteps.count, encodeSeconds: seconds(start, encoded),
                  denoiseSeconds: seconds(encoded, denoised), decodeSeconds: seconds(denoised, done))
  }

  /// encode_prompt's outputs by name for one prompt: the typed prompt's, or a fixed prompt's row.
  private func embeddings(of prompt: String) throws -> [String: HostTensor] {
    guard let rows, let fixed = spec.fixed else { return try encodeTyped(prompt) }
    return try fixedRow(of: prompt, fixed, rows)
  }

  /// Every tokenizer's ids (and mask, where its entry names one) as the encode_prompt inputs it
  /// names, passed in the method's input order, as the Android app's TextToImage.encode.
  private func encodeTyped(_ prompt: String) throws -> [String: HostTensor] {
    var named: [String: HostTensor] = [:]
    for tokenizer in tokenizers {
      let encoding = tokenizer.encode(prompt)
      let shape = [1, encoding.ids.count]
      named[tokenizer.spec.inputIds] = HostTensor(ids: encoding.ids, shape: shape)
      if let mask = tokenizer.spec.attentionMask {
        named[mask] = HostTensor(ids: encoding.attentionMask, shape: shape)
      }
    }
    let encode = try spec.method(PipelineKeys.encodeMethod)
    let inputs: [HostTensor] = try encode.inputs.map { input in
      guard let tensor = named[input.name] else {
        throw DemoError("\(encode.name) takes \(input.name), which no tokenizer of the artifact gives; re-export the artifact")
      }
      return tensor
    }
    let outputs = try methods.run(encode.name, inputs)
    guard outputs.count == encode.outputs.count else {
      throw DemoError("\(encode.name) gave \(outputs.count) outputs, the manifest lists \(encode.outputs.count); re-export the artifact")
    }
    var out: [String: HostTensor] = [:]
    for (output, values) in zip(encode.outputs, outputs) {
      out[output.name] = HostTensor(values: values, shape: output.shape)
    }
    return out
  }

  /// The fixed prompt's row of each embedding (the negative prompt's row for it), as Python's
  /// PipelineArtifact.encode picks it.
  private func fixedRow(of prompt: String, _ fixed: PipelineSpec.FixedPrompts, _ rows: Rows) throws -> [String: HostTensor] {
    let index = fixed.prompts.firstIndex(of: prompt)
    guard index != nil || prompt == spec.negativePrompt else {
      throw DemoError("this artifact has only the embeddings of \(fixed.prompts.count) fixed prompts; pick one of them")
    }
    let row = index.map { $0 + 1 } ?? fixed.negativeRow
    var out: [String: HostTensor] = [:]
    for (name, all) in rows {
      let width = all.values.count / all.shape[0]
      out[name] = HostTensor(values: Array(all.values[row * width..<(row + 1) * width]), shape: [1] + all.shape.dropFirst())
    }
    return out
  }

  /// The guided noise prediction in Double, from one call per branch or one call of both when the
  /// method takes a batch of 2 (unconditional first, as the pipelines concatenate them).
  private func predict(_ denoise: PipelineSpec.Method, _ branches: [[String: HostTensor]], _ latents: [Float],
                       _ timestep: Double, _ guidance: Double) throws -> [Double] {
    let batch = denoise.inputs[0].shape[0]
    if batch == branches.count {
      let both = try call(denoise, branches, latents, timestep)
      return branches.count == 2 ? Guidance.combineBatched(both, guidance) : both.map { Double($0) }
    }
    if batch == 1 {
      let uncond = try call(denoise, [branches[0]], latents, timestep)
      guard branches.count == 2 else { return uncond.map { Double($0) } }
      return Guidance.combine(uncond, try call(denoise, [branches[1]], latents, timestep), guidance)
    }
    // A batch-2 method run without guidance: the one branch twice, the first half kept.
    let twice = try call(denoise, [branches[0], branches[0]], latents, timestep)
    return twice[0..<(twice.count / 2)].map { Double($0) }
  }

  /// One denoise call: inputs gathered by the method's input names, batch = branches.
  private func call(_ denoise: PipelineSpec.Method, _ group: [[String: HostTensor]], _ latents: [Float],
                    _ timestep: Double) throws -> [Float] {
    let inputs: [HostTensor] = try denoise.inputs.map { input in
      switch input.name {
      case "hidden_states":
        return HostTensor(values: Array([[Float]](repeating: latents, count: group.count).joined()), shape: input.shape)
      case "timestep":
        return HostTensor(values: [Float](repeating: Float(timestep), count: group.count), shape: input.shape)
      default:
        guard spec.encodeOutputs.contains(input.name) else {
          throw DemoError("the denoiser takes \(input.name), which the prompt embeddings do not hold")
        }
        return HostTensor(values: group.flatMap { $0[input.name]!.values }, shape: input.shape)
      }
    }
    return try methods.run(denoise.name, inputs)[0]
  }

  private func seconds(_ from: DispatchTime, _ to: DispatchTime) -> Double {
    Double(to.uptimeNanoseconds - from.uptimeNanoseconds) / 1e9
  }
}

/// Classifier-free guidance as diffusers computes it: uncond + scale * (cond - uncond).
enum Guidance {
  static func combine(_ uncond: [Float], _ cond: [Float], _ scale: Double) -> [Double] {
    zip(uncond, cond).map { Double($0) + scale * (Double($1) - Double($0)) }
  }

  /// The batch-2 output: [unconditional, conditional], each half the values.
  static func combineBatched(_ both: [Float], _ scale: Double) -> [Double] {
    let half = both.count / 2
    return combine(Array(both[0..<half]), Array(both[half...]), scale)
  }
}

/// The initial latent noise from a seed, as the Android app's LatentNoise and the test's numpy
/// twin: SplitMix64 words, 53-bit uniforms, Box-Muller pairs r cos(2 pi u2), r sin(2 pi u2) with
/// r = sqrt(-2 ln(1 - u1)). Not torch.randn. Darwin's log / sin / cos may differ from the JVM's
/// fdlibm in the last bit, so the noise agrees with Android's to an ulp, not bit for bit.
enum LatentNoise {
  static func gaussians(seed: UInt64, count: Int) -> [Double] {
    var state = seed
    func nextUniform() -> Double {
      state &+= 0x9E37_79B9_7F4A_7C15
      var z = state
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return Double((z ^ (z >> 31)) >> 11) * 0x1p-53
    }
    var out = [Double](repeating: 0, count: count)
    var i = 0
    while i < count {
      let radius = (-2.0 * log(1.0 - nextUniform())).squareRoot()
      let angle = 2.0 * Double.pi * nextUniform()
      out[i] = radius * cos(angle)
      if i + 1 < count { out[i + 1] = radius * sin(angle) }
      i += 2
    }
    return out
  }
}

/// The decode method's output (1, 3, H, W) in [0, 1] (the method applies x * 0.5 + 0.5 and the
/// clamp) to an opaque RGBA image: round(v * 255) half to even, in Float as torch rounds.
enum ImageConversion {
  static func cgImage(unitRGB image: [Float], height: Int, width: Int) throws -> CGImage {
    let plane = height * width
    guard image.count == 3 * plane else {
      throw DemoError("the decoder gave \(image.count) values, not 3 x \(height) x \(width)")
    }
    var rgba = [UInt8](repeating: 255, count: 4 * plane)
    for i in 0..<plane {
      for c in 0..<3 {
        let value = image[c * plane + i]
        guard value >= 0, value <= 1 else {
          throw DemoError("the decoded image has values outside [0, 1] (\(value)); the decoder run failed")
        }
        rgba[4 * i + c] = UInt8((value * 255).rounded(.toNearestOrEven))
      }
    }
    guard let provider = CGDataProvider(data: Data(rgba) as CFData),
          let cgImage = CGImage(width: width, height: height, bitsPerComponent: 8, bitsPerPixel: 32,
                                bytesPerRow: 4 * width, space: CGColorSpaceCreateDeviceRGB(),
                                bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                                provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
    else { throw DemoError("could not make an image of \(width)x\(height) pixels") }
    return cgImage
  }
}
