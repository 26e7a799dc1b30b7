package org.editmobile.demo

import java.io.File
import org.pytorch.executorch.DType
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * Runs an ExecuTorch program (.pte) through the executorch-android AAR (org.pytorch.executorch,
 * 1.5.x API: Module.load, loadMethod, forward(vararg EValue), Tensor.fromBlob). The ETDump and
 * backend-list calls differ between AAR releases and are found by reflection (see below).
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

  /**
   * Writes the ETDump the runtime recorded since load to [target] and returns the path it went
   * to, or null when the AAR records none (built without the event tracer). Newer AARs take a
   * path (`etdump(String)`); older ones write LEGACY_ETDUMP_PATH (`etdump()`). Both are looked up
   * at run time, so the app builds against either.
   */
  fun writeEtdump(target: File): String? = writeEtdump(module, target)

  override fun close() = module.destroy()

  companion object {
    const val LEGACY_ETDUMP_PATH = "/data/local/tmp/result.etdump"

    /** The ETDump of [module] (see the member writeEtdump); PipelineMethods writes its own with it. */
    fun writeEtdump(module: Module, target: File): String? =
        try {
          val withPath = Module::class.java.methods.firstOrNull { isEtdump(it, String::class.java) }
          val legacy = Module::class.java.methods.firstOrNull { isEtdump(it) }
          when {
            withPath != null ->
                target.absolutePath.takeIf { withPath.invoke(module, target.absolutePath) == true }
            legacy != null -> LEGACY_ETDUMP_PATH.takeIf { legacy.invoke(module) == true }
            else -> null
          }
        } catch (err: Exception) { // a failed dump costs the operator table, not the results
          null
        } catch (err: LinkageError) { // the Java method exists, its native half does not
          null
        }

    private fun isEtdump(method: java.lang.reflect.Method, vararg parameters: Class<*>) =
        method.name == "etdump" && method.parameterTypes.contentEquals(parameters)

    /** Backends the runtime registered (ExecuTorchRuntime.getRegisteredBackends, where the AAR has it). */
    fun registeredBackends(): List<String> =
        try {
          val runtime = Class.forName("org.pytorch.executorch.ExecuTorchRuntime")
          val names = runtime.getMethod("getRegisteredBackends").invoke(null) as? Array<*>
          names?.map { it.toString() } ?: emptyList()
        } catch (err: Exception) {
          emptyList()
        } catch (err: LinkageError) {
          emptyList()
        }
  }
}
