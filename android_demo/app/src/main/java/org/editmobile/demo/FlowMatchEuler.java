package org.editmobile.demo;

/**
 * diffusers' FlowMatchEulerDiscreteScheduler as SD3 pipelines configure it: a static shift
 * (sigma' = shift * sigma / (1 + (shift - 1) * sigma)), sigmas spaced evenly between the
 * shifted training range's ends, timestep = 1000 * sigma, and the Euler step sample + (next
 * sigma - sigma) * model output. Resolution-dependent (dynamic) shifting, Karras / exponential /
 * beta sigmas, inverted sigmas, a terminal shift and stochastic sampling are refused.
 */
public final class FlowMatchEuler extends SteppedScheduler {
  private final int trainSteps;
  private final double shift;
  private final float sigmaMax;
  private final float sigmaMin;

  private float[] sigmas = new float[0];

  FlowMatchEuler(ConfigFile config) {
    for (String option : new String[] {"use_dynamic_shifting", "invert_sigmas",
        "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
        "stochastic_sampling"}) {
      config.refuseUnless(option, false, "not implemented", false);
    }
    config.refuseUnless("shift_terminal", null, "no terminal stretch", (Object) null);
    trainSteps = config.integer("num_train_timesteps", 1000, 2, 1 << 20);
    shift = config.number("shift", 1.0);
    if (!(shift > 0)) {
      throw new DemoException(config.name + " shift must be > 0, got " + shift);
    }
    // The training schedule's ends, in float32 as diffusers' __init__ computes them.
    sigmaMax = shifted32(1.0f);
    sigmaMin = shifted32(1.0f / (float) trainSteps);
  }

  private float shifted32(float sigma) {
    return (float) shift * sigma / (1.0f + (float) (shift - 1) * sigma);
  }

  /**
   * diffusers: np.linspace over [1000 sigma_max, 1000 sigma_min] in float64, divided by 1000,
   * shifted in float64, then float32; timesteps are those float32 sigmas times 1000 in float32.
   */
  @Override
  public void setTimesteps(int steps) {
    if (steps < 1) {
      throw new DemoException("steps must be at least 1, got " + steps);
    }
    double start = (double) sigmaMax * trainSteps;
    double stop = (double) sigmaMin * trainSteps;
    double step = (stop - start) / (steps - 1);
    double[] timesteps = new double[steps];
    sigmas = new float[steps + 1]; // the last stays 0
    for (int i = 0; i < steps; i++) {
      double t = steps == 1 ? start : i == steps - 1 ? stop : i * step + start;
      double sigma = t / trainSteps;
      sigmas[i] = (float) (shift * sigma / (1 + (shift - 1) * sigma));
      timesteps[i] = sigmas[i] * (float) trainSteps;
    }
    startSchedule(timesteps);
  }

  @Override
  public double[] sigmas() {
    double[] out = new double[sigmas.length];
    for (int i = 0; i < out.length; i++) {
      out[i] = sigmas[i];
    }
    return out;
  }

  @Override
  public double initNoiseSigma() {
    return 1.0;
  }

  @Override
  protected double[] stepAtIndex(double[] modelOutput, double[] sample) {
    float dt = sigmas[stepIndex + 1] - sigmas[stepIndex]; // float32, as diffusers
    double[] next = new double[sample.length];
    for (int i = 0; i < next.length; i++) {
      next[i] = sample[i] + dt * modelOutput[i];
    }
    return next;
  }

  /** Flow matching refuses a timestep not in its schedule. */
  @Override
  protected int indexOfAbsent(double timestep) {
    throw new DemoException("timestep " + timestep + " is not one of this schedule's");
  }
}
