package org.editmobile.demo;

import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * The manifest's test vectors, in the program's input order, each checked against the spec the
 * manifest declares (name, shape, dtype) before anything runs: a denoiser artifact's
 * (input.NAME / output.NAME, float32 or float16), or one method's of a pipeline artifact
 * (METHOD.input.NAME / METHOD.output.NAME, float32 or int64 token ids).
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
        matching(tensors, manifest.inputs, ArtifactManifest.VECTOR_INPUT_PREFIX, file, false),
        matching(tensors, manifest.outputs, ArtifactManifest.VECTOR_OUTPUT_PREFIX, file, false));
  }

  /** One method's vectors of a pipeline artifact's test vectors file (read once, here `tensors`). */
  public static TestVectors forMethod(
      Map<String, SafeTensors.Entry> tensors, PipelineSpec.MethodSpec method, File file) {
    String prefix = method.name + ".";
    return new TestVectors(
        matching(tensors, method.inputs, prefix + ArtifactManifest.VECTOR_INPUT_PREFIX, file, true),
        matching(tensors, method.outputs, prefix + ArtifactManifest.VECTOR_OUTPUT_PREFIX, file, true));
  }

  private static List<SafeTensors.Entry> matching(
      Map<String, SafeTensors.Entry> tensors,
      List<ArtifactManifest.TensorSpec> specs,
      String prefix,
      File file,
      boolean pipeline) {
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
      String expectedDtype =
          pipeline ? pipelineDtype(key, spec.dtype) : SafeTensors.dtypeForManifest(spec.dtype);
      if (!entry.dtype.equals(expectedDtype)) {
        throw new DemoException(
            key + " has dtype " + entry.dtype + ", manifest says " + spec.dtype);
      }
      ordered.add(entry);
    }
    return ordered;
  }

  /**
   * What a pipeline method takes and gives through a MethodRunner (HostTensor): float32, and
   * int64 token ids.
   */
  private static String pipelineDtype(String key, String manifestDtype) {
    if (ArtifactManifest.DTYPE_FLOAT32.equals(manifestDtype)) {
      return "F32";
    }
    if ("int64".equals(manifestDtype)) {
      return "I64";
    }
    throw new DemoException(key + " is " + manifestDtype + " in the manifest; a pipeline method"
        + " takes float32 tensors and int64 token ids here; re-export the artifact");
  }
}
