package org.editmobile.demo

import java.io.File

/** Settings of one run, taken from the launch intent (see README). */
data class RunSettings(val warmupRuns: Int = 3, val timedRuns: Int = 20, val numThreads: Int = 0)

/**
 * The whole demo for one artifact folder: verify, load, run the test vectors once for accuracy,
 * then warm up and time `timedRuns` calls for latency.
 */
object DemoRun {
  fun run(folder: File, settings: RunSettings, progress: (String) -> Unit): DemoReport {
    progress("reading manifest and checking sha256 of ${folder.name} ...")
    val check = ArtifactCheck.prepare(folder)
    val programFile = check.manifest.programFileForAndroid()

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
      return DemoReport(
          "executorch-android",
          check.manifest,
          check.filesVerified,
          loadMs,
          outputChecks,
          settings.warmupRuns,
          Metrics.latency(runsMs),
      )
    }
  }
}
