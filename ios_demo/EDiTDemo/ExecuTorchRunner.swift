import ExecuTorch
import Foundation

/// Runs an ExecuTorch program (.pte) with ExecuTorch's Swift API (swiftpm-1.5.x: Module,
/// AnyTensor, Value). Delegates (XNNPACK, Core ML) register through the linked backend products.
final class ExecuTorchRunner: ProgramRunner {
  let runtimeName = "executorch-ios"
  private let module: Module
  private let method: String
  private var inputs: [AnyTensor] = []
  private var lastOutputs: [Value] = []

  /// `weightsURL`: the program's weights kept outside it (model.ptd), if the manifest lists them;
  /// `method`: the one timed ("forward", or a pipeline program's denoise method).
  init(programURL: URL, weightsURL: URL?, method: String) throws {
    self.method = method
    module = ExecuTorchRunner.module(programURL: programURL, weightsURL: weightsURL)
    try module.load(method)  // eager, so load time is not charged to the first timed run
  }

  func prepare(inputs vectors: [SafeTensor]) throws {
    inputs = try vectors.map { tensor in
      let dataType: DataType
      switch tensor.dtype {
      case "F32": dataType = .float
      case "F16": dataType = .half
      default: throw DemoError("\(tensor.name): dtype \(tensor.dtype) not supported")
      }
      // The safetensors bytes are already the tensor's little-endian contiguous layout.
      return AnyTensor(data: tensor.data, shape: tensor.shape, dataType: dataType)
    }
  }

  func forward() throws {
    let values: [Value] = try module.execute(method, inputs)
    lastOutputs = values
  }

  func outputs() throws -> [[Float]] {
    try ExecuTorchRunner.floats(lastOutputs, of: method)
  }

  /// The program with its weights kept outside it (model.ptd), if any, given to the runtime.
  static func module(programURL: URL, weightsURL: URL?) -> Module {
    guard let weightsURL else { return Module(filePath: programURL.path) }
    return Module(filePath: programURL.path, dataFilePaths: [weightsURL.path], loadMode: .mmap)
  }

  /// A method's outputs widened to Float, in order.
  static func floats(_ values: [Value], of method: String) throws -> [[Float]] {
    try values.map { value in
      guard let tensor = value.anyTensor else { throw DemoError("\(method) returned a non-tensor output") }
      // copy(to:) converts half (or float) to a float32 tensor we can read as [Float].
      guard let floats: Tensor<Float> = tensor.copy(to: .float).asTensor() else {
        throw DemoError("\(method) output of dtype \(tensor.dataType) cannot be read as float32")
      }
      return floats.scalars()
    }
  }
}
