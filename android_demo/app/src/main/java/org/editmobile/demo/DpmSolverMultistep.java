package org.editmobile.demo;

/**
 * diffusers' DPMSolverMultistepScheduler as PixArt and SANA pipelines configure it: DPM-Solver++
 * (data prediction), order 2 (or 1), midpoint, the last step first order to a final sigma of 0;
 * either a beta schedule (linear or scaled_linear, optionally rescaled to zero terminal SNR;
 * epsilon or v prediction; timestep spacing linspace, leading (with steps_offset) or trailing)
 * or flow sigmas (use_flow_sigmas, shifted by flow_shift; flow prediction, as SANA samples).
 * Other options (Karras / exponential / beta / Lu sigmas, thresholding, SDE variants, order 3,
 * ...) are refused when the config is read.
 */
public final class DpmSolverMultistep extends SteppedScheduler {
  private final int trainSteps;
  private final float[] alphasCumprod;
  private final String spacing;
  private final int stepsOffset;
  private final String predictionType;
  private final int solverOrder;
  private final boolean flowSigmas;
  private final double flowShift;

  private double[] sigmas = new double[0];
  private int lowerOrderSteps;
  private double[] previousX0;

  DpmSolverMultistep(ConfigFile config) {
    refuseUnimplemented(config);
    trainSteps = config.integer("num_train_timesteps", 1000, 2, 1 << 20);
    spacing = config.string("timestep_spacing", "linspace");
    stepsOffset = config.integer("steps_offset", 0, 0, 1 << 20);
    predictionType = config.string("prediction_type", "epsilon");
    solverOrder = config.integer("solver_order", 2, 1, 2);
    flowSigmas = config.bool("use_flow_sigmas", false);
    flowShift = config.number("flow_shift", 1.0);
    float[] betas = betas(config, trainSteps);
    if (config.bool("rescale_betas_zero_snr", false)) {
      betas = rescaleZeroTerminalSnr(betas);
    }
    alphasCumprod = cumprodOfOneMinus(betas);
    if (config.bool("rescale_betas_zero_snr", false)) {
      alphasCumprod[trainSteps - 1] = 0x1p-24f; // diffusers: so that the first sigma is finite
    }
  }

  private static void refuseUnimplemented(ConfigFile config) {
    config.refuseUnless("algorithm_type", "dpmsolver++", "DPM-Solver++ only", "dpmsolver++");
    config.refuseUnless("solver_type", "midpoint", "midpoint only", "midpoint");
    config.refuseUnless("solver_order", 2.0, "orders 1 and 2", 1.0, 2.0);
    boolean flow = config.bool("use_flow_sigmas", false);
    if (flow) {
      config.refuseUnless("prediction_type", "epsilon", "flow sigmas with flow prediction",
          "flow_prediction");
    } else {
      config.refuseUnless(
          "prediction_type", "epsilon", "epsilon and v prediction", "epsilon", "v_prediction");
    }
    config.refuseUnless("beta_schedule", "linear", "linear and scaled_linear betas", "linear",
        "scaled_linear");
    config.refuseUnless("timestep_spacing", "linspace", "linspace, leading, trailing", "linspace",
        "leading", "trailing");
    config.refuseUnless("final_sigmas_type", "zero", "the last step goes to sigma 0", "zero");
    config.refuseUnless("lambda_min_clipped", Double.NEGATIVE_INFINITY, "no lambda clipping",
        Double.NEGATIVE_INFINITY);
    config.refuseUnless("trained_betas", null, "betas from beta_schedule", (Object) null);
    config.refuseUnless("variance_type", null, "no learned variance in the scheduler",
        (Object) null);
    for (String option : new String[] {"thresholding", "use_karras_sigmas",
        "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_dynamic_shifting"}) {
      config.refuseUnless(option, false, "not implemented", false);
    }
  }

  // ---- the tables, in float32 as torch builds them in diffusers

  private static float[] betas(ConfigFile config, int n) {
    double start = config.number("beta_start", 0.0001);
    double end = config.number("beta_end", 0.02);
    if (config.string("beta_schedule", "linear").equals("linear")) {
      return linspace32(start, end, n);
    }
    float[] roots = linspace32(Math.sqrt(start), Math.sqrt(end), n); // scaled_linear
    for (int i = 0; i < n; i++) {
      roots[i] = roots[i] * roots[i];
    }
    return roots;
  }

  /**
   * torch.linspace in float32: start + step * i from the start for the first half, end - step *
   * (n - 1 - i) from the end for the rest, each rounded once (torch's vectorised kernel uses a
   * fused multiply-add; the double sum here is exact, so it rounds the same way).
   */
  static float[] linspace32(double startValue, double endValue, int n) {
    float start = (float) startValue;
    float end = (float) endValue;
    float step = (end - start) / (float) (n - 1);
    float[] out = new float[n];
    for (int i = 0; i < n; i++) {
      out[i] = i < n / 2
          ? (float) ((double) start + (double) step * i)
          : (float) ((double) end - (double) step * (n - 1 - i));
    }
    return out;
  }

  /** cumprod(1 - betas): torch accumulates a float32 cumprod in double, rounding each output. */
  private static float[] cumprodOfOneMinus(float[] betas) {
    float[] out = new float[betas.length];
    double product = 1.0;
    for (int i = 0; i < betas.length; i++) {
      product *= 1.0f - betas[i]; // a float32 factor, a double product
      out[i] = (float) product;
    }
    return out;
  }

  /** diffusers' rescale_zero_terminal_snr (arXiv 2305.08891, Algorithm 1), in float32. */
  private static float[] rescaleZeroTerminalSnr(float[] betas) {
    float[] roots = cumprodOfOneMinus(betas);
    for (int i = 0; i < roots.length; i++) {
      roots[i] = (float) Math.sqrt(roots[i]);
    }
    float first = roots[0];
    float last = roots[roots.length - 1];
    float scale = first / (first - last);
    float[] rescaled = new float[betas.length];
    float previous = 0;
    for (int i = 0; i < roots.length; i++) {
      float root = (roots[i] - last) * scale;
      float alphaBar = root * root;
      rescaled[i] = 1.0f - (i == 0 ? alphaBar : alphaBar / previous);
      previous = alphaBar;
    }
    return rescaled;
  }

  // ---- timesteps

  @Override
  public void setTimesteps(int steps) {
    if (steps < 1 || steps > trainSteps) {
      throw new DemoException("steps must be in [1, " + trainSteps + "], got " + steps);
    }
    if (flowSigmas) {
      setFlowTimesteps(steps);
      return;
    }
    double[] timesteps = spacedTimesteps(steps);
    sigmas = new double[timesteps.length + 1];
    for (int i = 0; i < timesteps.length; i++) {
      // np.interp over the table: past its ends (leading spacing's steps_offset can reach
      // N) it takes the end value.
      int index = (int) Math.max(0, Math.min(trainSteps - 1, timesteps[i]));
      float ac = alphasCumprod[index];
      sigmas[i] = (float) Math.sqrt((1.0f - ac) / ac); // float32, as diffusers' table
    }
    startSchedule(timesteps);
    lowerOrderSteps = 0;
    previousX0 = null;
  }

  /**
   * Flow sigmas: 1 - np.linspace(1, 1 / N, steps + 1) in float64, shifted, the first (0) dropped
   * and the rest reversed; timesteps N * sigma truncated to integers; sigmas rounded to float32.
   */
  private void setFlowTimesteps(int steps) {
    double step = (1.0 / trainSteps - 1.0) / steps;
    double[] timesteps = new double[steps];
    sigmas = new double[steps + 1];
    for (int i = 0; i < steps; i++) {
      int k = steps - i;
      double alpha = k == steps ? 1.0 / trainSteps : k * step + 1.0; // numpy sets the end exactly
      double sigma = 1.0 - alpha;
      double shifted = flowShift * sigma / (1.0 + (flowShift - 1.0) * sigma);
      timesteps[i] = (long) (shifted * trainSteps);
      sigmas[i] = (float) shifted;
    }
    startSchedule(timesteps);
    lowerOrderSteps = 0;
    previousX0 = null;
  }

  /** diffusers' three spacings (numpy float64, rounded half to even as np.round). */
  private double[] spacedTimesteps(int steps) {
    double[] out;
    if (spacing.equals("linspace")) {
      double step = (trainSteps - 1.0) / steps; // np.linspace(0, N - 1, steps + 1)
      out = new double[steps];
      for (int i = 0; i < steps; i++) {
        int k = steps - i; // reversed, dropping the 0 at the start
        out[i] = Math.rint(k == steps ? trainSteps - 1.0 : k * step);
      }
    } else if (spacing.equals("leading")) {
      int ratio = trainSteps / (steps + 1);
      out = new double[steps];
      for (int i = 0; i < steps; i++) {
        out[i] = (double) (steps - i) * ratio + stepsOffset;
      }
    } else {
      out = trailing(steps);
    }
    return out;
  }

  /**
   * np.arange(N, 0, -N / steps).round() - 1, as numpy computes it: the length is ceil(N /
   * ratio) and element i >= 2 is start + i * ((start - ratio) - start).
   */
  private double[] trailing(int steps) {
    double ratio = (double) trainSteps / steps;
    double start = trainSteps;
    int length = (int) Math.ceil((0.0 - start) / -ratio);
    double second = start + -ratio;
    double delta = second - start;
    double[] out = new double[length];
    for (int i = 0; i < length; i++) {
      double value = i == 0 ? start : i == 1 ? second : start + i * delta;
      out[i] = Math.rint(value) - 1;
    }
    return out;
  }

  @Override
  public double[] sigmas() {
    return sigmas.clone();
  }

  @Override
  public double initNoiseSigma() {
    return 1.0;
  }

  // ---- the step

  @Override
  protected double[] stepAtIndex(double[] modelOutput, double[] sample) {
    double[] x0 = dataPrediction(modelOutput, sample, sigmas[stepIndex]);
    boolean last = stepIndex == timesteps.length - 1; // final sigma 0: always first order
    double[] next = solverOrder == 1 || lowerOrderSteps < 1 || last
        ? firstOrder(x0, sample)
        : secondOrder(x0, previousX0, sample);
    lowerOrderSteps = Math.min(lowerOrderSteps + 1, solverOrder);
    previousX0 = x0;
    return next;
  }

  /** DPM-Solver starts an absent timestep at the last step (diffusers' index_for_timestep). */
  @Override
  protected int indexOfAbsent(double timestep) {
    return timesteps.length - 1;
  }

  /** x0 from the model output (DPM-Solver++ integrates the data prediction). */
  private double[] dataPrediction(double[] modelOutput, double[] sample, double sigma) {
    double alpha = alpha(sigma);
    double sigmaT = sigmaT(sigma);
    double[] x0 = new double[sample.length];
    for (int i = 0; i < x0.length; i++) {
      if (predictionType.equals("flow_prediction")) {
        x0[i] = sample[i] - sigma * modelOutput[i];
      } else if (predictionType.equals("v_prediction")) {
        x0[i] = alpha * sample[i] - sigmaT * modelOutput[i];
      } else {
        x0[i] = (sample[i] - sigmaT * modelOutput[i]) / alpha;
      }
    }
    return x0;
  }

  /** alpha_t of a sigma (diffusers' _sigma_to_alpha_sigma_t): 1 - sigma on flow sigmas. */
  private double alpha(double sigma) {
    return flowSigmas ? 1.0 - sigma : 1.0 / Math.sqrt(sigma * sigma + 1.0);
  }

  private double sigmaT(double sigma) {
    return flowSigmas ? sigma : sigma * alpha(sigma);
  }

  /** lambda = log(alpha_t / sigma_t): infinite at sigma 0, which makes exp(-h) 0. */
  private double lambda(double sigma) {
    return Math.log(alpha(sigma)) - Math.log(sigmaT(sigma));
  }

  private double[] firstOrder(double[] x0, double[] sample) {
    double sigmaS = sigmas[stepIndex];
    double sigmaNext = sigmas[stepIndex + 1];
    double alphaT = alpha(sigmaNext);
    double h = lambda(sigmaNext) - lambda(sigmaS);
    double keep = sigmaT(sigmaNext) / sigmaT(sigmaS);
    double towardsX0 = alphaT * (Math.exp(-h) - 1.0);
    double[] out = new double[sample.length];
    for (int i = 0; i < out.length; i++) {
      out[i] = keep * sample[i] - towardsX0 * x0[i];
    }
    return out;
  }

  /** The multistep midpoint update from this step's and the previous step's x0. */
  private double[] secondOrder(double[] x0, double[] previous, double[] sample) {
    double sigmaPrev = sigmas[stepIndex - 1];
    double sigmaS = sigmas[stepIndex];
    double sigmaNext = sigmas[stepIndex + 1];
    double alphaT = alpha(sigmaNext);
    double h = lambda(sigmaNext) - lambda(sigmaS);
    double r0 = (lambda(sigmaS) - lambda(sigmaPrev)) / h;
    double keep = sigmaT(sigmaNext) / sigmaT(sigmaS);
    double towardsX0 = alphaT * (Math.exp(-h) - 1.0);
    double[] out = new double[sample.length];
    for (int i = 0; i < out.length; i++) {
      double d1 = (1.0 / r0) * (x0[i] - previous[i]);
      out[i] = keep * sample[i] - towardsX0 * x0[i] - 0.5 * towardsX0 * d1;
    }
    return out;
  }
}
