import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.editmobile.demo.ArtifactCheck;
import org.editmobile.demo.DemoException;
import org.editmobile.demo.DemoReport;
import org.editmobile.demo.Metrics;
import org.editmobile.demo.SafeTensors;

/**
 * Desktop-JVM driver of the Android app's plain-Java logic, used by tests/test_demo_apps.py.
 * It does everything the app does except running the program: the outputs the phone would
 * produce come from a safetensors file ("output.<name>") and the run times from the command line.
 *
 * <p>usage: JvmCheck ARTIFACT_DIR PRODUCED_OUTPUTS.safetensors WARMUP MS,MS,...
 */
public final class JvmCheck {
  public static void main(String[] args) throws Exception {
    try {
      ArtifactCheck check = ArtifactCheck.prepare(new File(args[0]));
      Map<String, SafeTensors.Entry> produced = SafeTensors.read(new File(args[1]));
      List<float[]> outputs = new ArrayList<>();
      for (SafeTensors.Entry expected : check.vectors.expectedOutputs) {
        outputs.add(produced.get(expected.name).toFloats());
      }
      String[] times = args[3].split(",");
      double[] runsMs = new double[times.length];
      for (int i = 0; i < times.length; i++) {
        runsMs[i] = Double.parseDouble(times[i]);
      }
      DemoReport report =
          new DemoReport(
              "jvm-check",
              check.manifest,
              check.filesVerified,
              0.0,
              check.compare(outputs),
              Integer.parseInt(args[2]),
              Metrics.latency(runsMs));
      System.out.println(report.toLogLine());
      System.out.println(report.toScreenText());
    } catch (DemoException err) {
      System.out.println(DemoReport.errorLogLine(err.getMessage()));
      System.exit(3);
    }
  }
}
