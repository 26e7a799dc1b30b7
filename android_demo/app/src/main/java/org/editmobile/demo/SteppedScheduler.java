package org.editmobile.demo;

/**
 * What every scheduler's step shares, as diffusers does it: the step index is found from the
 * first timestep given (index_for_timestep) and then advances by one a step; a step before
 * setTimesteps, past the last timestep, or with model output and latents of different lengths
 * is refused. Subclasses compute one step at {@link #stepIndex}.
 */
abstract class SteppedScheduler implements DiffusionScheduler {
  protected double[] timesteps = new double[0];
  protected int stepIndex;

  /** A new schedule: the next step finds its index again. */
  protected final void startSchedule(double[] newTimesteps) {
    timesteps = newTimesteps;
    stepIndex = -1;
  }

  @Override
  public final double[] timesteps() {
    return timesteps.clone();
  }

  @Override
  public final double[] step(double[] modelOutput, double timestep, double[] sample) {
    if (timesteps.length == 0) {
      throw new DemoException("setTimesteps must come before step");
    }
    if (stepIndex < 0) {
      stepIndex = indexOf(timestep);
    }
    if (stepIndex >= timesteps.length) {
      throw new DemoException("step called after the last timestep");
    }
    if (modelOutput.length != sample.length) {
      throw new DemoException("the model output has " + modelOutput.length
          + " values, the latents " + sample.length + "; the denoiser and latents disagree");
    }
    double[] next = stepAtIndex(modelOutput, sample);
    stepIndex++;
    return next;
  }

  /** The next sample from this step's model output (at {@link #stepIndex}). */
  protected abstract double[] stepAtIndex(double[] modelOutput, double[] sample);

  /** Where a timestep not in the schedule starts (diffusers differs by scheduler). */
  protected abstract int indexOfAbsent(double timestep);

  /** diffusers' index_for_timestep: the second match if it repeats. */
  private int indexOf(double timestep) {
    int first = -1;
    for (int i = 0; i < timesteps.length; i++) {
      if (timesteps[i] == timestep) {
        if (first >= 0) {
          return i;
        }
        first = i;
      }
    }
    return first >= 0 ? first : indexOfAbsent(timestep);
  }
}
