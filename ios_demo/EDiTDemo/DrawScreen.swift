import Foundation
import SwiftUI

/// A fixed-prompt pipeline artifact loaded for drawing: its spec and its generator.
final class DrawSession {
  let spec: PipelineSpec
  let generator: TextToImage

  init(folder: URL) throws {
    let manifest = try ArtifactManifest.read(folder: folder)
    _ = try manifest.verifyFiles()
    spec = try PipelineSpec(manifest: manifest)
    generator = try TextToImage(
      spec: spec, fixedRows: try spec.loadFixedRows(manifest),
      scheduler: try Schedulers.make(className: spec.schedulerClass, config: spec.schedulerConfig),
      methods: try ExecuTorchPipelineMethods(manifest: manifest))
  }
}

/// The draw screen: one of the artifact's prompts, steps, seed and size; the image, and the time
/// per stage and per step. Generation runs off the main thread; progress comes back to it.
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
        Picker("Prompt", selection: $prompt) {
          ForEach(session.spec.fixedPrompts, id: \.self) { Text($0) }
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
      let loaded = try await Task.detached { try DrawSession(folder: folder) }.value
      session = loaded
      prompt = loaded.spec.fixedPrompts[0]
      steps = loaded.spec.defaultSteps
      status = "ready: \(loaded.spec.fixedPrompts.count) prompts, guidance \(loaded.spec.defaultGuidance)"
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
      status = String(format: "%d steps: denoise %.2f s (%.3f s/step), decode %.2f s",
                      result.steps, result.denoiseSeconds, perStep, result.decodeSeconds)
      DemoLog.info(status)
    } catch {
      status = "error: \(error.localizedDescription)"
    }
  }
}
