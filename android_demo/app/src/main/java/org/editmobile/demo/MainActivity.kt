package org.editmobile.demo

import android.app.Activity
import android.content.Intent
import android.graphics.Bitmap
import android.os.Bundle
import android.text.InputType
import android.util.Log
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.EditText
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.Spinner
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
 * when the run fails, so the host reads an error instead of waiting for its timeout. On a
 * pipeline artifact it times every method of the program and one image's cost
 * (DemoRun.runPipeline, PipelineBenchmark).
 *
 * A pipeline artifact (export --pipeline) outside benchmark mode opens the draw screen instead: a
 * prompt box (read-only under a picker of the artifact's prompts when it was exported with
 * --fixed-prompts), size (the artifact's resolutions), steps and seed, the image, and the time per
 * stage and per step. The extras "prompt", "steps", "seed", "size" fill it in and draw at once.
 */
class MainActivity : Activity() {
  private lateinit var screen: TextView

  override fun onCreate(savedInstanceState: Bundle?) {
    super.onCreate(savedInstanceState)
    screen = TextView(this).apply { setPadding(32, 32, 32, 32); textSize = 14f }
    setContentView(ScrollView(this).apply { addView(screen) })
    val launch = intent
    thread(name = "edit-demo") {
      val pipeline =
          !launch.getBooleanExtra(EXTRA_BENCHMARK, false) &&
              try {
                ArtifactManifest.read(findArtifact(launch.getStringExtra(EXTRA_ARTIFACT))).pipeline != null
              } catch (err: Throwable) {
                false // runDemo reports what is wrong with the folder
              }
      if (pipeline) runOnUiThread { openDrawScreen(launch) } else runDemo(launch)
    }
  }

  /** The draw screen of a pipeline artifact; the model loads once, each Draw makes one image. */
  private fun openDrawScreen(launch: Intent) {
    val prompt = EditText(this).apply { hint = "prompt"; setText(launch.getStringExtra(EXTRA_PROMPT) ?: "") }
    val steps = numberField("steps (default: the artifact's)", launch.getIntExtra(EXTRA_STEPS, 0))
    val seed = numberField("seed", launch.getIntExtra(EXTRA_SEED, 0))
    val sizes = Spinner(this)
    val fixedPrompts = Spinner(this).apply { visibility = android.view.View.GONE }
    val draw = Button(this).apply { text = "Draw"; isEnabled = false }
    val image = ImageView(this).apply { adjustViewBounds = true }
    val column = LinearLayout(this).apply { orientation = LinearLayout.VERTICAL; setPadding(32, 32, 32, 32) }
    (screen.parent as? android.view.ViewGroup)?.removeView(screen) // moves from the report screen
    listOf(fixedPrompts, prompt, sizes, steps, seed, draw, image, screen).forEach { column.addView(it) }
    setContentView(ScrollView(this).apply { addView(column) })
    val threads = launch.getIntExtra(EXTRA_THREADS, 0)
    thread(name = "edit-draw-load") {
      try {
        val run = DrawRun(findArtifact(launch.getStringExtra(EXTRA_ARTIFACT)), threads)
        runOnUiThread {
          sizes.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_item, run.sizes())
          run.spec.fixedPrompts?.let { offered -> showFixedPrompts(fixedPrompts, offered, prompt) }
          launch.getStringExtra(EXTRA_SIZE)?.let { sizes.setSelection(maxOf(0, run.sizes().indexOf(it))) }
          draw.isEnabled = true
          draw.setOnClickListener {
            draw.isEnabled = false
            val settings =
                DrawSettings(
                    prompt = prompt.text.toString(),
                    steps = steps.text.toString().toIntOrNull()?.takeIf { it > 0 },
                    seed = seed.text.toString().toLongOrNull() ?: 0L,
                    size = sizes.selectedItem as String?)
            thread(name = "edit-draw") { drawOnce(run, settings, image, draw) }
          }
          show("loaded ${run.manifest.modelSource} in %.0f ms".format(run.loadMs))
          if (launch.hasExtra(EXTRA_PROMPT)) draw.performClick()
        }
      } catch (err: Throwable) {
        show("error: ${DemoException.describe(err)}")
      }
    }
  }

  /**
   * An artifact exported with --fixed-prompts has embeddings for its prompts only: they are
   * offered in a picker that fills the (then read-only) prompt box.
   */
  private fun showFixedPrompts(picker: Spinner, offered: List<String>, prompt: EditText) {
    picker.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_item, offered)
    picker.visibility = android.view.View.VISIBLE
    val typed = offered.indexOf(prompt.text.toString())
    picker.setSelection(maxOf(0, typed))
    prompt.isEnabled = false
    picker.onItemSelectedListener =
        object : android.widget.AdapterView.OnItemSelectedListener {
          override fun onItemSelected(parent: android.widget.AdapterView<*>?, view: android.view.View?, position: Int, id: Long) {
            prompt.setText(offered[position])
          }

          override fun onNothingSelected(parent: android.widget.AdapterView<*>?) {}
        }
    prompt.setText(offered[maxOf(0, typed)])
  }

  private fun drawOnce(run: DrawRun, settings: DrawSettings, image: ImageView, draw: Button) {
    try {
      val result = run.draw(settings) { done, total -> show("denoising: step $done of $total") }
      val pixels = IntArray(result.height * result.width) { i ->
        val r = result.rgb[3 * i].toInt() and 0xFF
        val g = result.rgb[3 * i + 1].toInt() and 0xFF
        val b = result.rgb[3 * i + 2].toInt() and 0xFF
        (0xFF shl 24) or (r shl 16) or (g shl 8) or b
      }
      val bitmap = Bitmap.createBitmap(pixels, result.width, result.height, Bitmap.Config.ARGB_8888)
      val text = run.describe(result)
      Log.i(TAG, "EDIT_DEMO_DRAW $text")
      runOnUiThread { image.setImageBitmap(bitmap); screen.text = text; draw.isEnabled = true }
    } catch (err: Throwable) {
      show("error: ${DemoException.describe(err)}")
      runOnUiThread { draw.isEnabled = true }
    }
  }

  private fun numberField(hint: String, value: Int) =
      EditText(this).apply {
        this.hint = hint
        inputType = InputType.TYPE_CLASS_NUMBER
        if (value > 0) setText(value.toString())
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
      if (ArtifactManifest.read(folder).pipeline != null) {
        val outcome = DemoRun.runPipeline(folder, settings) { show(it) }
        resultsFile?.let {
          BenchmarkResults.write(
              it, BenchmarkResults.okPipeline(settings, outcome, ExecuTorchRunner.registeredBackends()))
        }
        show(outcome.result.toScreenText() + (resultsFile?.let { "\n\nresults: $it" } ?: ""))
        return
      }
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
    // The draw screen's presets (pipeline artifacts; not used by edit-mobile profile).
    const val EXTRA_PROMPT = "prompt"
    const val EXTRA_STEPS = "steps"
    const val EXTRA_SEED = "seed"
    const val EXTRA_SIZE = "size"
  }
}
