import CoreML
import Foundation

/// Runs a Core ML .mlpackage (backend "coreml"): compiled on the device, inputs as MLMultiArray
/// named as the manifest's input specs, outputs read by the manifest's output names.
final class CoreMLRunner: ProgramRunner {
  let runtimeName = "coreml"
  private let model: MLModel
  private let inputSpecs: [TensorSpec]
  private let outputSpecs: [TensorSpec]
  private var provider: MLFeatureProvider?
  private var lastResult: MLFeatureProvider?

  init(packageURL: URL, manifest: ArtifactManifest, computeUnits: MLComputeUnits) async throws {
    let compiledURL = try await MLModel.compileModel(at: packageURL)  // .mlmodelc in a temp dir
    let configuration = MLModelConfiguration()
    configuration.computeUnits = computeUnits
    model = try MLModel(contentsOf: compiledURL, configuration: configuration)
    inputSpecs = manifest.inputs
    outputSpecs = manifest.outputs
    let modelInputs = Set(model.modelDescription.inputDescriptionsByName.keys)
    for spec in inputSpecs where !modelInputs.contains(spec.name) {
      throw DemoError("the .mlpackage has no input '\(spec.name)'; it has \(modelInputs.sorted())")
    }
  }

  func prepare(inputs vectors: [SafeTensor]) throws {
    var features: [String: MLFeatureValue] = [:]
    for (spec, tensor) in zip(inputSpecs, vectors) {
      let dataType: MLMultiArrayDataType = tensor.dtype == "F16" ? .float16 : .float32
      let array = try MLMultiArray(shape: spec.shape.map { NSNumber(value: $0) }, dataType: dataType)
      // A new MLMultiArray is contiguous in C order, like the safetensors bytes.
      array.withUnsafeMutableBytes { buffer, _ in _ = tensor.data.copyBytes(to: buffer) }
      features[spec.name] = MLFeatureValue(multiArray: array)
    }
    provider = try MLDictionaryFeatureProvider(dictionary: features)
  }

  func forward() throws {
    guard let provider else { throw DemoError("prepare(inputs:) was not called") }
    lastResult = try model.prediction(from: provider)
  }

  func outputs() throws -> [[Float]] {
    guard let result = lastResult else { throw DemoError("forward() was not called") }
    return try outputSpecs.map { spec in
      guard let array = result.featureValue(for: spec.name)?.multiArrayValue else {
        throw DemoError("the model has no output '\(spec.name)'; it has \(result.featureNames.sorted())")
      }
      // MLShapedArray reads through the array's strides and converts float16 to Float.
      return MLShapedArray<Float>(converting: array).scalars
    }
  }
}
