package org.editmobile.demo;

import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * The manifest's test vectors, in the program's input order, each checked against the spec the
 * manifest declares (name, shape, dtype) before anything runs.
 */
public final class TestVectors {
  public final List<SafeTensors.Entry> inputs;
  public final List<SafeTensors.Entry> expectedOutputs;

  private TestVectors(List<SafeTensors.Entry> inputs, List<SafeTensors.Entry> expectedOutputs) {
    this.inputs = inputs;
    this.expectedOutputs = expectedOutputs;
  }

  public static TestVectors load(ArtifactManifest manifest) throws IOException {
    File file = manifest.fileFor(ArtifactManifest.ROLE_TEST_VECTORS);
    Map<String, SafeTensors.Entry> tensors = SafeTensors.read(file);
    return new TestVectors(
        matching(tensors, manifest.inputs, ArtifactManifest.VECTOR_INPUT_PREFIX, file),
        matching(tensors, manifest.outputs, ArtifactManifest.VECTOR_OUTPUT_PREFIX, file));
  }

  private static List<SafeTensors.Entry> matching(
      Map<String, SafeTensors.Entry> tensors,
      List<ArtifactManifest.TensorSpec> specs,
      String prefix,
      File file) {
    List<SafeTensors.Entry> ordered = new ArrayList<>();
    for (ArtifactManifest.TensorSpec spec : specs) {
      String key = prefix + spec.name;
      SafeTensors.Entry entry = tensors.get(key);
      if (entry == null) {
        throw new DemoException(
            file.getName() + " has no tensor '" + key + "'; it holds " + tensors.keySet());
      }
      if (!Arrays.equals(entry.shape, spec.shape)) {
        throw new DemoException(
            key + " has shape " + Arrays.toString(entry.shape) + ", manifest says "
                + Arrays.toString(spec.shape));
      }
      String expectedDtype = SafeTensors.dtypeForManifest(spec.dtype);
      if (!entry.dtype.equals(expectedDtype)) {
        throw new DemoException(
            key + " has dtype " + entry.dtype + ", manifest says " + spec.dtype);
      }
      ordered.add(entry);
    }
    return ordered;
  }
}
