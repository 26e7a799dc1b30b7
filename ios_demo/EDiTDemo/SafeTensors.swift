import Foundation

/// Reader for the safetensors format: an 8-byte little-endian header length, a JSON header
/// {name: {"dtype", "shape", "data_offsets": [begin, end]}} (offsets from the end of the
/// header), then the raw little-endian tensor bytes.
/// The file may be hostile: every length and offset is checked with arithmetic that reports
/// overflow instead of trapping, against the bytes really there, before anything is copied.
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
    // Compared with what is left after the 8 length bytes (a sum could overflow); printed
    // signed, as the Android app does.
    guard headerLength > 0, headerLength <= UInt64(bytes.count - 8) else {
      throw DemoError("\(label): header length \(Int64(bitPattern: headerLength)) does not fit the file")
    }
    let dataStart = 8 + Int(headerLength)  // <= bytes.count
    let headerData = bytes.subdata(in: 8..<dataStart)
    guard !JSONDepth.exceeds(headerData) else {
      throw DemoError("\(label): the header is not valid JSON: nested deeper than \(JSONDepth.maxDepth) levels")
    }
    guard let header = (try? JSONSerialization.jsonObject(with: headerData)) as? [String: Any] else {
      throw DemoError("\(label): the header is not a JSON object")
    }
    var tensors: [String: SafeTensor] = [:]
    for (name, value) in header where name != "__metadata__" {
      let tensor = "\(label): tensor \(name)"
      guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
            let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int],
            offsets.count == 2
      else { throw DemoError("\(tensor) has a malformed header entry; the file is damaged") }
      let (begin, end) = (offsets[0], offsets[1])
      guard begin >= 0, shape.allSatisfy({ $0 >= 0 }) else {
        throw DemoError("\(tensor) has a negative shape or offset; the file is damaged")
      }
      let elementBytes = try elementSize(dtype)
      guard let expectedBytes = checkedProduct(shape + [elementBytes]) else {
        throw DemoError("\(tensor) shape \(shape) has too many elements; the file is damaged")
      }
      guard begin <= end else {
        throw DemoError("\(tensor) data_offsets [\(begin), \(end)) are reversed; the file is damaged")
      }
      let (stop, overflow) = dataStart.addingReportingOverflow(end)
      guard !overflow, stop <= bytes.count else {
        throw DemoError("\(tensor) data_offsets [\(begin), \(end)) run past the end of the \(bytes.count - dataStart) data bytes; the file is damaged or truncated")
      }
      // 0 <= begin <= end <= bytes.count - dataStart from here: no sum below can overflow.
      guard end - begin == expectedBytes else {
        throw DemoError("\(tensor) data_offsets [\(begin), \(end)) hold \(end - begin) bytes, shape \(shape) of \(dtype) needs \(expectedBytes); the file is damaged")
      }
      tensors[name] = SafeTensor(name: name, dtype: dtype, shape: shape,
                                 data: bytes.subdata(in: (dataStart + begin)..<stop))
    }
    return tensors
  }

  /// The product of non-negative factors, nil when it does not fit in an Int.
  static func checkedProduct(_ factors: [Int]) -> Int? {
    var product = 1
    for factor in factors {
      let (next, overflow) = product.multipliedReportingOverflow(by: factor)
      if overflow { return nil }
      product = next
    }
    return product
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
