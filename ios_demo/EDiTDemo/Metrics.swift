import Foundation

/// Accuracy and latency figures, computed as `edit-mobile validate` / `profile` compute them
/// (and as the Android app's Metrics.java, which tests/test_demo_apps.py runs against Python).
enum Metrics {
  /// Reported instead of infinity when the error is exactly zero (edit_mobile.runtime.metrics).
  static let perfectDb = 200.0

  /// PSNR in dB: 20 log10(max|ref| / RMSE), accumulated in Double, capped at perfectDb; the
  /// cases as in edit_mobile.runtime.metrics: no error is perfectDb (all-zero tensors included),
  /// error against an all-zero reference is -perfectDb, and a NaN or inf anywhere is NaN (a
  /// failure, never a pass: see DemoRun.checkOutput).
  static func psnrDb(reference: [Float], output: [Float]) throws -> Double {
    try checkSameCount(reference, output)
    guard reference.allSatisfy(\.isFinite), output.allSatisfy(\.isFinite) else { return .nan }
    var peak = 0.0
    var squaredError = 0.0
    for (ref, out) in zip(reference, output) {
      peak = max(peak, abs(Double(ref)))
      let diff = Double(out) - Double(ref)
      squaredError += diff * diff
    }
    let rmse = (squaredError / Double(reference.count)).squareRoot()
    if rmse == 0 { return perfectDb }
    if peak == 0 { return -perfectDb }
    return min(perfectDb, 20 * log10(peak / rmse))
  }

  /// How many values are NaN or infinite.
  static func countNonFinite(_ values: [Float]) -> Int {
    values.lazy.filter { !$0.isFinite }.count
  }

  static func maxAbsError(reference: [Float], output: [Float]) throws -> Double {
    try checkSameCount(reference, output)
    return zip(reference, output).map { abs(Double($1) - Double($0)) }.max() ?? 0
  }

  struct Latency {
    let runs: Int
    let medianMs: Double
    let minMs: Double
    let p90Ms: Double
  }

  static func latency(runsMs: [Double]) -> Latency {
    precondition(!runsMs.isEmpty, "no timed runs")
    let sorted = runsMs.sorted()
    return Latency(runs: sorted.count, medianMs: percentile(sorted, 50), minMs: sorted[0],
                   p90Ms: percentile(sorted, 90))
  }

  /// Linear interpolation between closest ranks (numpy.percentile's default) on sorted data.
  static func percentile(_ sorted: [Double], _ percent: Double) -> Double {
    let rank = percent / 100 * Double(sorted.count - 1)
    let below = Int(rank.rounded(.down))
    let above = min(below + 1, sorted.count - 1)
    return sorted[below] + (rank - Double(below)) * (sorted[above] - sorted[below])
  }

  private static func checkSameCount(_ reference: [Float], _ output: [Float]) throws {
    guard reference.count == output.count, !reference.isEmpty else {
      throw DemoError("output has \(output.count) values, reference has \(reference.count)")
    }
  }
}
