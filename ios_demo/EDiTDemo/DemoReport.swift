import Foundation

/// What one run found: text for the screen, and one JSON line for scraping the console,
/// `EDIT_DEMO_RESULT {"status": "ok", ...}`, with the same fields as the Android app's line.
struct DemoReport {
  static let logPrefix = "EDIT_DEMO_RESULT "

  struct OutputCheck {
    let name: String
    let psnrDb: Double
    let maxAbsError: Double
  }

  let runtime: String
  let manifest: ArtifactManifest
  let filesVerified: [String]
  let loadMs: Double
  let outputs: [OutputCheck]
  let warmupRuns: Int
  let latency: Metrics.Latency
  /// Every timed run, in order (benchmark mode writes them all).
  var runsMs: [Double] = []

  func logLine() -> String {
    let outputObjects: [[String: Any]] = outputs.map {
      ["name": $0.name, "psnr_db": $0.psnrDb, "max_abs_err": $0.maxAbsError]
    }
    let object: [String: Any] = [
      "status": "ok",
      "runtime": runtime,
      "model": manifest.modelSource,
      "backend": manifest.backend,
      "precision": manifest.precision,
      "resolution": manifest.resolution,
      "files_verified": filesVerified,
      "load_ms": loadMs,
      "outputs": outputObjects,
      "latency_ms": [
        "warmup": warmupRuns,
        "runs": latency.runs,
        "median": latency.medianMs,
        "min": latency.minMs,
        "p90": latency.p90Ms,
      ] as [String: Any],
    ]
    return Self.logPrefix + Self.json(object)
  }

  static func errorLogLine(_ message: String) -> String {
    logPrefix + json(["status": "error", "error": message])
  }

  func screenText() -> String {
    var lines = [
      "\(manifest.modelSource) @ \(manifest.resolution)",
      "backend \(manifest.backend), \(manifest.precision), runtime \(runtime)",
      "sha256 verified: \(filesVerified.joined(separator: ", "))",
      String(format: "load %.1f ms", loadMs),
      "",
    ]
    for check in outputs {
      let psnr = check.psnrDb >= Metrics.perfectDb ? "200 (identical)" : String(format: "%.2f", check.psnrDb)
      lines.append(String(format: "%@: PSNR %@ dB, max |err| %.3g", check.name, psnr, check.maxAbsError))
    }
    lines.append("")
    lines.append("latency over \(latency.runs) runs (after \(warmupRuns) warm-up):")
    lines.append(String(format: "median %.2f ms, min %.2f ms, p90 %.2f ms",
                        latency.medianMs, latency.minMs, latency.p90Ms))
    return lines.joined(separator: "\n")
  }

  private static func json(_ object: [String: Any]) -> String {
    // PSNR is capped at 200 dB and NaN / inf outputs are refused before (DemoRun.checkOutput),
    // so every number is finite and JSONSerialization accepts it.
    guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else {
      return "{\"status\": \"error\", \"error\": \"report not serialisable\"}"
    }
    return String(decoding: data, as: UTF8.self)
  }
}
