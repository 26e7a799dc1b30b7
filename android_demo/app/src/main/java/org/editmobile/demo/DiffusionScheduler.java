package org.editmobile.demo;

import java.io.File;
import java.io.IOException;

/**
 * A diffusers scheduler as the pipelines drive it: setTimesteps(n), then for each timestep t of
 * timesteps(), step(model output, t, sample) gives the next sample. Latents are kept in double
 * here (diffusers keeps float32); the tables (betas, sigmas, timesteps) are built with the
 * float32 operations diffusers uses, so both walk the same schedule (to an ulp: torch's
 * vectorised float32 sqrt is not always correctly rounded).
 */
public interface DiffusionScheduler {
  void setTimesteps(int steps);

  /** The timesteps the denoiser is given, in order (integers for DPM-Solver). */
  double[] timesteps();

  /** The noise levels, one per timestep plus the final one (0). */
  double[] sigmas();

  /** The factor the initial Gaussian noise is scaled by (1 for both schedulers here). */
  double initNoiseSigma();

  double[] step(double[] modelOutput, double timestep, double[] sample);

  /**
   * The scheduler a pipeline folder's scheduler/scheduler_config.json names (config may also be
   * that file itself, or the scheduler/ folder).
   */
  static DiffusionScheduler load(File config) throws IOException {
    File file = config;
    if (new File(config, "scheduler").isDirectory()) {
      file = new File(new File(config, "scheduler"), "scheduler_config.json");
    } else if (config.isDirectory()) {
      file = new File(config, "scheduler_config.json");
    }
    ConfigFile json = ConfigFile.read(file);
    String type = json.string("_class_name", "");
    if (type.equals("DPMSolverMultistepScheduler")) {
      return new DpmSolverMultistep(json);
    }
    if (type.equals("FlowMatchEulerDiscreteScheduler")) {
      return new FlowMatchEuler(json);
    }
    throw new DemoException(
        json.name + " _class_name '" + type + "' is not implemented by this app"
            + " (DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler)");
  }
}
