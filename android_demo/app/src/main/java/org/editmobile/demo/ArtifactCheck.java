package org.editmobile.demo;

import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;

/**
 * Everything about an artifact that does not need the ExecuTorch runtime: manifest, sha256 of
 * every file, test vectors matched to the input/output specs, and the comparison of produced
 * outputs with the expected ones. Plain Java, so tests/test_demo_apps.py runs it with javac.
 */
public final class ArtifactCheck {
  public final ArtifactManifest manifest;
  public final List<String> filesVerified;
  /**
   * The denoiser's test vectors; null for a pipeline artifact, whose vectors are per method
   * (TestVectors.forMethod, read by PipelineBenchmark).
   */
  public final TestVectors vectors;

  private ArtifactCheck(ArtifactManifest manifest, List<String> filesVerified, TestVectors vectors) {
    this.manifest = manifest;
    this.filesVerified = filesVerified;
    this.vectors = vectors;
  }

  public static ArtifactCheck prepare(File folder) throws IOException {
    ArtifactManifest manifest = ArtifactManifest.read(folder);
    List<String> verified = manifest.verifyFiles();
    return new ArtifactCheck(
        manifest, verified, manifest.pipeline == null ? TestVectors.load(manifest) : null);
  }

  /** PSNR / max error of each produced output (in manifest order) against its test vector. */
  public List<DemoReport.OutputCheck> compare(List<float[]> producedOutputs) {
    if (vectors == null) {
      throw new DemoException("a pipeline artifact's test vectors are per method; time it with"
          + " the benchmark mode (PipelineBenchmark)");
    }
    List<SafeTensors.Entry> expected = vectors.expectedOutputs;
    if (producedOutputs.size() != expected.size()) {
      throw new DemoException(
          "program returned " + producedOutputs.size() + " outputs, manifest declares "
              + expected.size());
    }
    List<DemoReport.OutputCheck> checks = new ArrayList<>();
    for (int i = 0; i < expected.size(); i++) {
      checks.add(
          checkOutput(
              manifest.outputs.get(i).name, expected.get(i).toFloats(), producedOutputs.get(i)));
    }
    return checks;
  }

  /**
   * PSNR / max error of one output. NaN or inf (in the output, or in a damaged reference) is a
   * failure named as such: no PSNR is reported for it, and the run does not pass.
   */
  public static DemoReport.OutputCheck checkOutput(
      String name, float[] reference, float[] produced) {
    int badOutput = Metrics.countNonFinite(produced);
    if (badOutput > 0) {
      throw new DemoException(
          "non-finite output: " + name + " has " + badOutput + " NaN/inf values of "
              + produced.length + "; the program failed on this device (try another backend)");
    }
    int badReference = Metrics.countNonFinite(reference);
    if (badReference > 0) {
      throw new DemoException(
          "non-finite reference: " + ArtifactManifest.VECTOR_OUTPUT_PREFIX + name + " has "
              + badReference + " NaN/inf values; re-export the artifact");
    }
    return new DemoReport.OutputCheck(
        name, Metrics.psnrDb(reference, produced), Metrics.maxAbsError(reference, produced));
  }
}
