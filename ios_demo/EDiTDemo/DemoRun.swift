import CoreML
import Foundation

/// Settings of one run, from launch arguments (`-iters 20 -warmup 3 -computeUnits all`;
/// benchmark mode: `-benchmark YES -results Documents/edit_mobile/NAME/results.json`).
struct RunSettings {
  var warmupRuns = 3
  var timedRuns = 20
  var computeUnits: MLComputeUnits = .all
  /// Benchmark mode: the results JSON's path relative to the app's home folder (BenchmarkResults).
  var resultsPath: String? = nil

  static func fromLaunchArguments(_ defaults: UserDefaults = .standard) -> RunSettings {
    var settings = RunSettings()
    if defaults.object(forKey: "warmup") != nil { settings.warmupRuns = defaults.integer(forKey: "warmup") }
    if defaults.object(forKey: "iters") != nil { settings.timedRuns = max(1, defaults.integer(forKey: "iters")) }
    if defaults.bool(forKey: "benchmark") { settings.resultsPath = defaults.string(forKey: "results") }
    switch defaults.string(forKey: "computeUnits") {
    case "cpuOnly": settings.computeUnits = .cpuOnly
    case "cpuAndGPU": settings.computeUnits = .cpuAndGPU
    case "cpuAndNeuralEngine": settings.computeUnits = .cpuAndNeuralEngine
    default: settings.computeUnits = .all
    }
    return settings
  }
}

/// The whole demo for one artifact folder: verify, load, run the test vectors once for accuracy,
/// then warm up and time `timedRuns` forward calls.
enum DemoRun {
  static func run(folder: URL, settings: RunSettings, progress: @MainActor (String) -> Void) async throws -> DemoReport {
    await progress("reading manifest and checking sha256 of \(folder.lastPathComponent) ...")
    let manifest = try ArtifactManifest.read(folder: folder)
    let verified = try manifest.verifyFiles()
    let vectors = try TestVectors.load(manifest)

    await progress("loading the program ...")
    let loadStart = DispatchTime.now()
    let runner = try await makeRunner(manifest, settings)
    let loadMs = milliseconds(since: loadStart)
    try runner.prepare(inputs: vectors.inputs)

    await progress("running the test vectors ...")
    try runner.forward()
    let produced = try runner.outputs()
    guard produced.count == vectors.expectedOutputs.count else {
      throw DemoError("program returned \(produced.count) outputs, manifest declares \(vectors.expectedOutputs.count)")
    }
    var checks: [DemoReport.OutputCheck] = []
    for (index, expected) in vectors.expectedOutputs.enumerated() {
      checks.append(try checkOutput(name: manifest.outputs[index].name,
                                    reference: try expected.floats(), output: produced[index]))
    }

    await progress("timing \(settings.timedRuns) runs after \(settings.warmupRuns) warm-up ...")
    for _ in 0..<settings.warmupRuns { try runner.forward() }
    var runsMs: [Double] = []
    for _ in 0..<settings.timedRuns {
      let start = DispatchTime.now()
      try runner.forward()
      runsMs.append(milliseconds(since: start))
    }
    return DemoReport(runtime: runner.runtimeName, manifest: manifest, filesVerified: verified,
                      loadMs: loadMs, outputs: checks, warmupRuns: settings.warmupRuns,
                      latency: Metrics.latency(runsMs: runsMs), runsMs: runsMs)
  }

  /// PSNR / max error of one output, as the Android app's ArtifactCheck.checkOutput: NaN or inf
  /// (in the output, or in a damaged reference) is a failure named as such, never a pass.
  static func checkOutput(name: String, reference: [Float], output: [Float]) throws -> DemoReport.OutputCheck {
    let badOutput = Metrics.countNonFinite(output)
    guard badOutput == 0 else {
      throw DemoError("non-finite output: \(name) has \(badOutput) NaN/inf values of \(output.count); the program failed on this device (try other compute units or another backend)")
    }
    let badReference = Metrics.countNonFinite(reference)
    guard badReference == 0 else {
      throw DemoError("non-finite reference: \(ManifestKeys.vectorOutputPrefix)\(name) has \(badReference) NaN/inf values; re-export the artifact")
    }
    return DemoReport.OutputCheck(name: name,
                                  psnrDb: try Metrics.psnrDb(reference: reference, output: output),
                                  maxAbsError: try Metrics.maxAbsError(reference: reference, output: output))
  }

  /// ExecuTorch for .pte backends, Core ML for .mlpackage; anything else is refused.
  private static func makeRunner(_ manifest: ArtifactManifest, _ settings: RunSettings) async throws -> ProgramRunner {
    let programURL = try manifest.url(for: ManifestKeys.roleProgram)
    if ArtifactManifest.executorchBackends.contains(manifest.backend) {
      let weightsURL = manifest.files[ManifestKeys.roleWeights] == nil ? nil : try manifest.url(for: ManifestKeys.roleWeights)
      // A pipeline program has no "forward": the manifest's inputs are its first denoise method's.
      let method = manifest.pipeline == nil ? "forward" : "denoise_\(manifest.resolution)"
      return try ExecuTorchRunner(programURL: programURL, weightsURL: weightsURL, method: method)
    }
    if ArtifactManifest.coreMLBackends.contains(manifest.backend) {
      return try await CoreMLRunner(packageURL: programURL, manifest: manifest,
                                    computeUnits: settings.computeUnits)
    }
    let supported = ArtifactManifest.executorchBackends + ArtifactManifest.coreMLBackends
    throw DemoError("backend '\(manifest.backend)' does not run in this iOS app; export with --backend \(supported.joined(separator: " / "))")
  }

  private static func milliseconds(since start: DispatchTime) -> Double {
    Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e6
  }
}
