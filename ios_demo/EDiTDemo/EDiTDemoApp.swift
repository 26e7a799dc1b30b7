import Foundation
import OSLog
import SwiftUI

@main
struct EDiTDemoApp: App {
  var body: some Scene {
    WindowGroup { ContentView() }
  }
}

/// The report screen: runs the artifact chosen by the launch argument `-artifact NAME` (default:
/// the only folder under Documents/artifacts, then under the app bundle's artifacts/) and shows
/// the report. Results are also printed and logged as one `EDIT_DEMO_RESULT {json}` line. A
/// pipeline artifact (export --pipeline) also opens the draw screen.
struct ContentView: View {
  @State private var text = "starting ..."
  @State private var running = false
  @State private var drawable: URL? = nil

  var body: some View {
    NavigationStack {
      ScrollView {
        Text(text).font(.system(.body, design: .monospaced)).frame(maxWidth: .infinity, alignment: .leading).padding()
      }
      .navigationTitle("EDiT demo")
      .toolbar {
        if let drawable { NavigationLink("Draw") { DrawScreen(folder: drawable) } }
        Button("Run again") { Task { await runDemo() } }.disabled(running)
      }
    }
    .task { await runDemo() }
  }

  @MainActor
  private func runDemo() async {
    running = true
    defer { running = false }
    let settings = RunSettings.fromLaunchArguments()
    var resultsURL: URL? = nil
    do {
      resultsURL = try settings.resultsPath.map { try BenchmarkResults.url(relative: $0) }
      let folder = try ArtifactLocator.find(requested: UserDefaults.standard.string(forKey: "artifact"))
      drawable = ArtifactLocator.draws(folder) ? folder : nil
      let report = try await DemoRun.run(folder: folder, settings: settings) { message in
        DemoLog.info(message)
        text = message
      }
      DemoLog.result(report.logLine())
      if let resultsURL { try BenchmarkResults.write(BenchmarkResults.ok(report: report, folder: folder), to: resultsURL) }
      text = report.screenText()
    } catch {
      // Every error ends here as one message. A trap cannot be caught, which is why the readers
      // check header values with overflow-reporting arithmetic instead of trapping on them.
      let message = error.localizedDescription
      DemoLog.result(DemoReport.errorLogLine(message))
      text = "error: \(message)"
      // Benchmark mode: the host reads the error instead of waiting for its timeout.
      if let resultsURL { try? BenchmarkResults.write(BenchmarkResults.error(message), to: resultsURL) }
    }
  }
}

/// Where artifacts are looked for: Documents/artifacts (copied with Finder file sharing or
/// `xcrun devicectl`), then artifacts/ inside the app bundle (a folder reference in Xcode).
enum ArtifactLocator {
  static func roots() -> [URL] {
    var roots: [URL] = []
    if let documents = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask).first {
      roots.append(documents.appendingPathComponent("artifacts"))
    }
    if let bundled = Bundle.main.resourceURL?.appendingPathComponent("artifacts") {
      roots.append(bundled)
    }
    return roots
  }

  /// Whether the folder is a pipeline artifact (typed or fixed prompts: what the draw screen runs).
  static func draws(_ folder: URL) -> Bool {
    guard let manifest = try? ArtifactManifest.read(folder: folder) else { return false }
    return (try? PipelineSpec(manifest: manifest)) != nil
  }

  static func find(requested: String?) throws -> URL {
    for root in roots() {
      let folders = ((try? FileManager.default.contentsOfDirectory(
        at: root, includingPropertiesForKeys: [.isDirectoryKey])) ?? [])
        .filter { (try? $0.resourceValues(forKeys: [.isDirectoryKey]).isDirectory) == true }
        .sorted { $0.lastPathComponent < $1.lastPathComponent }
      if let requested {
        if let match = folders.first(where: { $0.lastPathComponent == requested }) { return match }
        continue
      }
      if folders.count == 1 { return folders[0] }
      if folders.count > 1 {
        throw DemoError("several artifacts in \(root.path) (\(folders.map(\.lastPathComponent).joined(separator: ", "))); choose one with -artifact NAME")
      }
    }
    let places = roots().map(\.path).joined(separator: " or ")
    throw DemoError(requested.map { "no artifact folder '\($0)' in \(places)" }
      ?? "no artifact in \(places); copy one there (README)")
  }
}

/// stdout for `xcrun devicectl ... --console` / `simctl launch --console`, and the unified log
/// (subsystem org.editmobile.demo) for Console.app and `log stream`.
enum DemoLog {
  private static let logger = Logger(subsystem: "org.editmobile.demo", category: "EDiTDemo")

  static func info(_ message: String) {
    logger.info("\(message, privacy: .public)")
  }

  static func result(_ line: String) {
    print(line)
    logger.notice("\(line, privacy: .public)")
  }
}
