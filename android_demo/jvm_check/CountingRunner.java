import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.editmobile.demo.DemoException;
import org.editmobile.demo.HostTensor;
import org.editmobile.demo.MethodRunner;
import org.editmobile.demo.PipelineBenchmark;
import org.editmobile.demo.SafeTensors;
import org.editmobile.demo.TestVectors;

/**
 * A TEST DOUBLE for the phone's ExecuTorch runtime and clock in the pipeline benchmark check (no
 * ExecuTorch on the JVM here): counts the loads and calls of each method, checks that every call
 * passes the method's test vectors, returns the method's expected outputs, and advances a fake
 * clock by the duration scripted for that call (the method's list of milliseconds, call by call,
 * cycling), so the benchmark's measured times are exactly the scripted ones.
 */
final class CountingRunner
    implements MethodRunner, PipelineBenchmark.Clock, PipelineBenchmark.Loader,
        PipelineBenchmark.MemoryReader {
  private final Map<String, TestVectors> vectors;
  private final Map<String, double[]> scriptMs;
  private final double loadMs;
  final Map<String, Integer> calls = new LinkedHashMap<>();
  final Map<String, Integer> loads = new LinkedHashMap<>();
  private long now = 1_000_000_000L;
  private int total;

  CountingRunner(Map<String, TestVectors> vectors, Map<String, double[]> scriptMs, double loadMs) {
    this.vectors = vectors;
    this.scriptMs = scriptMs;
    this.loadMs = loadMs;
  }

  @Override
  public long nanoTime() {
    return now;
  }

  @Override
  public void load(String method) {
    loads.merge(method, 1, Integer::sum);
    now += Math.round(loadMs * 1e6);
  }

  /** A made-up peak that grows with the calls made: 1 MiB plus 1 KiB a call. */
  @Override
  public Long peakBytes() {
    return (1L << 20) + 1024L * total;
  }

  @Override
  public List<HostTensor> run(String method, List<HostTensor> inputs) {
    TestVectors expected = vectors.get(method);
    double[] script = scriptMs.get(method);
    if (expected == null || script == null) {
      throw new DemoException("the test double knows no method " + method);
    }
    for (int i = 0; i < inputs.size(); i++) {
      SafeTensors.Entry want = expected.inputs.get(i);
      HostTensor got = inputs.get(i);
      boolean same = Arrays.equals(got.shape, want.shape)
          && ("I64".equals(want.dtype) ? Arrays.equals(got.longs, want.toLongs())
              : Arrays.equals(got.floats, want.toFloats()));
      if (!same) {
        throw new DemoException(method + " input " + i + " is not its test vector");
      }
    }
    int call = calls.merge(method, 1, Integer::sum) - 1;
    total++;
    now += Math.round(script[call % script.length] * 1e6);
    List<HostTensor> outputs = new ArrayList<>();
    for (SafeTensors.Entry entry : expected.expectedOutputs) {
      outputs.add(HostTensor.ofFloats(entry.toFloats(), entry.shape));
    }
    return outputs;
  }
}
