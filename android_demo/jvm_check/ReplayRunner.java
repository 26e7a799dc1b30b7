import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.editmobile.demo.DemoException;
import org.editmobile.demo.HostTensor;
import org.editmobile.demo.MethodRunner;
import org.editmobile.demo.SafeTensors;

/**
 * A TEST DOUBLE for the phone's ExecuTorch runtime (no ExecuTorch on the JVM here): replays the
 * method calls `edit-mobile generate` made in the Python runtime, recorded in order as
 * call.NNNN.METHOD.input.J / call.NNNN.METHOD.output.J. Each call the Java pipeline makes must be
 * the next recorded one, with the same method and inputs (int64 exactly; float32 within the
 * worst relative difference it reports); it returns what the program returned to Python.
 */
final class ReplayRunner implements MethodRunner {
  private final Map<String, SafeTensors.Entry> recorded;
  private final List<String> methods = new ArrayList<>();
  final Map<String, Double> worstInputError = new LinkedHashMap<>();
  private int next;

  ReplayRunner(File recording) throws IOException {
    recorded = SafeTensors.read(recording);
    for (int call = 0; ; call++) {
      String method = recordedMethod(String.format("call.%04d.", call));
      if (method == null) {
        break;
      }
      methods.add(method);
    }
  }

  /** The method of the call whose keys start with prefix, or null past the last call. */
  private String recordedMethod(String prefix) {
    for (String key : recorded.keySet()) {
      if (key.startsWith(prefix)) {
        String rest = key.substring(prefix.length());
        int cut = rest.indexOf(".input.");
        return rest.substring(0, cut >= 0 ? cut : rest.indexOf(".output."));
      }
    }
    return null;
  }

  int calls() {
    return next;
  }

  int recordedCalls() {
    return methods.size();
  }

  @Override
  public List<HostTensor> run(String method, List<HostTensor> inputs) {
    if (next >= methods.size() || !methods.get(next).equals(method)) {
      throw new DemoException("call " + next + " is " + method + ", the recording has "
          + (next < methods.size() ? methods.get(next) : "no more calls"));
    }
    String prefix = String.format("call.%04d.%s.", next++, method);
    for (int j = 0; j < inputs.size(); j++) {
      compare(method, j, inputs.get(j), recorded.get(prefix + "input." + j));
    }
    List<HostTensor> outputs = new ArrayList<>();
    for (int j = 0; recorded.containsKey(prefix + "output." + j); j++) {
      SafeTensors.Entry entry = recorded.get(prefix + "output." + j);
      outputs.add(HostTensor.ofFloats(entry.toFloats(), entry.shape));
    }
    return outputs;
  }

  private void compare(String method, int index, HostTensor got, SafeTensors.Entry expected) {
    if (expected == null || !java.util.Arrays.equals(got.shape, expected.shape)) {
      throw new DemoException(method + " input " + index + ": shape "
          + java.util.Arrays.toString(got.shape) + " is not the recorded one");
    }
    double error = 0;
    if (got.longs != null) {
      error = java.util.Arrays.equals(got.longs, expected.toLongs()) ? 0 : Double.POSITIVE_INFINITY;
    } else {
      float[] want = expected.toFloats();
      double peak = 0;
      double worst = 0;
      for (int i = 0; i < want.length; i++) {
        peak = Math.max(peak, Math.abs(want[i]));
        worst = Math.max(worst, Math.abs((double) got.floats[i] - want[i]));
      }
      error = peak > 0 ? worst / peak : worst;
    }
    worstInputError.merge(method.replaceAll("_\\d+x\\d+$", ""), error, Math::max);
  }
}
