import Foundation

/// One program loaded and ready: inputs are set once, `forward` is what gets timed, `outputs`
/// reads the last run's results widened to Float, in the manifest's output order.
protocol ProgramRunner: AnyObject {
  /// Name shown in the report ("executorch-ios", "coreml").
  var runtimeName: String { get }
  func prepare(inputs: [SafeTensor]) throws
  func forward() throws
  func outputs() throws -> [[Float]]
}
