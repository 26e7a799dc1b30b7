"""Latency of one denoising step, teacher vs EDiT / MM-EDiT, PyTorch eager vs ExecuTorch.

Builds the PixArt-Sigma XL width (`--family pixart`: 1152, 16 heads, 120 prompt tokens, caption
width 4096) or the SD3.5-Medium width (`--family sd3`: 1536, 24 heads, joint attention with 333
prompt tokens, MMDiT-X dual-attention layers) with few layers (default 2, random weights),
converts it to EDiT / MM-EDiT (`to_edit` / `to_mm_edit`: the faithful full 3x3 ConvFusion, and
`edit-gG` for the lighter grouped 3x3 form with G groups), and for each
resolution exports each with the project's XNNPACK lowering after the default xnnpack rewrite
passes. Each program runs in the real ExecuTorch runtime; every timing round runs every model
once in eager (the unrewritten diffusers model) and once in ExecuTorch, in the same process
and threads, so ExecuTorch/eager and EDiT/teacher ratios are measured side by side. Prints
the median latency per step, the ratios, the GEMM-bound rate (model FLOPs / time, and its
share of the best fp32 GEMM rate probed in the same run, torch's BLAS or XNNPACK's), planned activation
memory (ExecuTorch memory planning) and the peak resident memory each run adds; writes a PNG
of latency vs tokens and a JSON of every number. `--onnx` adds each model in onnxruntime's CPU
EP (the project's ONNX export) to the same rounds; `--int8 SCHEME` adds each model quantized
(ExecuTorch XNNPACK, and onnxruntime with --onnx), so int8 EDiT vs int8 teacher and int8 vs fp32
are measured side by side too.

    python bench/export_latency.py [--family pixart|sd3] [--layers 2] [--resolutions 256,512,1024,2048]
                                   [--models teacher,edit,edit-g8] [--passes ...] [--base-passes ...]
                                   [--onnx] [--int8 int8-dynamic]

Other agents may share the cores: the load average is printed before and after; trust
ratios from one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import PixArtTransformer2DModel, SD3Transformer2DModel
from machine import cpu_name  # bench/machine.py, beside this script
from tqdm import tqdm

from edit_mobile.export.artifact import resolve_passes
from edit_mobile.export.passes import apply_passes, default_passes
from edit_mobile.memory import release_freed_memory
from edit_mobile.models import PRESETS, DenoiserWrapper, TransformerSignature, to_edit, to_mm_edit
from edit_mobile.models.flops import count_step_flops

RESULTS = Path(__file__).resolve().parent / "results"
MIB = 1 << 20


@dataclass
class Row:
    model: str  # "teacher" | "edit" | "edit-gG"
    resolution: int  # pixels per side
    tokens: int  # image tokens
    precision: str  # "fp32" or the int8 scheme of --int8 (eager runs only fp32)
    gflop: float | None = None  # model FLOPs per step (torch FlopCounterMode)
    eager_ms: float | None = None
    executorch_ms: float | None = None
    eager_runs_ms: list[float] = field(default_factory=list)
    executorch_runs_ms: list[float] = field(default_factory=list)
    onnx_ms: float | None = None  # onnxruntime CPU EP (--onnx), the project's ONNX artifact
    onnx_runs_ms: list[float] = field(default_factory=list)
    max_abs_diff: float | None = None
    planned_xnnpack_mib: float | None = None  # ExecuTorch-planned buffers of the XNNPACK program
    planned_portable_mib: float | None = None  # same graph, no delegate: every activation planned
    eager_peak_mib: float | None = None  # resident memory a run adds (VmHWM after clear_refs)
    executorch_peak_mib: float | None = None  # same, first run of a fresh program (XNNPACK workspace)
    ops_delegated: str | None = None
    passes: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def executorch_over_eager(self) -> float | None:
        if self.eager_ms and self.executorch_ms:
            return self.executorch_ms / self.eager_ms
        return None

    def gflops(self, runtime: str) -> float | None:
        ms = getattr(self, f"{runtime}_ms")
        return self.gflop / ms * 1000 if self.gflop and ms else None


# ---------------------------------------------------------------- models


def pixart_sigma_xl(resolution: int, layers: int) -> PixArtTransformer2DModel:
    config = {**PRESETS["pixart-sigma-xl-1024"].config, "num_layers": layers, "sample_size": resolution // 8}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return PixArtTransformer2DModel.from_config(config).eval()


def sd35_medium(resolution: int, layers: int) -> SD3Transformer2DModel:
    """SD3.5-Medium's width with `layers` blocks, the first ones MMDiT-X (dual attention) as in
    the real model (13 of its 24). Its position table is cut to the resolution's grid, the crop
    the real model takes of its 384 x 384 one (0.9 GB in float32, which every eager copy, ONNX
    model and onnxruntime session here would hold; the programs fold the crop to a constant)."""
    grid = resolution // 8 // PRESETS["sd35-medium"].config.get("patch_size", 2)
    config = {**PRESETS["sd35-medium"].config, "num_layers": layers, "sample_size": resolution // 8,
              "dual_attention_layers": tuple(range(min(layers, 13))), "pos_embed_max_size": grid}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return SD3Transformer2DModel.from_config(config).eval()


# family -> (builder, teacher / student names, what is built, the real model's layers)
FAMILIES = {"pixart": (pixart_sigma_xl, ("PixArt-Sigma", "EDiT"), "PixArt-Sigma XL width (1152, 16 heads, 120 prompt tokens)", 28),
            "sd3": (sd35_medium, ("SD3.5-Medium", "MM-EDiT"), "SD3.5-Medium width (1536, 24 heads, 333 prompt tokens, MMDiT-X)", 24)}


def edit_of(teacher, fusion_groups: int = 1, fusion: str = "conv") -> torch.nn.Module:
    convert = to_mm_edit if isinstance(teacher, SD3Transformer2DModel) else to_edit
    student = convert(teacher, {"fusion_groups": fusion_groups, "fusion": fusion}).eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for name, parameter in student.named_parameters():
            if ".conv_fusion.expand." in name:  # conversion starts it at 0; give it signal
                parameter.normal_(0.0, 0.02)
    return student


BASE_SUFFIX = "@base"
TOKEN_CONV_PASSES = ("conv_fusion_gemm", "compressor_tokens")


def variants(teacher, names: list[str]) -> dict[str, torch.nn.Module]:
    """teacher, edit (faithful full 3x3 ConvFusion), edit-gG (grouped 3x3, G groups) and
    edit-none (no ConvFusion: the teacher's queries)."""
    built = {}
    for name in names:
        if name.endswith(BASE_SUFFIX):  # the same model, exported with --base-passes
            built[name] = variants(teacher, [name.removesuffix(BASE_SUFFIX)])[name.removesuffix(BASE_SUFFIX)]
        elif name == "teacher":
            built[name] = teacher  # nothing mutates it: students are rebuilt, passes run on copies
        elif name == "edit":
            built[name] = edit_of(teacher)
        elif name.startswith("edit-g"):
            built[name] = edit_of(teacher, int(name.removeprefix("edit-g")))
        elif name == "edit-none":
            built[name] = edit_of(teacher, fusion="none")
        else:
            raise SystemExit(f"unknown model {name!r}: use teacher, edit, edit-gG (G = ConvFusion groups) or edit-none")
    return built


# ---------------------------------------------------------------- measuring


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def peak_added_mib(run) -> float | None:
    """Resident memory `run()` adds at its peak: reset VmHWM, run, read it back (Linux)."""
    try:
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        run()
        return (_status_kib("VmHWM") - before) / 1024
    except OSError:
        run()
        return None


PROBE = """
import sys, torch
from pathlib import Path
from executorch.runtime import Runtime
status = lambda key: next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key + ":"))
method = Runtime.get().load_program(sys.argv[1]).load_method("forward")
inputs = torch.load(sys.argv[2], weights_only=True)
Path("/proc/self/clear_refs").write_text("5")
before = status("VmRSS")
method.execute(inputs)
print((status("VmHWM") - before) / 1024)
"""


def executorch_run_memory_mib(program_path: Path, inputs) -> float | None:
    """Memory the first run of a freshly loaded program adds: XNNPACK allocates its
    activation workspace then (ExecuTorch's planned buffers are allocated at load). Measured
    in a fresh process, because XNNPACK may share one workspace between programs."""
    inputs_path = program_path.with_suffix(".inputs.pt")
    torch.save(list(inputs), inputs_path)
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", PROBE, str(program_path), str(inputs_path)],
        capture_output=True, text=True, check=False,
    )
    lines = result.stdout.strip().splitlines()
    return float(lines[-1]) if result.returncode == 0 and lines else None


def planned_mib(program_manager) -> float:
    """Bytes of the memory-planned (non-constant) buffers of method `forward`."""
    plan = program_manager.executorch_program.execution_plan[0]
    return sum(plan.non_const_buffer_sizes) / MIB


def portable_planned_mib(exported) -> float:
    """Plan the same graph without a delegate, so every activation is in ExecuTorch's plan."""
    from executorch.exir import to_edge

    return planned_mib(to_edge(exported).to_executorch())


def lower_xnnpack(exported):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    from edit_mobile.export.backends import executorch_program

    # As the xnnpack backend lowers: constant-only subgraphs (SD3's crop of its 384x384 position
    # table) folded, so the program holds the crop, not the 0.9 GB table.
    edge, coverage = executorch_program.lower(exported, [XnnpackPartitioner()],
                                              transform_passes=[executorch_program.FoldConstantSubgraphs()])
    return executorch_program.to_executorch(edge), coverage


def fused_score_bytes(model, tokens: int) -> int:
    """fp32 scores of all heads of one teacher self-attention, which XNNPACK holds at once."""
    return 4 * model.config.num_attention_heads * tokens * tokens


@dataclass
class Contender:
    """One model at one resolution, ready to time: eager module and (if lowered) its program."""

    row: Row
    run_eager: Callable[[], torch.Tensor] | None
    run_executorch: Callable[[], torch.Tensor] | None = None
    run_onnx: Callable[[], object] | None = None


def new_row(name: str, model, resolution: int, passes: list[str], precision: str):
    """The example inputs and a row with the step's FLOPs, for one contender."""
    signature = TransformerSignature.of(model, resolution, resolution)
    tokens = (resolution // 8 // model.config.patch_size) ** 2
    row = Row(name, resolution, tokens, precision, passes=list(passes))
    row.gflop = count_step_flops(model, signature).total / 1e9
    return signature, signature.example_inputs(seed=0), row


def write_program(row: Row, program, coverage, path: Path) -> Path:
    """Record the lowered program's plan and delegation in `row` and write it to `path` (the
    caller drops the in-memory program, which can hold GBs, before loading the file)."""
    row.planned_xnnpack_mib = planned_mib(program)
    row.ops_delegated = f"{coverage.ops_delegated}/{coverage.ops_total}"
    path.write_bytes(program.buffer)
    return path


def prepare(name: str, model, resolution: int, passes: list[str], folder: Path, args) -> Contender:
    """Count FLOPs, lower to XNNPACK, check outputs and measure memory; timing comes later."""
    signature, inputs, row = new_row(name, model, resolution, passes, "fp32")
    tokens = row.tokens
    eager = DenoiserWrapper(model).eval()

    def run_eager():
        with torch.no_grad():
            return eager(*inputs)

    contender = Contender(row, run_eager)
    rewritten = DenoiserWrapper(apply_passes(copy.deepcopy(model), passes)).eval()
    with torch.no_grad():
        if not args.skip_portable_plan:  # lowering consumes an exported program: plan a fresh one
            row.planned_portable_mib = portable_planned_mib(torch.export.export(rewritten, inputs))
        score_gib = fused_score_bytes(model, tokens) / (1 << 30) if name == "teacher" else 0.0
        if score_gib > args.memory_budget_gib:
            # XNNPACK keeps every head's score matrix alive at once: its partition re-sorts the
            # graph breadth-first, so even split heads do not bound it (see split_head_attention.py).
            row.note = f"ExecuTorch skipped: XNNPACK would hold ~{score_gib:.0f} GiB of attention scores"
            row.eager_peak_mib = peak_added_mib(run_eager)
            return contender
        program, coverage = lower_xnnpack(torch.export.export(rewritten, inputs))
    path = write_program(row, program, coverage, folder / f"{name}-{resolution}.pte")
    del program, rewritten
    gc.collect()
    contender.run_executorch = executorch_runner(path, inputs)
    outputs = {}
    row.eager_peak_mib = peak_added_mib(lambda: outputs.setdefault("eager", run_eager()))
    row.max_abs_diff = float((contender.run_executorch() - outputs["eager"]).abs().max())
    row.executorch_peak_mib = executorch_run_memory_mib(path, inputs)
    if args.onnx:
        contender.run_onnx = onnx_runner(model, inputs, signature, folder / f"{name}-{resolution}-onnx")
    return contender


def prepare_int8(name: str, model, resolution: int, passes: list[str], folder: Path, args) -> Contender:
    """The same model quantized with the project's XNNPACK scheme (and, with --onnx, onnxruntime's
    quantizer), calibrated on the one example input: timing only, the output is compared loosely."""
    from edit_mobile.export.quantization.xnnpack import quantize_for_xnnpack

    signature, inputs, row = new_row(name, model, resolution, passes, args.int8)
    rewritten = DenoiserWrapper(apply_passes(copy.deepcopy(model), passes)).eval()
    with torch.no_grad():
        reference = rewritten(*inputs)
        quantized, _ = quantize_for_xnnpack(torch.export.export(rewritten, inputs, strict=False), args.int8,
                                            [inputs], progress=False)
        program, coverage = lower_xnnpack(quantized)
    path = write_program(row, program, coverage, folder / f"{name}-{resolution}-{args.int8}.pte")
    del program, quantized, rewritten
    gc.collect()
    contender = Contender(row, None, executorch_runner(path, inputs))
    row.max_abs_diff = float((contender.run_executorch() - reference).abs().max())
    row.executorch_peak_mib = executorch_run_memory_mib(path, inputs)
    if args.onnx:
        contender.run_onnx = onnx_runner(model, inputs, signature, folder / f"{name}-{resolution}-{args.int8}-onnx",
                                         scheme=args.int8)
    return contender


def onnx_runner(model, inputs, signature, folder: Path, scheme: str | None = None) -> Callable[[], object]:
    """The model as `edit-mobile export --backend onnx [--quantize SCHEME]` writes it (the onnx
    default passes; int8-static is QDQ, int8-dynamic ORT's dynamic MatMulInteger), in an
    onnxruntime CPU session with as many intra-op threads as torch uses."""
    import onnxruntime as ort

    from edit_mobile.export.backends.base import LoweringJob
    from edit_mobile.export.backends.onnx import BACKEND as ONNX
    from edit_mobile.export.quantization.onnx import quantize_onnx

    folder.mkdir()
    rewritten = DenoiserWrapper(apply_passes(copy.deepcopy(model), default_passes("onnx"))).eval()
    with torch.no_grad():
        exported = torch.export.export(rewritten, inputs)
        reference = (rewritten(*inputs),)
    names = [spec.name for spec in signature.inputs]
    result = ONNX.lower(LoweringJob(exported, inputs, reference, names, ["noise_pred"], "fp32"), folder)
    if scheme:
        program = folder / result.files["program"]
        quantize_onnx(program, program, scheme, names, calibration_inputs=[inputs])
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # No arena: it would keep each session's peak (the teacher's attention scores, GBs at 1024 px)
    # after the run, for every session of the round at once.
    options.enable_cpu_mem_arena = False
    session = ort.InferenceSession(str(folder / result.files["program"]), options, providers=["CPUExecutionProvider"])
    feed = {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)}
    return lambda: session.run(None, feed)


def executorch_runner(program_path: Path, inputs) -> Callable[[], torch.Tensor]:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(program_path).load_method("forward")
    return lambda: method.execute(list(inputs))[0]


def time_round_robin(contenders: list[Contender], args) -> None:
    """Each round runs every contender once, eager then ExecuTorch, so all the ratios of one
    resolution (ExecuTorch/eager and EDiT/teacher) are taken under the same machine load."""
    runs = []
    for c in contenders:
        if c.run_eager:
            runs.append((c.row.eager_runs_ms, c.run_eager))
        if c.run_executorch:
            runs.append((c.row.executorch_runs_ms, c.run_executorch))
        if c.run_onnx:
            runs.append((c.row.onnx_runs_ms, c.run_onnx))
    one_round = sum(timed(run) for _, run in runs)  # warm-up round, also sizes the budget
    repeats = int(max(args.min_reps, min(args.max_reps, args.budget_s * 1000 // one_round)))
    for _ in tqdm(range(repeats), desc="timing rounds", leave=False):
        for samples, run in runs:
            samples.append(timed(run))
    for c in contenders:
        if c.row.eager_runs_ms:
            c.row.eager_ms = statistics.median(c.row.eager_runs_ms)
        if c.row.executorch_runs_ms:
            c.row.executorch_ms = statistics.median(c.row.executorch_runs_ms)
        if c.row.onnx_runs_ms:
            c.row.onnx_ms = statistics.median(c.row.onnx_runs_ms)


def sized_defaults(passes: list[str], model, resolution: int, args, quantize: str | None = None) -> list[str]:
    """Without --passes, the xnnpack defaults as `edit-mobile export` picks them for this size and
    scheme (conv_fusion_winograd: float32 and int8-dynamic, up to 4096 image tokens); --passes as given."""
    if args.passes is not None:
        return passes
    tokens = TransformerSignature.of(model, resolution, resolution).image_tokens
    return resolve_passes(None, "xnnpack", model, tokens, quantize or "fp32")


def measure_resolution(resolution: int, names: list[str], passes: list[str], args) -> list[Row]:
    models = variants(FAMILIES[args.family][0](resolution, args.layers), names)
    with tempfile.TemporaryDirectory() as folder:
        contenders = []
        for name in names:
            model = models.pop(name)
            base = name.endswith(BASE_SUFFIX)
            chosen = args.base_passes if base else sized_defaults(passes, model, resolution, args)
            contenders.append(prepare(name, model, resolution, chosen, Path(folder), args))
            if args.int8 and contenders[-1].run_executorch:  # skipped fp32 (attention scores): skip int8 too
                chosen = args.base_passes if base else sized_defaults(passes, model, resolution, args, args.int8)
                contenders.append(prepare_int8(name, model, resolution, chosen, Path(folder), args))
            del model
            release_freed_memory()  # lowering's and quantization's freed heap, before the next model
            for row in (c.row for c in contenders if c.row.model == name):
                tqdm.write(f"  {resolution} px {name} {row.precision}: {row.gflop:.0f} GFLOP, "
                           f"delegated ops {row.ops_delegated or '-'} {row.note}")
        time_round_robin(contenders, args)
    return [c.row for c in contenders]



GEMM_SHAPES = ((4096, 1152, 4608), (4096, 1536, 6144))  # tokens x width x MLP width: XL, SD3.5-M


def gemm_rates() -> dict[str, float]:
    """This machine's fp32 GEMM rate in GFLOP/s through torch's BLAS and through XNNPACK (a lone
    Linear lowered to an ExecuTorch program), each the best of the two widths' MLP GEMMs. The
    yardstick for "% of peak" is the better of the two: torch's BLAS alone under-reads this
    machine where it does not use every vector unit (MKL on AMD EPYC: 205-236 GFLOP/s while
    XNNPACK's programs reached 440, "% of peak" read 190%). Probed at the start and the end of a
    run (the better one counts), since one probe under a passing load read 82 GFLOP/s where the
    program reached 146."""
    rates = {"torch": 0.0, "xnnpack": 0.0}
    for m, k, n in GEMM_SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        runs = {"torch": lambda a=a, b=b: torch.mm(a, b), "xnnpack": xnnpack_linear_runner(m, k, n)}
        for name, run in runs.items():
            rates[name] = max(rates[name], best_gflops(run, 2 * m * k * n))
    return rates


def best_gflops(run: Callable[[], object], flop: int) -> float:
    """`flop` over the fastest of five runs of `run` after one warm-up, in GFLOP/s."""
    run()
    return flop / min(timed(run) for _ in range(5)) / 1e6


def xnnpack_linear_runner(m: int, k: int, n: int) -> Callable[[], torch.Tensor]:
    """A bias-free (k -> n) Linear on m rows as an XNNPACK program in the ExecuTorch runtime."""
    from executorch.runtime import Runtime

    linear = torch.nn.Linear(k, n, bias=False).eval()
    inputs = (torch.randn(m, k),)
    program, _ = lower_xnnpack(torch.export.export(linear, inputs))
    loaded = Runtime.get().load_program(program.buffer)
    method = loaded.load_method("forward")

    def run() -> torch.Tensor:
        return method.execute(list(inputs))[0]

    run.program = loaded  # the method needs its program alive as long as the runner is
    return run


def gemm_peak_gflops() -> float:
    rates = gemm_rates()
    print(f"fp32 GEMM rate (the MLP GEMMs at 4096 tokens, best of 5): torch {rates['torch']:.0f}, "
          f"XNNPACK {rates['xnnpack']:.0f} GFLOP/s")
    return max(rates.values())


CLOCK = time.perf_counter  # --cpu-time: time.thread_time (one thread: the caller runs all the work)


def timed(run) -> float:
    start = CLOCK()
    run()
    return (CLOCK() - start) * 1000


# ---------------------------------------------------------------- reporting


def fmt(value, spec=".0f", none="-"):
    return none if value is None else format(value, spec)


def print_table(rows: list[Row], peak_gflops: float) -> None:
    print("\nPer denoising step (median ms); ET = ExecuTorch XNNPACK program; "
          f"% peak = model GFLOP/s over the best fp32 GEMM rate probed, torch's or XNNPACK's ({peak_gflops:.0f} GFLOP/s)")
    print(
        f"{'px':>5} {'tokens':>6} {'model':>12} {'precision':>12} {'GFLOP':>6} {'eager':>8} {'ET':>8} {'ET/eager':>8} "
        f"{'% peak (eager|ET)':>18} {'planned MiB (xnn|portable)':>27} {'run MiB (eager|ET)':>20} "
        f"{'deleg.':>8} {'maxdiff':>8} {'ORT':>8} {'ET/ORT':>7} reps"
    )
    for r in rows:
        share = {runtime: fmt(r.gflops(runtime) and 100 * r.gflops(runtime) / peak_gflops)
                 for runtime in ("eager", "executorch")}
        print(
            f"{r.resolution:>5} {r.tokens:>6} {r.model:>12} {r.precision:>12} {fmt(r.gflop):>6} {fmt(r.eager_ms):>8} "
            f"{fmt(r.executorch_ms):>8} {fmt(r.executorch_over_eager, '.2f'):>8} "
            f"{share['eager']:>8} | {share['executorch']:>7} "
            f"{fmt(r.planned_xnnpack_mib, '.1f'):>12} | {fmt(r.planned_portable_mib, '.0f'):>12} "
            f"{fmt(r.eager_peak_mib):>9} | {fmt(r.executorch_peak_mib):>8} {r.ops_delegated or '-':>8} "
            f"{fmt(r.max_abs_diff, '.1e'):>8} {fmt(r.onnx_ms):>8} "
            f"{fmt(r.executorch_ms / r.onnx_ms if r.executorch_ms and r.onnx_ms else None, '.2f'):>7} "
            f"{len(r.executorch_runs_ms or r.eager_runs_ms)} {r.note}"
        )
    print_speedups(rows)


def print_speedups(rows: list[Row]) -> None:
    print("\nEDiT vs teacher, same timing rounds (speed-up = teacher time / EDiT time; memory = EDiT / teacher)")
    print("deployed x = the teacher's faster runtime (ExecuTorch, or eager where ExecuTorch was skipped) / EDiT in ExecuTorch")
    print(f"{'px':>5} {'model':>12} {'precision':>12} {'eager x':>8} {'ET x':>8} {'deployed x':>11} {'ORT x':>7} "
          f"{'planned mem (portable)':>23} {'ET run mem':>11}")
    by_key = {(r.resolution, r.model, r.precision): r for r in rows}
    ratio = lambda a, b: a / b if a and b else None  # noqa: E731
    for r in rows:
        teacher = by_key.get((r.resolution, "teacher", r.precision))
        if r.model == "teacher" or teacher is None:
            continue
        best_teacher = min((ms for ms in (teacher.eager_ms, teacher.executorch_ms) if ms), default=None)
        print(
            f"{r.resolution:>5} {r.model:>12} {r.precision:>12} {fmt(ratio(teacher.eager_ms, r.eager_ms), '.2f'):>8} "
            f"{fmt(ratio(teacher.executorch_ms, r.executorch_ms), '.2f'):>8} "
            f"{fmt(ratio(best_teacher, r.executorch_ms), '.2f'):>11} {fmt(ratio(teacher.onnx_ms, r.onnx_ms), '.2f'):>7} "
            f"{fmt(ratio(r.planned_portable_mib, teacher.planned_portable_mib), '.3f'):>23} "
            f"{fmt(ratio(r.executorch_peak_mib, teacher.executorch_peak_mib), '.3f'):>11}"
        )
    quantized = [r for r in rows if r.precision != "fp32"]
    if quantized:
        print("\nint8 vs fp32, same rounds (speed-up = fp32 time / int8 time)")
        print(f"{'px':>5} {'model':>12} {'precision':>12} {'ET x':>8} {'ORT x':>7} {'maxdiff':>8}")
        for r in quantized:
            fp32 = by_key[(r.resolution, r.model, "fp32")]
            print(f"{r.resolution:>5} {r.model:>12} {r.precision:>12} "
                  f"{fmt(ratio(fp32.executorch_ms, r.executorch_ms), '.2f'):>8} "
                  f"{fmt(ratio(fp32.onnx_ms, r.onnx_ms), '.2f'):>7} {fmt(r.max_abs_diff, '.1e'):>8}")


def label_of(model: str, family: str = "pixart") -> str:
    teacher, student = FAMILIES[family][1]
    if model.endswith(BASE_SUFFIX):
        return f"{label_of(model.removesuffix(BASE_SUFFIX), family)} (base passes)"
    if model == "teacher":
        return teacher
    if model == "edit-none":
        return f"{student} without ConvFusion"
    return student if model == "edit" else f"{student}, grouped ConvFusion g={model.removeprefix('edit-g')}"


def plot(rows: list[Row], path: Path, layers: int, family: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    models = list(dict.fromkeys(r.model for r in rows))
    precisions = list(dict.fromkeys(r.precision for r in rows))
    lines = [("eager", "fp32", "--", "PyTorch eager"), ("executorch", "fp32", "-", "ExecuTorch XNNPACK"),
             ("onnx", "fp32", ":", "onnxruntime CPU")]
    lines += [(runtime, p, "-." if runtime == "executorch" else (0, (1, 3)), f"{where} {p}")
              for p in precisions if p != "fp32"
              for runtime, where in (("executorch", "ExecuTorch XNNPACK"), ("onnx", "onnxruntime CPU"))]
    for index, model in enumerate(models):
        for runtime, precision, style, where in lines:
            points = [(r.tokens, getattr(r, f"{runtime}_ms")) for r in rows
                      if r.model == model and r.precision == precision]
            points = [(t, ms) for t, ms in points if ms]
            if points:
                axis.plot(*zip(*points, strict=True), color=f"C{index}", linestyle=style, marker="o",
                          label=f"{label_of(model, family)} - {where}")
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("image tokens (256 px = 256 ... 2048 px = 16384)")
    axis.set_ylabel("ms per denoising step (median)")
    clock = "on-CPU time" if CLOCK is time.thread_time else "wall time"
    axis.set_title(f"{FAMILIES[family][2].split(' (')[0]}, {layers} layer(s), {', '.join(precisions)}, "
                   f"{torch.get_num_threads()} thread(s), {clock}",
                   fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), default="pixart",
                        help="pixart: PixArt-Sigma XL width, EDiT; sd3: SD3.5-Medium width, MM-EDiT (default pixart)")
    parser.add_argument("--layers", type=int, default=2, help="transformer blocks (PixArt-Sigma XL has 28, SD3.5-Medium 24)")
    parser.add_argument("--resolutions", default="256,512,1024,2048", help="pixels per side, comma-separated")
    parser.add_argument("--models", default="teacher,edit,edit-g8",
                        help="teacher, edit (faithful ConvFusion), edit-gG (grouped 3x3 ConvFusion, G groups), "
                             "edit-none (no ConvFusion); "
                             "NAME@base: that model exported with --base-passes, timed in the same rounds")
    parser.add_argument("--base-passes", default=None,
                        help="passes of the NAME@base models; default: --passes without the token-layout "
                             "convolution passes (conv_fusion_gemm, compressor_tokens)")
    parser.add_argument("--passes", default=None, help="comma-separated; default: the xnnpack defaults for each size and precision, as edit-mobile export picks them; \"\" for none (the naive export)")
    parser.add_argument("--budget-s", type=float, default=120.0, help="timing budget per resolution")
    parser.add_argument("--min-reps", type=int, default=1)
    parser.add_argument("--max-reps", type=int, default=7)
    parser.add_argument("--memory-budget-gib", type=float, default=6.0,
                        help="skip the teacher's ExecuTorch run when its attention scores exceed this")
    parser.add_argument("--skip-portable-plan", action="store_true", help="skip the delegate-free memory plan")
    parser.add_argument("--threads", type=int, default=None, help="torch and ExecuTorch threads (default: torch's)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="with --threads 1: time on-CPU time of the calling thread, robust to other load")
    parser.add_argument("--onnx", action="store_true",
                        help="also export each model to ONNX and time it in onnxruntime's CPU EP in the same rounds")
    parser.add_argument("--int8", choices=("int8-dynamic", "int8-static"), default=None,
                        help="also time each model quantized with this scheme (ExecuTorch XNNPACK, and onnxruntime "
                             "with --onnx), calibrated on the example input, in the same rounds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from executorch.extension.pybindings import portable_lib

    global CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
        portable_lib._unsafe_reset_threadpool(args.threads)
    if args.cpu_time:
        if torch.get_num_threads() != 1:
            parser.error("--cpu-time needs --threads 1: with more threads the work runs on other threads")
        CLOCK = time.thread_time

    passes = [p for p in args.passes.split(",") if p] if args.passes is not None else default_passes("xnnpack")
    if args.base_passes is None:
        args.base_passes = [p for p in passes if p not in TOKEN_CONV_PASSES]
    else:
        args.base_passes = [p for p in args.base_passes.split(",") if p]
    resolutions = [int(r) for r in args.resolutions.split(",")]
    models = args.models.split(",")
    _, _, described, real_layers = FAMILIES[args.family]
    print(f"{described} with {args.layers} layers (the real model has {real_layers}), random weights, "
          f"fp32{' and ' + args.int8 if args.int8 else ''}, batch 1")
    print(f"CPU: {cpu_name()}")
    print(f"threads: torch {torch.get_num_threads()}, ExecuTorch threadpool "
          f"{portable_lib._threadpool_get_thread_count()}; passes: {','.join(passes) or 'none'}; "
          f"NAME{BASE_SUFFIX} passes: {','.join(args.base_passes) or 'none'}")
    print(f"eager = the unrewritten diffusers model; clock: {'on-CPU time' if args.cpu_time else 'wall time'}")
    load_at_start = os.getloadavg()
    print(f"load average at start: {load_at_start}")

    stem = f"export_latency_{'' if args.family == 'pixart' else args.family + '_'}{torch.get_num_threads()}t{'_cpu' if args.cpu_time else ''}{'' if passes else '_nopasses'}{'_' + args.int8 if args.int8 else ''}"
    if len(resolutions) > 1:
        rows, peak = each_resolution_apart(resolutions, args.out / "parts", stem)
    else:
        peak = gemm_peak_gflops()  # probed again at the end
        rows = measure_resolution(resolutions[0], models, passes, args)
        peak = max(peak, gemm_peak_gflops())

    load_at_end = os.getloadavg()
    print(f"load average at end: {load_at_end}")
    print_table(rows, peak)
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / f"{stem}.png"
    plot(rows, png, args.layers, args.family)
    report = {"family": args.family, "layers": args.layers, "passes": passes, "threads": torch.get_num_threads(),
              "gemm_peak_gflops": peak,
              "clock": "thread_time" if args.cpu_time else "wall", "load": [load_at_start, load_at_end],
              "rows": [asdict(r) | {"executorch_over_eager": r.executorch_over_eager} for r in rows]}
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {png} and {args.out / (stem + '.json')}")


def each_resolution_apart(resolutions: list[int], parts: Path, stem: str) -> tuple[list[Row], float]:
    """Each resolution in a child process of this script (same options): a resolution's models,
    programs and sessions are freed before the next, and one that runs out of memory costs only
    its own rows. Returns every child's rows and the best GEMM rate they probed."""
    rows, peaks = [], []
    for resolution in tqdm(resolutions, desc="resolutions"):
        out = parts / str(resolution)
        argv = [*_without_options(sys.argv[1:], ("--resolutions", "--out")), "--resolutions", str(resolution),
                "--out", str(out)]
        done = subprocess.run([sys.executable, *sys.argv[:1], *argv], check=False)
        if done.returncode != 0:
            print(f"{resolution} px: its process ended with {done.returncode} (-9: killed, out of memory); no rows")
            continue
        report = json.loads((out / f"{stem}.json").read_text())
        fields = Row.__dataclass_fields__
        rows += [Row(**{key: value for key, value in row.items() if key in fields}) for row in report["rows"]]
        peaks.append(report["gemm_peak_gflops"])
    return rows, max(peaks, default=float("nan"))


def _without_options(argv: list[str], names: tuple[str, ...]) -> list[str]:
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in names:
            skip = True
        elif not item.startswith(tuple(f"{name}=" for name in names)):
            kept.append(item)
    return kept


if __name__ == "__main__":
    main()
