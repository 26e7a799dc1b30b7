import CryptoKit
import Foundation

// BEGIN MANIFEST KEYS -- every manifest field/value this app reads; tests/test_demo_apps.py
// compares this block with what edit_mobile.export writes and with the Android app's block.
// Prefix = where the key lives: top top-level key, model key of "model", spec key of an
// inputs/outputs entry, role key of "files", file key of a files entry, vector test-vector key
// prefix, dtype / backend values.
enum ManifestKeys {
  static let schemaName = "edit-mobile/manifest"
  static let schemaVersion = 1
  /// A pipeline artifact (export --pipeline): v1's fields describe its first denoise method,
  /// which the benchmark mode times; the draw screen runs the whole pipeline (PipelineSpec).
  static let pipelineSchemaVersion = 2
  static let topSchema = "schema"
  static let topSchemaVersion = "schema_version"
  static let topModel = "model"
  static let topResolution = "resolution"
  static let topBackend = "backend"
  static let topPrecision = "precision"
  static let topInputs = "inputs"
  static let topOutputs = "outputs"
  static let topFiles = "files"
  static let topPipeline = "pipeline"
  static let modelSource = "source"
  static let specName = "name"
  static let specShape = "shape"
  static let specDtype = "dtype"
  static let roleProgram = "program"
  /// model.ptd: the program's weights kept outside it (ExecuTorch program-data separation).
  static let roleWeights = "weights"
  static let roleTestVectors = "test_vectors"
  static let filePath = "path"
  static let fileSha256 = "sha256"
  static let fileBytes = "bytes"
  static let vectorInputPrefix = "input."
  static let vectorOutputPrefix = "output."
  static let dtypeFloat32 = "float32"
  static let dtypeFloat16 = "float16"
  static let backendXnnpack = "xnnpack"
  static let backendCoremlPte = "coreml-pte"
  static let backendCoreml = "coreml"
}
// END MANIFEST KEYS

/// A problem with the artifact or the device, stated in one line with what to do about it.
struct DemoError: LocalizedError {
  let message: String
  init(_ message: String) { self.message = message }
  var errorDescription: String? { message }
}

/// One input or output of the program, as the manifest declares it.
struct TensorSpec {
  let name: String
  let shape: [Int]
  let dtype: String
}

/// One file (or folder, for a .mlpackage) of the artifact: relative path, where it is (checked
/// to be inside the folder), sha256 hex, size.
struct FileEntry {
  let role: String
  let path: String
  let url: URL
  let sha256: String
  let bytes: Int?
}

/// The part of manifest.json this app needs: what to call and what to check it against.
/// The folder may come from anywhere, so every path it names is confined to it: absolute
/// paths, ".." and symlinks leading out are refused.
struct ArtifactManifest {
  typealias K = ManifestKeys

  let folder: URL
  let modelSource: String
  let resolution: String
  let backend: String
  let precision: String
  let inputs: [TensorSpec]
  let outputs: [TensorSpec]
  let files: [String: FileEntry]
  /// The v2 manifest's "pipeline" object (PipelineSpec reads it); nil for a denoiser artifact.
  let pipeline: [String: Any]?

  /// Backends whose program this app runs: .pte through ExecuTorch, .mlpackage through Core ML.
  static let executorchBackends = [K.backendXnnpack, K.backendCoremlPte]
  static let coreMLBackends = [K.backendCoreml]

  /// Manifests are a few kB; this bounds what a hostile one can make the app load.
  static let maxManifestBytes = 16 << 20

  static func read(folder: URL) throws -> ArtifactManifest {
    let folder = folder.standardizedFileURL.resolvingSymlinksInPath()
    let url = try inside(folder, "manifest.json", what: "manifest.json")
    if let size = try? url.resourceValues(forKeys: [.fileSizeKey]).fileSize, size > maxManifestBytes {
      throw DemoError("manifest.json is \(size) bytes, more than the \(maxManifestBytes) this app reads; refused")
    }
    guard let data = try? Data(contentsOf: url) else {
      throw DemoError("no manifest.json in \(folder.path); copy an artifact folder there (README)")
    }
    guard !JSONDepth.exceeds(data) else {
      throw DemoError("manifest.json is not valid JSON: nested deeper than \(JSONDepth.maxDepth) levels")
    }
    guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
      throw DemoError("manifest.json is not a JSON object")
    }
    let schema: String = try field(root, K.topSchema)
    let version: Int = try field(root, K.topSchemaVersion)
    guard schema == K.schemaName, version == K.schemaVersion || version == K.pipelineSchemaVersion else {
      throw DemoError(
        "manifest schema is \(schema) v\(version), this app reads \(K.schemaName) v\(K.schemaVersion)"
          + " and v\(K.pipelineSchemaVersion); re-export with a matching edit-mobile")
    }
    let model: [String: Any] = try field(root, K.topModel)
    let resolution: [Int] = try field(root, K.topResolution)
    let fileTable: [String: Any] = try field(root, K.topFiles)
    return ArtifactManifest(
      folder: folder,
      modelSource: model[K.modelSource] as? String ?? "?",
      resolution: resolution.map(String.init).joined(separator: "x"),
      backend: try field(root, K.topBackend),
      precision: try field(root, K.topPrecision),
      inputs: try specs(root, K.topInputs),
      outputs: try specs(root, K.topOutputs),
      files: try fileEntries(folder, fileTable),
      pipeline: root[K.topPipeline] as? [String: Any])
  }

  func url(for role: String) throws -> URL {
    guard let entry = files[role] else { throw DemoError("manifest has no files.\(role) entry") }
    return entry.url
  }

  /// folder/relative (folder already resolved), refused unless it stays inside folder: no
  /// absolute path, no "..", no symlink leading out. `what` names the path in the message.
  static func inside(_ folder: URL, _ relative: String, what: String) throws -> URL {
    guard !relative.isEmpty else { throw DemoError("\(what) is an empty path; re-export the artifact") }
    guard !relative.hasPrefix("/") else {
      throw DemoError("\(what) is an absolute path, outside the artifact folder; re-export the artifact")
    }
    guard !relative.split(separator: "/").contains("..") else {
      throw DemoError("\(what) climbs out with '..', outside the artifact folder; re-export the artifact")
    }
    let url = folder.appendingPathComponent(relative).standardizedFileURL
    // A missing file has no link to follow (verifyFiles reports it). Resolve only existing ones:
    // resolvingSymlinksInPath drops "/private" only for paths that exist, as it did for folder.
    guard FileManager.default.fileExists(atPath: url.path) else { return url }
    let real = url.resolvingSymlinksInPath()
    guard isUnder(folder, real) else {
      throw DemoError("\(what) resolves to \(real.path), outside the artifact folder (a symlink?); copy real files")
    }
    return real
  }

  /// Whether resolved `url` is resolved `folder` itself or below it.
  static func isUnder(_ folder: URL, _ url: URL) -> Bool {
    let root = folder.path.hasSuffix("/") ? folder.path : folder.path + "/"
    return url.path == folder.path || url.path.hasPrefix(root)
  }

  static func isRequired(role: String) -> Bool {
    role == K.roleProgram || role == K.roleWeights || role == K.roleTestVectors
  }

  /// Checks size and sha256 of every listed file or folder that was copied, and that the
  /// required ones are there. Returns the roles checked (sorted).
  func verifyFiles() throws -> [String] {
    var checked: [String] = []
    for entry in files.values.sorted(by: { $0.role < $1.role }) {
      let url = entry.url
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
        if Self.isRequired(role: entry.role) {
          throw DemoError("files.\(entry.role) = \(entry.path) is missing; copy the artifact folder")
        }
        continue
      }
      let (digest, size) =
        isDirectory.boolValue ? try FileHashing.directoryDigest(url) : try FileHashing.fileDigest(url)
      if let expected = entry.bytes, expected != size {
        throw DemoError("\(entry.path) has \(size) bytes, manifest says \(expected); copy it again")
      }
      guard digest.lowercased() == entry.sha256.lowercased() else {
        throw DemoError("\(entry.path) sha256 \(digest) != manifest \(entry.sha256); copy it again")
      }
      checked.append(entry.role)
    }
    return checked
  }

  // MARK: typed access with messages that name the field

  static func field<T>(_ object: [String: Any], _ key: String) throws -> T {
    guard let raw = object[key], !(raw is NSNull) else {
      throw DemoError("manifest field '\(key)' is missing")
    }
    guard let value = raw as? T else {
      throw DemoError("manifest field '\(key)' has the wrong type (\(type(of: raw)))")
    }
    return value
  }

  static func specs(_ root: [String: Any], _ key: String) throws -> [TensorSpec] {
    let items: [[String: Any]] = try field(root, key)
    guard !items.isEmpty else { throw DemoError("manifest \(key) is empty") }
    return try items.map {
      TensorSpec(name: try field($0, K.specName), shape: try field($0, K.specShape),
                 dtype: try field($0, K.specDtype))
    }
  }

  private static func fileEntries(_ folder: URL, _ table: [String: Any]) throws -> [String: FileEntry] {
    var entries: [String: FileEntry] = [:]
    for (role, value) in table {
      guard let entry = value as? [String: Any] else { continue }  // a role left null
      let path: String = try field(entry, K.filePath)
      entries[role] = FileEntry(role: role, path: path,
                                url: try inside(folder, path, what: "files.\(role) = \(path)"),
                                sha256: try field(entry, K.fileSha256),
                                bytes: entry[K.fileBytes] as? Int)
    }
    return entries
  }
}

/// Nesting bound for JSON read from the artifact, as the Android app's Json.MAX_DEPTH:
/// JSONSerialization's own limit depends on the OS version, so deep input is refused here first.
enum JSONDepth {
  static let maxDepth = 64

  /// Whether brackets outside strings nest deeper than maxDepth; one pass, no recursion.
  static func exceeds(_ data: Data) -> Bool {
    var depth = 0
    var inString = false
    var escaped = false
    for byte in data {
      if inString {
        if escaped {
          escaped = false
        } else if byte == UInt8(ascii: "\\") {
          escaped = true
        } else if byte == UInt8(ascii: "\"") {
          inString = false
        }
      } else if byte == UInt8(ascii: "\"") {
        inString = true
      } else if byte == UInt8(ascii: "[") || byte == UInt8(ascii: "{") {
        depth += 1
        if depth > maxDepth { return true }
      } else if byte == UInt8(ascii: "]") || byte == UInt8(ascii: "}") {
        depth -= 1
      }
    }
    return false
  }
}

/// sha256 the way edit_mobile.export.manifest computes it.
enum FileHashing {
  static func fileDigest(_ url: URL) throws -> (String, Int) {
    let handle = try FileHandle(forReadingFrom: url)
    defer { try? handle.close() }
    var hasher = SHA256()
    var size = 0
    while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
      hasher.update(data: chunk)
      size += chunk.count
    }
    return (hex(hasher.finalize()), size)
  }

  /// A folder (.mlpackage): sha256 over "relative/path\0<file sha256 hex>\n" for every file,
  /// sorted by path components as Python's pathlib sorts (so "a/b" comes before "a.txt").
  static func directoryDigest(_ folder: URL) throws -> (String, Int) {
    let root = folder.standardizedFileURL.resolvingSymlinksInPath()
    var relativePaths: [String] = []
    let enumerator = FileManager.default.enumerator(
      at: root, includingPropertiesForKeys: [.isRegularFileKey])
    while let url = enumerator?.nextObject() as? URL {
      let full = url.standardizedFileURL.resolvingSymlinksInPath().path
      // Checked before the file type: a symlink leading out is refused, not hashed or skipped.
      guard full.hasPrefix(root.path + "/") else {
        throw DemoError("\(root.lastPathComponent)/\(url.lastPathComponent) resolves to \(full), outside \(root.lastPathComponent)/ (a symlink); copy real files")
      }
      guard try url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile == true else {
        continue
      }
      relativePaths.append(String(full.dropFirst(root.path.count + 1)))
    }
    relativePaths.sort {
      $0.split(separator: "/").lexicographicallyPrecedes($1.split(separator: "/"))
    }
    var hasher = SHA256()
    var total = 0
    for relative in relativePaths {
      let (digest, size) = try fileDigest(root.appendingPathComponent(relative))
      hasher.update(data: Data("\(relative)\0\(digest)\n".utf8))
      total += size
    }
    return (hex(hasher.finalize()), total)
  }

  private static func hex(_ digest: SHA256.Digest) -> String {
    digest.map { String(format: "%02x", $0) }.joined()
  }
}
