import Foundation

/// A diffusers scheduler as the pipelines drive it: `setTimesteps(n)`, then for each timestep t
/// of `timesteps`, `step(modelOutput, t, sample)` gives the next sample. A port of the Android
/// app's DpmSolverMultistep / FlowMatchEuler / SteppedScheduler (checked there on the JVM
/// against diffusers to 1e-5): the tables are built with diffusers' float32 operations, the
/// latents are kept in Double. Options neither implements are refused when the config is read.
protocol DiffusionScheduler: AnyObject {
  func setTimesteps(_ steps: Int) throws
  var timesteps: [Double] { get }
  var initNoiseSigma: Double { get }
  func step(_ modelOutput: [Double], _ timestep: Double, _ sample: [Double]) throws -> [Double]
}

/// The manifest's pipeline.scheduler ({"class_name", "config"}) as the scheduler it names.
enum Schedulers {
  static func make(className: String, config: [String: Any]) throws -> DiffusionScheduler {
    let values = SchedulerConfig(name: className, values: config)
    switch className {
    case "DPMSolverMultistepScheduler": return try DPMSolverMultistep(values)
    case "FlowMatchEulerDiscreteScheduler": return try FlowMatchEuler(values)
    default:
      throw DemoError("scheduler \(className) is not implemented by this app"
        + " (DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler)")
    }
  }
}

/// Typed reads of a scheduler config, and the refusal of options the app does not implement.
struct SchedulerConfig {
  let name: String
  let values: [String: Any]

  func number(_ key: String, _ fallback: Double) -> Double {
    (values[key] as? NSNumber)?.doubleValue ?? fallback
  }

  func integer(_ key: String, _ fallback: Int, _ range: ClosedRange<Int>) throws -> Int {
    guard let raw = values[key] as? NSNumber else { return fallback }
    let value = raw.intValue
    guard Double(value) == raw.doubleValue, range.contains(value) else {
      throw DemoError("\(name) \(key) = \(raw) is not an integer in \(range)")
    }
    return value
  }

  func string(_ key: String, _ fallback: String) -> String { values[key] as? String ?? fallback }

  func bool(_ key: String) -> Bool { (values[key] as? NSNumber)?.boolValue ?? false }

  /// JSON null or absent.
  func isNull(_ key: String) -> Bool { values[key] == nil || values[key] is NSNull }

  func refuse(_ key: String, unlessIn implemented: [String], fallback: String, why: String) throws {
    let value = string(key, fallback)
    guard implemented.contains(value) else {
      throw DemoError("\(name) has \(key) = \(value), which this app does not implement (\(why))")
    }
  }

  func refuseTrue(_ keys: [String]) throws {
    for key in keys where bool(key) {
      throw DemoError("\(name) has \(key) = true, which this app does not implement")
    }
  }
}

/// What both schedulers share, as diffusers does it: the step index is found from the first
/// timestep given (index_for_timestep, the second match if it repeats) and then advances by one.
class SteppedScheduler {
  private(set) var timesteps: [Double] = []
  var stepIndex = -1
  var initNoiseSigma: Double { 1.0 }

  func startSchedule(_ newTimesteps: [Double]) {
    timesteps = newTimesteps
    stepIndex = -1
  }

  func step(_ modelOutput: [Double], _ timestep: Double, _ sample: [Double]) throws -> [Double] {
    guard !timesteps.isEmpty else { throw DemoError("setTimesteps must come before step") }
    if stepIndex < 0 {
      let matches = timesteps.indices.filter { timesteps[$0] == timestep }
      if matches.count > 1 {
        stepIndex = matches[1]
      } else if let first = matches.first {
        stepIndex = first
      } else {
        stepIndex = try indexOfAbsent(timestep)
      }
    }
    guard stepIndex < timesteps.count else { throw DemoError("step called after the last timestep") }
    guard modelOutput.count == sample.count else {
      throw DemoError("the model output has \(modelOutput.count) values, the latents \(sample.count);"
        + " the denoiser and latents disagree")
    }
    let next = stepAtIndex(modelOutput, sample)
    stepIndex += 1
    return next
  }

  func stepAtIndex(_ modelOutput: [Double], _ sample: [Double]) -> [Double] { fatalError("subclass") }

  func indexOfAbsent(_ timestep: Double) throws -> Int { fatalError("subclass") }
}

/// diffusers' DPMSolverMultistepScheduler as PixArt and SANA pipelines configure it: DPM-Solver++
/// (data prediction), order 1 or 2, midpoint, the last step first order to sigma 0; either linear
/// or scaled_linear betas (optionally rescaled to zero terminal SNR; epsilon or v prediction;
/// linspace, leading or trailing timestep spacing) or flow sigmas shifted by flow_shift with flow
/// prediction (SANA's).
final class DPMSolverMultistep: SteppedScheduler, DiffusionScheduler {
  private let trainSteps: Int
  private let alphasCumprod: [Float]
  private let spacing: String
  private let stepsOffset: Int
  private let predictionType: String
  private let solverOrder: Int
  private let flowSigmas: Bool
  private let flowShift: Double
  private var sigmas: [Double] = []
  private var lowerOrderSteps = 0
  private var previousX0: [Double]? = nil

  init(_ config: SchedulerConfig) throws {
    try config.refuse("algorithm_type", unlessIn: ["dpmsolver++"], fallback: "dpmsolver++", why: "DPM-Solver++ only")
    try config.refuse("solver_type", unlessIn: ["midpoint"], fallback: "midpoint", why: "midpoint only")
    if config.bool("use_flow_sigmas") {
      try config.refuse("prediction_type", unlessIn: ["flow_prediction"], fallback: "epsilon",
                        why: "flow sigmas with flow prediction")
    } else {
      try config.refuse("prediction_type", unlessIn: ["epsilon", "v_prediction"], fallback: "epsilon",
                        why: "epsilon and v prediction")
    }
    try config.refuse("beta_schedule", unlessIn: ["linear", "scaled_linear"], fallback: "linear",
                      why: "linear and scaled_linear betas")
    try config.refuse("timestep_spacing", unlessIn: ["linspace", "leading", "trailing"], fallback: "linspace",
                      why: "linspace, leading, trailing")
    try config.refuse("final_sigmas_type", unlessIn: ["zero"], fallback: "zero", why: "the last step goes to sigma 0")
    // The manifest writes -inf as the string "-inf" (JSON has no infinities).
    guard config.isNull("lambda_min_clipped") || config.string("lambda_min_clipped", "") == "-inf" else {
      throw DemoError("\(config.name) clips lambda, which this app does not implement")
    }
    guard config.isNull("trained_betas"), config.isNull("variance_type") else {
      throw DemoError("\(config.name) has trained_betas or a variance_type, which this app does not implement")
    }
    try config.refuseTrue(["thresholding", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                           "use_lu_lambdas", "use_dynamic_shifting"])
    let train = try config.integer("num_train_timesteps", 1000, 2...(1 << 20))
    trainSteps = train
    spacing = config.string("timestep_spacing", "linspace")
    stepsOffset = try config.integer("steps_offset", 0, 0...(1 << 20))
    predictionType = config.string("prediction_type", "epsilon")
    solverOrder = try config.integer("solver_order", 2, 1...2)
    flowSigmas = config.bool("use_flow_sigmas")
    flowShift = config.number("flow_shift", 1.0)
    var betas = DPMSolverMultistep.betas(config, train)
    let zeroSnr = config.bool("rescale_betas_zero_snr")
    if zeroSnr { betas = DPMSolverMultistep.rescaleZeroTerminalSnr(betas) }
    var cumprod = DPMSolverMultistep.cumprodOfOneMinus(betas)
    if zeroSnr { cumprod[train - 1] = 0x1p-24 }  // diffusers: so that the first sigma is finite
    alphasCumprod = cumprod
  }

  // ---- the tables, in Float as torch builds them in diffusers

  private static func betas(_ config: SchedulerConfig, _ n: Int) -> [Float] {
    let start = config.number("beta_start", 0.0001), end = config.number("beta_end", 0.02)
    if config.string("beta_schedule", "linear") == "linear" { return linspace32(start, end, n) }
    return linspace32(start.squareRoot(), end.squareRoot(), n).map { $0 * $0 }  // scaled_linear
  }

  /// torch.linspace in float32: from the start for the first half, from the end for the rest.
  static func linspace32(_ startValue: Double, _ endValue: Double, _ n: Int) -> [Float] {
    let start = Float(startValue), end = Float(endValue)
    let step = (end - start) / Float(n - 1)
    return (0..<n).map { i in
      i < n / 2 ? Float(Double(start) + Double(step) * Double(i))
        : Float(Double(end) - Double(step) * Double(n - 1 - i))
    }
  }

  /// cumprod(1 - betas): a float32 factor, a double product, each output rounded to float32.
  private static func cumprodOfOneMinus(_ betas: [Float]) -> [Float] {
    var product = 1.0
    return betas.map { beta in
      product *= Double(1.0 - beta)
      return Float(product)
    }
  }

  /// diffusers' rescale_zero_terminal_snr (arXiv 2305.08891, Algorithm 1), in float32.
  private static func rescaleZeroTerminalSnr(_ betas: [Float]) -> [Float] {
    let roots = cumprodOfOneMinus(betas).map { $0.squareRoot() }
    let first = roots[0], last = roots[roots.count - 1]
    let scale = first / (first - last)
    var previous: Float = 0
    return roots.indices.map { i in
      let root = (roots[i] - last) * scale
      let alphaBar = root * root
      defer { previous = alphaBar }
      return 1.0 - (i == 0 ? alphaBar : alphaBar / previous)
    }
  }

  // ---- timesteps

  func setTimesteps(_ steps: Int) throws {
    guard (1...trainSteps).contains(steps) else { throw DemoError("steps must be in [1, \(trainSteps)], got \(steps)") }
    if flowSigmas { return setFlowTimesteps(steps) }
    let spaced = spacedTimesteps(steps)
    sigmas = spaced.map { t in
      let ac = alphasCumprod[max(0, min(trainSteps - 1, Int(t)))]  // np.interp: ends held
      return Double(((1.0 - ac) / ac).squareRoot())  // float32, as diffusers' table
    } + [0.0]
    startSchedule(spaced)
    lowerOrderSteps = 0
    previousX0 = nil
  }

  /// Flow sigmas: 1 - np.linspace(1, 1 / N, steps + 1) in float64, shifted, the first (0) dropped
  /// and the rest reversed; timesteps N * sigma truncated to integers; sigmas rounded to float32.
  private func setFlowTimesteps(_ steps: Int) {
    let step = (1.0 / Double(trainSteps) - 1.0) / Double(steps)
    let shifted: [Double] = (0..<steps).map { i in
      let k = steps - i
      let alpha = k == steps ? 1.0 / Double(trainSteps) : Double(k) * step + 1.0  // numpy sets the end exactly
      let sigma = 1.0 - alpha
      return flowShift * sigma / (1.0 + (flowShift - 1.0) * sigma)
    }
    sigmas = shifted.map { Double(Float($0)) } + [0.0]
    startSchedule(shifted.map { ($0 * Double(trainSteps)).rounded(.towardZero) })
    lowerOrderSteps = 0
    previousX0 = nil
  }

  /// diffusers' three spacings (numpy float64, np.round: half to even).
  private func spacedTimesteps(_ steps: Int) -> [Double] {
    switch spacing {
    case "linspace":
      let step = (Double(trainSteps) - 1.0) / Double(steps)
      return (0..<steps).map { i in
        let k = steps - i
        return (k == steps ? Double(trainSteps) - 1.0 : Double(k) * step).rounded(.toNearestOrEven)
      }
    case "leading":
      let ratio = trainSteps / (steps + 1)
      return (0..<steps).map { Double((steps - $0) * ratio + stepsOffset) }
    default:  // trailing: np.arange(N, 0, -N / steps).round() - 1, as numpy computes it
      let ratio = Double(trainSteps) / Double(steps), start = Double(trainSteps)
      let length = Int((start / ratio).rounded(.up))
      let delta = (start - ratio) - start
      return (0..<length).map { i in
        let value = i == 0 ? start : i == 1 ? start - ratio : start + Double(i) * delta
        return value.rounded(.toNearestOrEven) - 1
      }
    }
  }

  // ---- the step

  override func stepAtIndex(_ modelOutput: [Double], _ sample: [Double]) -> [Double] {
    let x0 = dataPrediction(modelOutput, sample, sigmas[stepIndex])
    let last = stepIndex == timesteps.count - 1  // final sigma 0: always first order
    let next: [Double]
    if solverOrder == 1 || lowerOrderSteps < 1 || last || previousX0 == nil {
      next = update(x0, nil, sample)
    } else {
      next = update(x0, previousX0, sample)
    }
    lowerOrderSteps = min(lowerOrderSteps + 1, solverOrder)
    previousX0 = x0
    return next
  }

  /// DPM-Solver starts an absent timestep at the last step (diffusers' index_for_timestep).
  override func indexOfAbsent(_ timestep: Double) throws -> Int { timesteps.count - 1 }

  private func dataPrediction(_ output: [Double], _ sample: [Double], _ sigma: Double) -> [Double] {
    let alphaT = alpha(sigma), sigmaT = self.sigmaT(sigma)
    return sample.indices.map { i in
      switch predictionType {
      case "flow_prediction": return sample[i] - sigma * output[i]
      case "v_prediction": return alphaT * sample[i] - sigmaT * output[i]
      default: return (sample[i] - sigmaT * output[i]) / alphaT
      }
    }
  }

  /// alpha_t of a sigma (diffusers' _sigma_to_alpha_sigma_t): 1 - sigma on flow sigmas.
  private func alpha(_ sigma: Double) -> Double { flowSigmas ? 1.0 - sigma : 1.0 / (sigma * sigma + 1.0).squareRoot() }

  private func sigmaT(_ sigma: Double) -> Double { flowSigmas ? sigma : sigma * alpha(sigma) }

  /// log(alpha_t / sigma_t): infinite at sigma 0, which makes exp(-h) 0.
  private func lambda(_ sigma: Double) -> Double { log(alpha(sigma)) - log(sigmaT(sigma)) }

  /// First order without `previous`; else the multistep midpoint update (DPM-Solver++ 2M).
  private func update(_ x0: [Double], _ previous: [Double]?, _ sample: [Double]) -> [Double] {
    let sigmaS = sigmas[stepIndex], sigmaNext = sigmas[stepIndex + 1]
    let alphaT = alpha(sigmaNext)
    let h = lambda(sigmaNext) - lambda(sigmaS)
    let keep = sigmaT(sigmaNext) / sigmaT(sigmaS)
    let towardsX0 = alphaT * (exp(-h) - 1.0)
    guard let previous else { return sample.indices.map { keep * sample[$0] - towardsX0 * x0[$0] } }
    let r0 = (lambda(sigmaS) - lambda(sigmas[stepIndex - 1])) / h
    return sample.indices.map { i in
      let d1 = (1.0 / r0) * (x0[i] - previous[i])
      return keep * sample[i] - towardsX0 * x0[i] - 0.5 * towardsX0 * d1
    }
  }
}

/// diffusers' FlowMatchEulerDiscreteScheduler as SD3 pipelines configure it: a static shift,
/// sigmas evenly spaced between the shifted training range's ends, timestep = 1000 sigma, and
/// the Euler step sample + (next sigma - sigma) * model output.
final class FlowMatchEuler: SteppedScheduler, DiffusionScheduler {
  private let trainSteps: Int
  private let shift: Double
  private let sigmaMax: Float
  private let sigmaMin: Float
  private var sigmas: [Float] = []

  init(_ config: SchedulerConfig) throws {
    try config.refuseTrue(["use_dynamic_shifting", "invert_sigmas", "use_karras_sigmas", "use_exponential_sigmas",
                           "use_beta_sigmas", "stochastic_sampling"])
    guard config.isNull("shift_terminal") else {
      throw DemoError("\(config.name) has shift_terminal, which this app does not implement")
    }
    let train = try config.integer("num_train_timesteps", 1000, 2...(1 << 20))
    trainSteps = train
    let shiftValue = config.number("shift", 1.0)
    guard shiftValue > 0 else { throw DemoError("\(config.name) shift must be > 0, got \(shiftValue)") }
    // The training schedule's ends, in float32 as diffusers' __init__ computes them.
    let shifted = { (sigma: Float) -> Float in Float(shiftValue) * sigma / (1.0 + Float(shiftValue - 1) * sigma) }
    shift = shiftValue
    sigmaMax = shifted(1.0)
    sigmaMin = shifted(1.0 / Float(train))
  }

  /// np.linspace over [1000 sigma_max, 1000 sigma_min] in float64, / 1000, shifted in float64,
  /// then float32; timesteps are those float32 sigmas times 1000 in float32.
  func setTimesteps(_ steps: Int) throws {
    guard steps >= 1 else { throw DemoError("steps must be at least 1, got \(steps)") }
    let start = Double(sigmaMax) * Double(trainSteps), stop = Double(sigmaMin) * Double(trainSteps)
    let delta = steps == 1 ? 0 : (stop - start) / Double(steps - 1)
    sigmas = (0..<steps).map { i in
      let t = steps == 1 ? start : i == steps - 1 ? stop : Double(i) * delta + start
      let sigma = t / Double(trainSteps)
      return Float(shift * sigma / (1 + (shift - 1) * sigma))
    } + [0]
    startSchedule(sigmas.dropLast().map { Double($0 * Float(trainSteps)) })
  }

  override func stepAtIndex(_ modelOutput: [Double], _ sample: [Double]) -> [Double] {
    let dt = Double(sigmas[stepIndex + 1] - sigmas[stepIndex])  // float32, as diffusers
    return sample.indices.map { sample[$0] + dt * modelOutput[$0] }
  }

  override func indexOfAbsent(_ timestep: Double) throws -> Int {
    throw DemoError("timestep \(timestep) is not one of this schedule's")
  }
}
