import Foundation

/// Reader for the safetensors format: an 8-byte little-endian header length, a JSON header
/// {name: {"dtype", "shape", "data_offsets": [begin, end]}} (offsets from the end of the
/// header), then the raw little-endian tensor bytes.
struct SafeTensor {
  let name: String
  let dtype: String  // "F32", "F16", ...
  let shape: [Int]
  let data: Data  // little-endian bytes, count * elementSize(dtype)

  var count: Int { shape.reduce(1, *) }

  /// Values widened to Float (F32 as is; F16 and BF16 converted exactly).
  func floats() throws -> [Float] {
    switch dtype {
    case "F32":
      return data.withUnsafeBytes { raw in
        (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
      }
    case "F16":
      return data.withUnsafeBytes { raw in
        (0..<count).map { SafeTensors.halfToFloat(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) }
      }
    case "BF16":
      return data.withUnsafeBytes { raw in
        (0..<count).map { Float(bitPattern: UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) << 16) }
      }
    default:
      throw DemoError("\(name): dtype \(dtype) cannot be read as floats")
    }
  }
}

enum SafeTensors {
  /// Safetensors dtype for a manifest dtype ("float32" -> "F32").
  static func dtype(forManifest manifestDtype: String) throws -> String {
    switch manifestDtype {
    case ManifestKeys.dtypeFloat32: return "F32"
    case ManifestKeys.dtypeFloat16: return "F16"
    default: throw DemoError("manifest dtype \(manifestDtype) is not supported (float32, float16)")
    }
  }

  static func elementSize(_ dtype: String) throws -> Int {
    switch dtype {
    case "F64", "I64": return 8
    case "F32", "I32": return 4
    case "F16", "BF16", "I16": return 2
    case "U8", "I8", "BOOL": return 1
    default: throw DemoError("unknown safetensors dtype \(dtype)")
    }
  }

  /// Every tensor of the file ("__metadata__" skipped).
  static func read(_ url: URL) throws -> [String: SafeTensor] {
    let bytes = try Data(contentsOf: url, options: .mappedIfSafe)
    let label = url.lastPathComponent
    guard bytes.count >= 8 else { throw DemoError("\(label) is shorter than a safetensors header") }
    let headerLength = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    guard headerLength > 0, 8 + headerLength <= UInt64(bytes.count) else {
      throw DemoError("\(label): header length \(headerLength) does not fit the file")
    }
    let dataStart = 8 + Int(headerLength)
    let headerData = bytes.subdata(in: 8..<dataStart)
    guard let header = (try? JSONSerialization.jsonObject(with: headerData)) as? [String: Any] else {
      throw DemoError("\(label): the header is not a JSON object")
    }
    var tensors: [String: SafeTensor] = [:]
    for (name, value) in header where name != "__metadata__" {
      guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
            let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int],
            offsets.count == 2
      else { throw DemoError("\(label): tensor \(name) has a malformed header entry") }
      let (begin, end) = (offsets[0], offsets[1])
      guard end - begin == shape.reduce(1, *) * (try elementSize(dtype)),
            dataStart + end <= bytes.count
      else {
        throw DemoError("\(label): tensor \(name) offsets do not match its shape and dtype; the file is damaged")
      }
      tensors[name] = SafeTensor(name: name, dtype: dtype, shape: shape,
                                 data: bytes.subdata(in: (dataStart + begin)..<(dataStart + end)))
    }
    return tensors
  }

  /// IEEE 754 binary16 bits to Float, subnormals, infinities and NaN included (portable: no
  /// Float16, which x86 macOS lacks).
  static func halfToFloat(_ bits: UInt16) -> Float {
    let sign: UInt32 = UInt32(bits & 0x8000) << 16
    let exponent = UInt32(bits >> 10) & 0x1f
    let mantissa = UInt32(bits & 0x3ff)
    if exponent == 0x1f { return Float(bitPattern: sign | 0x7f80_0000 | (mantissa << 13)) }
    if exponent == 0 {
      let magnitude = Float(mantissa) * 5.9604645e-8  // mantissa * 2^-24, exact
      return sign == 0 ? magnitude : -magnitude
    }
    return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
  }
}

/// The manifest's test vectors in the program's input order, checked against the specs.
struct TestVectors {
  let inputs: [SafeTensor]
  let expectedOutputs: [SafeTensor]

  static func load(_ manifest: ArtifactManifest) throws -> TestVectors {
    let url = try manifest.url(for: ManifestKeys.roleTestVectors)
    let tensors = try SafeTensors.read(url)
    func matching(_ specs: [TensorSpec], _ prefix: String) throws -> [SafeTensor] {
      try specs.map { spec in
        let key = prefix + spec.name
        guard let tensor = tensors[key] else {
          throw DemoError("\(url.lastPathComponent) has no tensor '\(key)'; it holds \(tensors.keys.sorted())")
        }
        guard tensor.shape == spec.shape else {
          throw DemoError("\(key) has shape \(tensor.shape), manifest says \(spec.shape)")
        }
        guard tensor.dtype == (try SafeTensors.dtype(forManifest: spec.dtype)) else {
          throw DemoError("\(key) has dtype \(tensor.dtype), manifest says \(spec.dtype)")
        }
        return tensor
      }
    }
    return TestVectors(
      inputs: try matching(manifest.inputs, ManifestKeys.vectorInputPrefix),
      expectedOutputs: try matching(manifest.outputs, ManifestKeys.vectorOutputPrefix))
  }
}
