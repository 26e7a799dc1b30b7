package org.editmobile.demo

import java.io.File
import org.pytorch.executorch.DType
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * Runs an ExecuTorch program (.pte) through the executorch-android AAR (org.pytorch.executorch,
 * 1.5.x API: Module.load, loadMethod, forward(vararg EValue), Tensor.fromBlob).
 */
class ExecuTorchRunner(programFile: File, numThreads: Int) : AutoCloseable {
  private val module: Module = Module.load(programFile.absolutePath, Module.LOAD_MODE_MMAP, numThreads)

  /** Loads "forward" eagerly so that load time is not charged to the first timed run. */
  fun loadForward() = module.loadMethod("forward")

  /** Builds ExecuTorch input tensors once; they can be reused for every run. */
  fun makeInputs(vectors: List<SafeTensors.Entry>): Array<EValue> =
      vectors
          .map { entry ->
            val tensor =
                when (entry.dtype) {
                  "F32" -> Tensor.fromBlob(entry.toFloats(), entry.shape)
                  // fromBlob(ShortArray) makes a float16 tensor from raw half bits.
                  "F16" -> Tensor.fromBlob(entry.toShorts(), entry.shape)
                  else -> throw DemoException("${entry.name}: dtype ${entry.dtype} not supported")
                }
            EValue.from(tensor)
          }
          .toTypedArray()

  fun forward(inputs: Array<EValue>): Array<EValue> = module.forward(*inputs)

  /** Output tensors widened to float32, in program order. */
  fun outputsAsFloats(outputs: Array<EValue>): List<FloatArray> =
      outputs.map { value ->
        val tensor = value.toTensor()
        when (tensor.dtype()) {
          DType.FLOAT -> tensor.dataAsFloatArray
          DType.HALF -> {
            val bits = tensor.dataAsShortArray
            FloatArray(bits.size) { SafeTensors.halfToFloat(bits[it]) }
          }
          else -> throw DemoException("output dtype ${tensor.dtype()} is not float32/float16")
        }
      }

  override fun close() = module.destroy()
}
