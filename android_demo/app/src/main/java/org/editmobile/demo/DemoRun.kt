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

/** A pipeline artifact's benchmark: every method's figures, the image cost, where they came from. */
class PipelineOutcome(
    val manifest: ArtifactManifest,
    val filesVerified: List<String>,
    val result: PipelineBenchmark.Result,
    val memorySource: String,
    val etdumpPath: String?,
)

/**
 * The whole demo for one artifact folder: verify, load, run the test vectors once for accuracy,
 * then warm up and time `timedRuns` calls for latency. In benchmark mode, also write the ETDump
 * the runtime recorded (every run above, when the AAR was built with the event tracer).
 * A pipeline artifact (runPipeline): the same for every method of its program, timed by the
 * plain-Java PipelineBenchmark; only the ExecuTorch runner, memory and ETDump are wired here.
 */
object DemoRun {
  const val RUNTIME = "executorch-android"

  fun runPipeline(folder: File, settings: RunSettings, progress: (String) -> Unit): PipelineOutcome {
    progress("reading manifest and checking sha256 of ${folder.name} ...")
    val check = ArtifactCheck.prepare(folder)
    val spec = PipelineSpec.of(check.manifest)
    val programFile = check.manifest.programFileForAndroid()
    check.manifest.weightsFileOrNull()?.let {
      throw DemoException(
          "${programFile.name} keeps its weights in ${it.name}, which this app's ExecuTorch Module.load " +
              "cannot take; re-export with --pipeline --weights embedded (below 2 GB)")
    }
    val vectors = PipelineBenchmark.loadVectors(check.manifest, spec)
    PipelineMethods(programFile, settings.numThreads).use { methods ->
      var memorySource = "none"
      val result =
          PipelineBenchmark(spec, methods)
              .loader { name -> methods.load(name) }
              .memory {
                val (bytes, source) = PeakMemory.read()
                memorySource = source
                bytes
              }
              .progress { text -> progress(text) }
              .run(vectors, settings.warmupRuns, settings.timedRuns)
      val etdump = settings.resultsFile?.let { methods.writeEtdump(etdumpFileFor(it)) }
      return PipelineOutcome(check.manifest, check.filesVerified, result, memorySource, etdump)
    }
  }

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
 * (edit-mobile/device-benchmark) is defined in edit_mobile/runtime/device_profile.py, its keys
 * are ResultsKeys (plain Java, with the pipeline blocks PipelineBenchmark builds), and it is
 * documented in android_demo/README.md.
 */
object BenchmarkResults {
  /** The method the app times: the one the manifest's inputs and test vectors are for. */
  private const val METHOD = "forward"

  fun ok(settings: RunSettings, outcome: RunOutcome, backends: List<String>): JSONObject {
    val (peakBytes, memorySource) = PeakMemory.read()
    val method =
        JSONObject()
            .put(ResultsKeys.METHOD_WARMUP, settings.warmupRuns)
            .put(ResultsKeys.METHOD_LATENCIES_MS, JSONArray().apply { outcome.runsMs.forEach { put(it) } })
            .put(ResultsKeys.METHOD_LOAD_MS, outcome.loadMs)
            .put(ResultsKeys.METHOD_PEAK_MEMORY_BYTES, peakBytes ?: JSONObject.NULL)
            .put(ResultsKeys.METHOD_MEMORY_SOURCE, memorySource)
            .put(ResultsKeys.METHOD_ETDUMP, outcome.etdumpPath ?: JSONObject.NULL)
    return common(settings, outcome.manifest, backends)
        .put(ResultsKeys.TOP_METHODS, JSONObject().put(METHOD, method))
  }

  /** A pipeline artifact: every method in "methods", and the "pipeline" block (image cost). */
  fun okPipeline(settings: RunSettings, outcome: PipelineOutcome, backends: List<String>): JSONObject {
    val result = outcome.result
    return common(settings, outcome.manifest, backends)
        .put(
            ResultsKeys.TOP_METHODS,
            JSONObject(Json.write(result.methodsJson(outcome.memorySource, outcome.etdumpPath))))
        .put(ResultsKeys.TOP_PIPELINE, JSONObject(Json.write(result.pipelineJson())))
  }

  fun error(message: String): JSONObject = header("error").put(ResultsKeys.TOP_ERROR, message)

  private fun common(settings: RunSettings, manifest: ArtifactManifest, backends: List<String>): JSONObject =
      header("ok")
          .put(ResultsKeys.TOP_DEVICE, device())
          .put(ResultsKeys.TOP_RUNTIME, DemoRun.RUNTIME)
          .put(ResultsKeys.TOP_BACKENDS, JSONArray(backends))
          .put(ResultsKeys.TOP_ARTIFACT, manifest.folder.absolutePath)
          .put(ResultsKeys.TOP_MODEL, manifest.modelSource)
          .put(ResultsKeys.TOP_THREADS, settings.numThreads)

  private fun header(status: String): JSONObject =
      JSONObject()
          .put(ResultsKeys.TOP_SCHEMA, ResultsKeys.SCHEMA_NAME)
          .put(ResultsKeys.TOP_SCHEMA_VERSION, ResultsKeys.SCHEMA_VERSION)
          .put(ResultsKeys.TOP_STATUS, status)

  private fun device(): JSONObject =
      JSONObject()
          .put(ResultsKeys.DEVICE_MODEL, Build.MODEL)
          .put(ResultsKeys.DEVICE_MANUFACTURER, Build.MANUFACTURER)
          .put(ResultsKeys.DEVICE_OS, "Android ${Build.VERSION.RELEASE} (API ${Build.VERSION.SDK_INT})")
          .put(ResultsKeys.DEVICE_ABI, Build.SUPPORTED_ABIS.firstOrNull() ?: "unknown")

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
