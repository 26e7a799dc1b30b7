import Darwin
import Foundation

// Not compiled here (no Xcode on the machine that wrote it); checked by reading and by
// tests/test_device_profile.py, which compares the keys block with the Python schema.

// BEGIN RESULTS KEYS -- every key of the benchmark results JSON; tests/test_device_profile.py
// compares this block with edit_mobile.runtime.device_profile (RESULTS_TOP, RESULTS_DEVICE,
// RESULTS_METHOD) and with the Android app's. Prefix = where the key lives: top top level,
// device in "device", method in each "methods" entry.
enum ResultsKeys {
  static let schemaName = "edit-mobile/device-benchmark"
  static let schemaVersion = 1
  static let topSchema = "schema"
  static let topSchemaVersion = "schema_version"
  static let topStatus = "status"
  static let topError = "error"
  static let topDevice = "device"
  static let topRuntime = "runtime"
  static let topBackends = "backends"
  static let topArtifact = "artifact"
  static let topModel = "model"
  static let topThreads = "threads"
  static let topMethods = "methods"
  static let deviceModel = "model"
  static let deviceManufacturer = "manufacturer"
  static let deviceOs = "os"
  static let deviceAbi = "abi"
  static let methodWarmup = "warmup"
  static let methodLatenciesMs = "latencies_ms"
  static let methodLoadMs = "load_ms"
  static let methodPeakMemoryBytes = "peak_memory_bytes"
  static let methodMemorySource = "memory_source"
  static let methodEtdump = "etdump"
}
// END RESULTS KEYS

/// The results JSON of benchmark mode (`-benchmark YES -results Documents/...json`), what
/// `edit-mobile profile ART --device ios` pulls. The Swift ExecuTorch API read for this app has
/// no ETDump call, so "etdump" is always null here.
enum BenchmarkResults {
  typealias K = ResultsKeys

  static func ok(report: DemoReport, folder: URL) -> [String: Any] {
    let peak = PeakMemory.read()
    let method: [String: Any] = [
      K.methodWarmup: report.warmupRuns,
      K.methodLatenciesMs: report.runsMs,
      K.methodLoadMs: report.loadMs,
      K.methodPeakMemoryBytes: peak.bytes.map { $0 as Any } ?? NSNull(),
      K.methodMemorySource: peak.source,
      K.methodEtdump: NSNull(),
    ]
    return header("ok").merging([
      K.topDevice: device(),
      K.topRuntime: report.runtime,
      K.topBackends: [String](),
      K.topArtifact: folder.path,
      K.topModel: report.manifest.modelSource,
      K.topThreads: 0,
      K.topMethods: ["forward": method],
    ]) { _, new in new }
  }

  static func error(_ message: String) -> [String: Any] {
    header("error").merging([K.topError: message]) { _, new in new }
  }

  /// The results path, relative to the app's home folder (devicectl copies from there); refused
  /// if absolute or leading out of it.
  static func url(relative: String) throws -> URL {
    let home = URL(fileURLWithPath: NSHomeDirectory()).standardizedFileURL
    let url = home.appendingPathComponent(relative).standardizedFileURL
    guard !relative.hasPrefix("/"), url.path.hasPrefix(home.path + "/") else {
      throw DemoError("-results \(relative) must be a path inside the app's folder, e.g. Documents/edit_mobile/r.json")
    }
    return url
  }

  /// Written atomically (a temporary file renamed): the host never reads half of it.
  static func write(_ object: [String: Any], to url: URL) throws {
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    try data.write(to: url, options: .atomic)
  }

  private static func header(_ status: String) -> [String: Any] {
    [K.topSchema: K.schemaName, K.topSchemaVersion: K.schemaVersion, K.topStatus: status]
  }

  private static func device() -> [String: Any] {
    var system = utsname()
    uname(&system)
    let machine = withUnsafeBytes(of: &system.machine) { bytes in
      String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self)
    }
    let version = ProcessInfo.processInfo.operatingSystemVersion
    #if arch(arm64)
      let abi = "arm64"
    #else
      let abi = "x86_64"
    #endif
    return [K.deviceModel: machine, K.deviceManufacturer: "Apple",
            K.deviceOs: "iOS \(version.majorVersion).\(version.minorVersion)", K.deviceAbi: abi]
  }
}

/// The process's peak memory footprint (task_vm_info's ledger_phys_footprint_peak), what iOS
/// counts against the app's memory limit.
enum PeakMemory {
  static func read() -> (bytes: Int64?, source: String) {
    var info = task_vm_info_data_t()
    var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<natural_t>.size)
    let status = withUnsafeMutablePointer(to: &info) {
      $0.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
        task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
      }
    }
    guard status == KERN_SUCCESS, info.ledger_phys_footprint_peak > 0 else { return (nil, "none") }
    return (Int64(info.ledger_phys_footprint_peak), "phys_footprint_peak")
  }
}
