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
  public final TestVectors vectors;

  private ArtifactCheck(ArtifactManifest manifest, List<String> filesVerified, TestVectors vectors) {
    this.manifest = manifest;
    this.filesVerified = filesVerified;
    this.vectors = vectors;
  }

  public static ArtifactCheck prepare(File folder) throws IOException {
    ArtifactManifest manifest = ArtifactManifest.read(folder);
    List<String> verified = manifest.verifyFiles();
    return new ArtifactCheck(manifest, verified, TestVectors.load(manifest));
  }

  /** PSNR / max error of each produced output (in manifest order) against its test vector. */
  public List<DemoReport.OutputCheck> compare(List<float[]> producedOutputs) {
    List<SafeTensors.Entry> expected = vectors.expectedOutputs;
    if (producedOutputs.size() != expected.size()) {
      throw new DemoException(
          "program returned " + producedOutputs.size() + " outputs, manifest declares "
              + expected.size());
    }
    List<DemoReport.OutputCheck> checks = new ArrayList<>();
    for (int i = 0; i < expected.size(); i++) {
      float[] reference = expected.get(i).toFloats();
      float[] produced = producedOutputs.get(i);
      checks.add(
          new DemoReport.OutputCheck(
              manifest.outputs.get(i).name,
              Metrics.psnrDb(reference, produced),
              Metrics.maxAbsError(reference, produced)));
    }
    return checks;
  }
}
