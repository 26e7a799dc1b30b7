package org.editmobile.demo

import android.app.Activity
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
 */
class MainActivity : Activity() {
  private lateinit var screen: TextView

  override fun onCreate(savedInstanceState: Bundle?) {
    super.onCreate(savedInstanceState)
    screen = TextView(this).apply { setPadding(32, 32, 32, 32); textSize = 14f }
    setContentView(ScrollView(this).apply { addView(screen) })

    val settings =
        RunSettings(
            warmupRuns = intent.getIntExtra("warmup", 3),
            timedRuns = intent.getIntExtra("iters", 20),
            numThreads = intent.getIntExtra("threads", 0),
        )
    val requested = intent.getStringExtra("artifact")
    thread(name = "edit-demo") { runDemo(requested, settings) }
  }

  private fun runDemo(requested: String?, settings: RunSettings) {
    try {
      val folder = findArtifact(requested)
      val report = DemoRun.run(folder, settings) { show(it) }
      Log.i(TAG, report.toLogLine())
      show(report.toScreenText())
    } catch (err: Throwable) {
      // Throwable, not Exception: a hostile artifact must give one message, never a crash
      // (StackOverflowError, OutOfMemoryError included). DemoException carries the fix.
      val message = DemoException.describe(err)
      Log.e(TAG, DemoReport.errorLogLine(message))
      show("error: $message")
    }
  }

  /** files/artifacts/<name>, or the only folder there when no name was given. */
  private fun findArtifact(requested: String?): File {
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

  private fun show(text: String) {
    Log.i(TAG, text)
    runOnUiThread { screen.text = text }
  }

  companion object {
    private const val TAG = "EDiTDemo"
  }
}
