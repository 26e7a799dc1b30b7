package org.editmobile.demo

import android.os.Build
import android.os.Debug
import java.io.File
import java.io.IOException
import org.json.JSONArray
import org.json.JSONObject

/** Settings of one run, taken from the launch intent (see README). */
data class RunSettings(
    val warmupRuns: Int = 3,
    val timedRuns: Int = 20,
    val numThreads: Int = 0,
    /** Benchmark mode (`--ez benchmark true --es results PATH`): where the results JSON goes. */
    val resultsFile: File? = null,
)

/** One run: the report for the screen and log line, and the raw figures of the results JSON. */
class RunOutcome(
    val report: DemoReport,
    val manifest: ArtifactManifest,
    val loadMs: Double,
    val runsMs: DoubleArray,
    val etdumpPath: String?,
)

/**
 * The whole demo for one artifact folder: verify, load, run the test vectors once for accuracy,
 * then warm up and time `timedRuns` calls for latency. In benchmark mode, also write the ETDump
 * the runtime recorded (every run above, when the AAR was built with the event tracer).
 */
object DemoRun {
  const val RUNTIME = "executorch-android"

  fun run(folder: File, settings: RunSettings, progress: (String) -> Unit): RunOutcome {
    progress("reading manifest and checking sha256 of ${folder.name} ...")
    val check = ArtifactCheck.prepare(folder)
    val programFile = check.manifest.programFileForAndroid()
    check.manifest.weightsFileOrNull()?.let {
      // executorch-android 1.5's Module.load takes one file; only its LLM module takes .ptd data.
      throw DemoException(
          "${programFile.name} keeps its weights in ${it.name}, which this app's ExecuTorch Module.load " +
              "cannot take; export with --weights embedded (below 2 GB)")
    }

    progress("loading ${programFile.name} ...")
    val loadStart = System.nanoTime()
    ExecuTorchRunner(programFile, settings.numThreads).use { runner ->
      runner.loadForward()
      val loadMs = (System.nanoTime() - loadStart) / 1e6
      val inputs = runner.makeInputs(check.vectors.inputs)

      progress("running the test vectors ...")
      val outputChecks = check.compare(runner.outputsAsFloats(runner.forward(inputs)))

      progress("timing ${settings.timedRuns} runs after ${settings.warmupRuns} warm-up ...")
      repeat(settings.warmupRuns) { runner.forward(inputs) }
      val runsMs =
          DoubleArray(settings.timedRuns) {
            val start = System.nanoTime()
            runner.forward(inputs)
            (System.nanoTime() - start) / 1e6
          }
      val etdump = settings.resultsFile?.let { runner.writeEtdump(etdumpFileFor(it)) }
      val report =
          DemoReport(
              RUNTIME,
              check.manifest,
              check.filesVerified,
              loadMs,
              outputChecks,
              settings.warmupRuns,
              Metrics.latency(runsMs),
          )
      return RunOutcome(report, check.manifest, loadMs, runsMs, etdump)
    }
  }

  /** results.json -> results.etdp beside it (the host pulls the path the JSON names). */
  fun etdumpFileFor(results: File): File =
      File(results.parentFile, results.name.removeSuffix(".json") + ".etdp")
}

/**
 * The benchmark results JSON that `edit-mobile profile ART --device android` pulls. Its schema
 * (edit-mobile/device-benchmark) is defined in edit_mobile/runtime/device_profile.py and
 * documented in android_demo/README.md.
 */
object BenchmarkResults {
  // BEGIN RESULTS KEYS -- every key of the results JSON; tests/test_device_profile.py compares
  // this block with edit_mobile.runtime.device_profile (RESULTS_TOP, RESULTS_DEVICE,
  // RESULTS_METHOD). Prefix = where the key lives: TOP_ top level, DEVICE_ in "device",
  // METHOD_ in each "methods" entry.
  const val SCHEMA_NAME = "edit-mobile/device-benchmark"
  const val SCHEMA_VERSION = 1
  const val TOP_SCHEMA = "schema"
  const val TOP_SCHEMA_VERSION = "schema_version"
  const val TOP_STATUS = "status"
  const val TOP_ERROR = "error"
  const val TOP_DEVICE = "device"
  const val TOP_RUNTIME = "runtime"
  const val TOP_BACKENDS = "backends"
  const val TOP_ARTIFACT = "artifact"
  const val TOP_MODEL = "model"
  const val TOP_THREADS = "threads"
  const val TOP_METHODS = "methods"
  const val DEVICE_MODEL = "model"
  const val DEVICE_MANUFACTURER = "manufacturer"
  const val DEVICE_OS = "os"
  const val DEVICE_ABI = "abi"
  const val METHOD_WARMUP = "warmup"
  const val METHOD_LATENCIES_MS = "latencies_ms"
  const val METHOD_LOAD_MS = "load_ms"
  const val METHOD_PEAK_MEMORY_BYTES = "peak_memory_bytes"
  const val METHOD_MEMORY_SOURCE = "memory_source"
  const val METHOD_ETDUMP = "etdump"
  // END RESULTS KEYS

  /** The method the app times: the one the manifest's inputs and test vectors are for. */
  private const val METHOD = "forward"

  fun ok(settings: RunSettings, outcome: RunOutcome, backends: List<String>): JSONObject {
    val (peakBytes, memorySource) = PeakMemory.read()
    val method =
        JSONObject()
            .put(METHOD_WARMUP, settings.warmupRuns)
            .put(METHOD_LATENCIES_MS, JSONArray().apply { outcome.runsMs.forEach { put(it) } })
            .put(METHOD_LOAD_MS, outcome.loadMs)
            .put(METHOD_PEAK_MEMORY_BYTES, peakBytes ?: JSONObject.NULL)
            .put(METHOD_MEMORY_SOURCE, memorySource)
            .put(METHOD_ETDUMP, outcome.etdumpPath ?: JSONObject.NULL)
    return header("ok")
        .put(TOP_DEVICE, device())
        .put(TOP_RUNTIME, DemoRun.RUNTIME)
        .put(TOP_BACKENDS, JSONArray(backends))
        .put(TOP_ARTIFACT, outcome.manifest.folder.absolutePath)
        .put(TOP_MODEL, outcome.manifest.modelSource)
        .put(TOP_THREADS, settings.numThreads)
        .put(TOP_METHODS, JSONObject().put(METHOD, method))
  }

  fun error(message: String): JSONObject = header("error").put(TOP_ERROR, message)

  private fun header(status: String): JSONObject =
      JSONObject()
          .put(TOP_SCHEMA, SCHEMA_NAME)
          .put(TOP_SCHEMA_VERSION, SCHEMA_VERSION)
          .put(TOP_STATUS, status)

  private fun device(): JSONObject =
      JSONObject()
          .put(DEVICE_MODEL, Build.MODEL)
          .put(DEVICE_MANUFACTURER, Build.MANUFACTURER)
          .put(DEVICE_OS, "Android ${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})")
          .put(DEVICE_ABI, Build.SUPPORTED_ABIS.firstOrNull() ?: "unknown")

  /** Written beside `file`, then renamed: the host polls for it and must never read half of it. */
  fun write(file: File, json: JSONObject) {
    val folder = file.parentFile ?: throw IOException("results path $file has no folder")
    if (!folder.isDirectory && !folder.mkdirs()) throw IOException("cannot create $folder")
    val partial = File(folder, file.name + ".partial")
    partial.writeText(json.toString(1))
    if (!partial.renameTo(file)) throw IOException("cannot rename $partial to ${file.name}")
  }
}

/**
 * The process's peak resident memory, as the host profile measures it: the kernel's high-water
 * mark (VmHWM in /proc/self/status). Where that cannot be read, the current PSS from
 * android.os.Debug after the runs, a lower bound; the source is named in the results JSON.
 */
object PeakMemory {
  fun read(): Pair<Long?, String> {
    val hwmKib =
        try {
          File("/proc/self/status")
              .readLines()
              .firstOrNull { it.startsWith("VmHWM:") }
              ?.split(Regex("\\s+"))
              ?.getOrNull(1)
              ?.toLongOrNull()
        } catch (err: IOException) {
          null
        }
    if (hwmKib != null) return Pair(hwmKib * 1024, "VmHWM")
    val pssKib = Debug.getPss()
    return if (pssKib > 0) Pair(pssKib * 1024, "Debug.getPss") else Pair(null, "none")
  }
}
