package org.editmobile.demo

import java.io.File
import org.pytorch.executorch.DType
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * The phone's MethodRunner: a pipeline artifact's methods (encode_prompt, denoise_HxW,
 * decode_HxW) run by ExecuTorch's Module. The program must hold its weights (export --pipeline
 * --weights embedded, the default below 1 GiB): this AAR's Module.load takes one file.
 */
class PipelineMethods(programFile: File, numThreads: Int) : MethodRunner, AutoCloseable {
  private val module: Module = Module.load(programFile.absolutePath, Module.LOAD_MODE_MMAP, numThreads)

  /** Loads every method up front, so the first image is not charged their load time. */
  fun loadAll(spec: PipelineSpec) = spec.methods.keys.forEach { load(it) }

  /** Loads one method (the benchmark times each; the first also reads the program). */
  fun load(method: String) {
    module.loadMethod(method)
  }

  /** The ETDump of every run since load, as ExecuTorchRunner writes it; null when none. */
  fun writeEtdump(target: File): String? = ExecuTorchRunner.writeEtdump(module, target)

  override fun run(method: String, inputs: List<HostTensor>): List<HostTensor> {
    val values =
        inputs
            .map { input ->
              EValue.from(
                  if (input.floats != null) Tensor.fromBlob(input.floats, input.shape)
                  else Tensor.fromBlob(input.longs, input.shape))
            }
            .toTypedArray()
    return module.execute(method, *values).map { value ->
      val tensor = value.toTensor()
      if (tensor.dtype() != DType.FLOAT) {
        throw DemoException("$method returned ${tensor.dtype()}, not float32; re-export the artifact")
      }
      HostTensor.ofFloats(tensor.dataAsFloatArray, *tensor.shape())
    }
  }

  override fun close() = module.destroy()
}
