package org.editmobile.demo

import java.io.File

/** What the draw screen asks for; the launch extras "prompt", "steps", "seed", "size" preset it. */
data class DrawSettings(
    val prompt: String,
    val steps: Int? = null, // null: the artifact's default
    val guidance: Double? = null,
    val seed: Long = 0,
    val size: String? = null, // "HxW", one of the artifact's resolutions; null: the first
    val numThreads: Int = 0,
)

/**
 * A pipeline artifact (export --pipeline) from prompt to pixels on the phone: files verified by
 * sha256, the tokenizers (one for PixArt; CLIP-L, CLIP-G and T5 for SD3) and scheduler read from
 * the artifact, the program's methods run by ExecuTorch, the loop in plain Java (TextToImage,
 * checked on the JVM against edit-mobile generate --noise portable: the same seed gives the same
 * image here and on the host).
 */
class DrawRun(folder: File, numThreads: Int) : AutoCloseable {
  val manifest: ArtifactManifest
  val spec: PipelineSpec
  private val methods: PipelineMethods
  private val pipeline: TextToImage
  val loadMs: Double

  init {
    val start = System.nanoTime()
    manifest = ArtifactCheck.prepare(folder).manifest
    spec = PipelineSpec.of(manifest)
    if (manifest.weightsFileOrNull() != null) {
      throw DemoException(
          "this artifact keeps its weights in model.ptd, which this Android runtime cannot load;" +
              " re-export with --pipeline --weights embedded (below 2 GB)")
    }
    methods = PipelineMethods(manifest.programFileForAndroid(), numThreads)
    methods.loadAll(spec)
    pipeline =
        TextToImage(
            spec,
            spec.loadTokenizers(manifest), // one a pipeline.text.tokenizers entry
            spec.loadFixedPrompts(manifest), // null unless exported with --fixed-prompts
            DiffusionScheduler.load(manifest.fileFor(ArtifactManifest.ROLE_SCHEDULER)),
            methods)
    loadMs = (System.nanoTime() - start) / 1e6
  }

  /** The sizes to offer, "HxW". */
  fun sizes(): List<String> = spec.resolutions.map { "${it[0]}x${it[1]}" }

  fun draw(settings: DrawSettings, progress: (Int, Int) -> Unit): TextToImage.Result {
    val size = settings.size ?: sizes().first()
    val parts = size.split("x").mapNotNull { it.toIntOrNull() }
    if (parts.size != 2) throw DemoException("size '$size' is not HxW; choose one of ${sizes()}")
    return pipeline.generate(
        settings.prompt,
        settings.steps ?: spec.defaultSteps,
        settings.guidance ?: spec.defaultGuidance,
        settings.seed,
        intArrayOf(parts[0], parts[1])) { done, total -> progress(done, total) }
  }

  /** Time per stage and per step, for the screen and the log. */
  fun describe(result: TextToImage.Result): String =
      "%dx%d, %d steps: encode %.0f ms, denoise %.2f s (%.2f s/step), decode %.0f ms; load %.0f ms"
          .format(
              result.width,
              result.height,
              result.steps,
              result.encodeNanos / 1e6,
              result.denoiseNanos / 1e9,
              result.denoiseNanos / 1e9 / result.steps,
              result.decodeNanos / 1e6,
              loadMs)

  override fun close() = methods.close()
}
