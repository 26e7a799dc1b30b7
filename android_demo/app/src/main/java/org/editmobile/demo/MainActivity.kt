package org.editmobile.demo

import android.app.Activity
import android.content.Intent
import android.os.Bundle
import android.util.Log
import android.widget.ScrollView
import android.widget.TextView
import java.io.File
import kotlin.concurrent.thread

/**
 * One screen: runs the artifact folder named by the intent extra "artifact" (default: the only
 * folder under files/artifacts/) and shows the report. Every result is also logged under the tag
 * EDiTDemo as one `EDIT_DEMO_RESULT {json}` line for `adb logcat -s EDiTDemo`.
 *
 * Benchmark mode (`--ez benchmark true --es results PATH`, what `edit-mobile profile --device
 * android` starts): the same run, and the results JSON (BenchmarkResults) written to PATH, also
 * when the run fails, so the host reads an error instead of waiting for its timeout.
 */
class MainActivity : Activity() {
  private lateinit var screen: TextView

  override fun onCreate(savedInstanceState: Bundle?) {
    super.onCreate(savedInstanceState)
    screen = TextView(this).apply { setPadding(32, 32, 32, 32); textSize = 14f }
    setContentView(ScrollView(this).apply { addView(screen) })
    val launch = intent
    thread(name = "edit-demo") { runDemo(launch) }
  }

  private fun runDemo(launch: Intent) {
    var resultsFile: File? = null
    try {
      resultsFile = if (launch.getBooleanExtra(EXTRA_BENCHMARK, false)) benchmarkResultsFile(launch) else null
      val settings =
          RunSettings(
              warmupRuns = launch.getIntExtra(EXTRA_WARMUP, 3),
              timedRuns = launch.getIntExtra(EXTRA_ITERS, 20),
              numThreads = launch.getIntExtra(EXTRA_THREADS, 0),
              resultsFile = resultsFile,
          )
      val folder = findArtifact(launch.getStringExtra(EXTRA_ARTIFACT))
      val outcome = DemoRun.run(folder, settings) { show(it) }
      Log.i(TAG, outcome.report.toLogLine())
      resultsFile?.let {
        BenchmarkResults.write(
            it, BenchmarkResults.ok(settings, outcome, ExecuTorchRunner.registeredBackends()))
      }
      show(outcome.report.toScreenText() + (resultsFile?.let { "\n\nresults: $it" } ?: ""))
    } catch (err: Throwable) {
      // Throwable, not Exception: a hostile artifact must give one message, never a crash
      // (StackOverflowError, OutOfMemoryError included). DemoException carries the fix.
      val message = DemoException.describe(err)
      Log.e(TAG, DemoReport.errorLogLine(message))
      show("error: $message")
      resultsFile?.let { writeError(it, message) }
    }
  }

  /** The error for the host to read; if even that fails, the log line above is all there is. */
  private fun writeError(file: File, message: String) {
    try {
      BenchmarkResults.write(file, BenchmarkResults.error(message))
    } catch (err: Exception) {
      Log.e(TAG, "cannot write $file: ${err.message}")
    }
  }

  /**
   * Benchmark mode's results path: inside this app's external files folder, which the app may
   * write without any permission and `adb pull` may read.
   */
  private fun benchmarkResultsFile(launch: Intent): File {
    val root =
        getExternalFilesDir(null)
            ?: throw DemoException("no external storage for the results JSON; check the device's storage")
    val path =
        launch.getStringExtra(EXTRA_RESULTS)
            ?: throw DemoException("benchmark mode needs --es $EXTRA_RESULTS PATH under ${root.path}")
    val file = File(path)
    if (!file.isAbsolute || !file.canonicalPath.startsWith(root.canonicalPath + File.separator)) {
      throw DemoException("results path $path must be under ${root.path}, the app's external files folder")
    }
    return file
  }

  /**
   * A folder pushed to DEVICE_ROOT (an absolute path, as `edit-mobile profile --device android`
   * passes it), else files/artifacts/<name>, or the only folder there when no name was given.
   */
  private fun findArtifact(requested: String?): File {
    if (requested != null && requested.startsWith("/")) {
      return pushedArtifact(requested)
    }
    val root = File(filesDir, "artifacts")
    if (requested != null) {
      // A folder name, not a path: "../.." would leave files/artifacts/.
      if (requested.isEmpty() || requested.contains('/') || requested == "." || requested == "..") {
        throw DemoException("artifact '$requested' must be a folder name under $root")
      }
      return File(root, requested).takeIf { it.isDirectory }
          ?: throw DemoException("no artifact folder $root/$requested; push it first (README)")
    }
    val folders = root.listFiles { file -> file.isDirectory }?.sortedBy { it.name }.orEmpty()
    return when (folders.size) {
      1 -> folders[0]
      0 -> throw DemoException("no artifact under $root; push one first (README)")
      else ->
          throw DemoException(
              "several artifacts under $root (${folders.joinToString { it.name }});" +
                  " choose one with --es artifact NAME")
    }
  }

  /** An absolute artifact path: only a folder directly under DEVICE_ROOT (canonical, so no ".."). */
  private fun pushedArtifact(path: String): File {
    val folder = File(path).canonicalFile
    if (folder.parentFile != File(DEVICE_ROOT).canonicalFile) {
      throw DemoException("artifact path $path must be a folder directly under $DEVICE_ROOT")
    }
    if (!folder.isDirectory) {
      throw DemoException(
          "no artifact folder $path that this app can read; push it with edit-mobile profile ART" +
              " --device android (if it is there, this Android release keeps apps out of /data/local/tmp)")
    }
    return folder
  }

  private fun show(text: String) {
    Log.i(TAG, text)
    runOnUiThread { screen.text = text }
  }

  companion object {
    private const val TAG = "EDiTDemo"

    /** Where `edit-mobile profile --device android` pushes artifacts (adb may write there, apps read). */
    const val DEVICE_ROOT = "/data/local/tmp/edit_mobile"

    // BEGIN LAUNCH EXTRAS -- the intent extras this activity reads; tests/test_device_profile.py
    // compares them with edit_mobile.runtime.device_profile (EXTRA_*), which starts the app.
    const val EXTRA_ARTIFACT = "artifact"
    const val EXTRA_WARMUP = "warmup"
    const val EXTRA_ITERS = "iters"
    const val EXTRA_THREADS = "threads"
    const val EXTRA_BENCHMARK = "benchmark"
    const val EXTRA_RESULTS = "results"
    // END LAUNCH EXTRAS
  }
}
