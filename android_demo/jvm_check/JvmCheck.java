import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.editmobile.demo.ArtifactCheck;
import org.editmobile.demo.DemoException;
import org.editmobile.demo.DemoReport;
import org.editmobile.demo.Json;
import org.editmobile.demo.Metrics;
import org.editmobile.demo.SafeTensors;

/**
 * Desktop-JVM driver of the Android app's plain-Java logic, used by tests/test_demo_apps.py.
 * It does everything the app does except running the program: the outputs the phone would
 * produce come from a safetensors file ("output.<name>") and the run times from the command line.
 *
 * <p>usage: JvmCheck ARTIFACT_DIR PRODUCED_OUTPUTS.safetensors WARMUP MS,MS,...
 *
 * <p>or: JvmCheck psnr PAIRS.safetensors, which runs the app's output check on every pair
 * "ref.CASE" / "out.CASE" and prints one {@code EDIT_DEMO_PSNR {json}} line per case.
 *
 * <p>Exit status: 0 done, 3 a refusal (DemoException, the message says why), 4 anything else
 * (a bug: hostile files must end in a refusal).
 */
public final class JvmCheck {
  public static void main(String[] args) {
    try {
      if (args[0].equals("psnr")) {
        comparePairs(new File(args[1]));
      } else {
        checkArtifact(args);
      }
    } catch (Throwable err) {
      System.out.println(DemoReport.errorLogLine(DemoException.describe(err)));
      System.exit(err instanceof DemoException ? 3 : 4);
    }
  }

  private static void checkArtifact(String[] args) throws Exception {
    ArtifactCheck check = ArtifactCheck.prepare(new File(args[0]));
    Map<String, SafeTensors.Entry> produced = SafeTensors.read(new File(args[1]));
    List<float[]> outputs = new ArrayList<>();
    for (SafeTensors.Entry expected : check.vectors.expectedOutputs) {
      SafeTensors.Entry output = produced.get(expected.name);
      if (output == null) {
        throw new DemoException(args[1] + " has no tensor " + expected.name);
      }
      outputs.add(output.toFloats());
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
  }

  /** Full-precision PSNR (the result line rounds to 6 digits) or the refusal, per case. */
  private static void comparePairs(File file) throws Exception {
    Map<String, SafeTensors.Entry> tensors = SafeTensors.read(file);
    for (Map.Entry<String, SafeTensors.Entry> item : tensors.entrySet()) {
      if (!item.getKey().startsWith("ref.")) {
        continue;
      }
      String name = item.getKey().substring("ref.".length());
      String line;
      try {
        DemoReport.OutputCheck check =
            ArtifactCheck.checkOutput(
                name, item.getValue().toFloats(), tensors.get("out." + name).toFloats());
        line = "\"psnr_db\": " + check.psnrDb + ", \"max_abs_err\": " + check.maxAbsError;
      } catch (DemoException err) {
        line = "\"error\": " + Json.quote(err.getMessage());
      }
      System.out.println("EDIT_DEMO_PSNR {\"case\": " + Json.quote(name) + ", " + line + "}");
    }
  }
}
