import Foundation
import SwiftUI

/// A pipeline artifact loaded for drawing: its spec and its generator.
final class DrawSession {
  let spec: PipelineSpec
  let generator: TextToImage

  private init(spec: PipelineSpec, generator: TextToImage) {
    self.spec = spec
    self.generator = generator
  }

  /// Files verified, then the tokenizers (swift-transformers loads them asynchronously) or the
  /// fixed prompts' embeddings, the scheduler and the program.
  static func load(folder: URL) async throws -> DrawSession {
    let manifest = try ArtifactManifest.read(folder: folder)
    _ = try manifest.verifyFiles()
    let spec = try PipelineSpec(manifest: manifest)
    var tokenizers: [PromptTokenizer] = []
    for entry in spec.tokenizers {
      tokenizers.append(try await PromptTokenizer.load(entry, manifest: manifest))
    }
    let generator = try TextToImage(
      spec: spec, fixedRows: try spec.loadFixedRows(manifest), tokenizers: tokenizers,
      scheduler: try Schedulers.make(className: spec.schedulerClass, config: spec.schedulerConfig),
      methods: try ExecuTorchPipelineMethods(manifest: manifest))
    return DrawSession(spec: spec, generator: generator)
  }
}

/// The draw screen: a typed prompt (or, for a --fixed-prompts artifact, one of its prompts),
/// steps, seed and size; the image, and the time per stage and per step. Generation runs off the
/// main thread; progress comes back to it.
struct DrawScreen: View {
  let folder: URL
  @State private var session: DrawSession? = nil
  @State private var prompt = ""
  @State private var steps = 20
  @State private var seed = "0"
  @State private var sizeIndex = 0
  @State private var image: CGImage? = nil
  @State private var status = "loading the artifact ..."
  @State private var drawing = false

  var body: some View {
    Form {
      if let session {
        if let fixed = session.spec.fixed {
          Picker("Prompt", selection: $prompt) {
            ForEach(fixed.prompts, id: \.self) { Text($0) }
          }
        } else {
          TextField("Prompt", text: $prompt, axis: .vertical).autocorrectionDisabled()
        }
        Stepper("Steps: \(steps)", value: $steps, in: 1...100)
        TextField("Seed", text: $seed).keyboardType(.numberPad)
        Picker("Size", selection: $sizeIndex) {
          ForEach(session.spec.resolutions.indices, id: \.self) { index in
            Text("\(session.spec.resolutions[index][0]) x \(session.spec.resolutions[index][1])")
          }
        }
        Button("Draw") { Task { await draw(session) } }.disabled(drawing)
      }
      if let image {
        Image(decorative: image, scale: 1).interpolation(.none).resizable().scaledToFit()
      }
      Text(status).font(.system(.footnote, design: .monospaced))
    }
    .navigationTitle("Draw")
    .task { await load() }
  }

  @MainActor
  private func load() async {
    guard session == nil else { return }
    do {
      let loaded = try await Task.detached { try await DrawSession.load(folder: folder) }.value
      session = loaded
      prompt = loaded.spec.fixed?.prompts[0] ?? ""
      steps = loaded.spec.defaultSteps
      let tokenizers = loaded.spec.tokenizers.map(\.files).joined(separator: ", ")
      let prompts = loaded.spec.fixed.map { "\($0.prompts.count) fixed prompts" } ?? "typed prompts (\(tokenizers))"
      status = "ready: \(prompts), guidance \(loaded.spec.defaultGuidance)"
    } catch {
      status = "error: \(error.localizedDescription)"
    }
  }

  @MainActor
  private func draw(_ session: DrawSession) async {
    guard let seedValue = UInt64(seed) else {
      status = "error: the seed must be a whole number >= 0"
      return
    }
    drawing = true
    defer { drawing = false }
    let request = (prompt, steps, session.spec.defaultGuidance, session.spec.resolutions[sizeIndex])
    do {
      let result = try await Task.detached {
        try session.generator.generate(prompt: request.0, steps: request.1, guidance: request.2, seed: seedValue,
                                       size: request.3) { done, total in
          Task { @MainActor in status = "step \(done) / \(total) ..." }
        }
      }.value
      image = result.image
      let perStep = result.denoiseSeconds / Double(result.steps)
      status = String(format: "%d steps: encode %.0f ms, denoise %.2f s (%.3f s/step), decode %.2f s",
                      result.steps, result.encodeSeconds * 1000, result.denoiseSeconds, perStep, result.decodeSeconds)
      DemoLog.info(status)
    } catch {
      status = "error: \(error.localizedDescription)"
    }
  }
}
