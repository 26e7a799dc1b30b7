"""int8 vs fp32 EDiT in ExecuTorch XNNPACK: latency per step, program size, held-out PSNR.

Builds the PixArt-Sigma XL width (1152, 16 heads, 120 prompt tokens, caption width 4096)
with few layers (default 2, random weights), converts it to EDiT (default options), applies
the default xnnpack rewrite passes, records a calibration set with `edit_mobile.calibration`
(random T5 of width 4096), and for each resolution lowers the fp32 program and one program
per scheme with the project's XNNPACK lowering. Every program runs in the real ExecuTorch
runtime: held-out output PSNR against the float PyTorch model, then interleaved timed runs
(all variants take turns, so they see the same machine load). Prints a table, writes JSON
and a PNG to bench/results/.

    python bench/quantization.py [--layers 2] [--resolutions 512,1024] [--trajectory forward]

--trajectory forward (default) calibrates and evaluates on forward-process latents at the
sampler's timesteps: with random weights the model's own DPM-Solver trajectory diverges
(latent std ~1 -> ~100), which says nothing about a trained model's activation ranges;
`sampler` measures that case too. Targets (docs/targets.md): int8 >= 1.8x faster than fp32 with
held-out PSNR >= 30 dB.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from diffusers import PixArtTransformer2DModel

from edit_mobile.calibration import CalibrationOptions, capture_calibration, load_calibration
from edit_mobile.export.passes import apply_passes, default_passes
from edit_mobile.export.quantization.metrics import psnr_db
from edit_mobile.export.quantization.xnnpack import quantize_for_xnnpack
from edit_mobile.models import PRESETS, DenoiserWrapper, to_edit

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_SPEEDUP, TARGET_PSNR_DB = 1.8, 30.0


def edit_xl(resolution: int, layers: int) -> torch.nn.Module:
    config = {**PRESETS["pixart-sigma-xl-1024"].config, "num_layers": layers, "sample_size": resolution // 8}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        student = to_edit(PixArtTransformer2DModel.from_config(config)).eval()
        torch.manual_seed(1)
        with torch.no_grad():
            for name, parameter in student.named_parameters():
                if ".conv_fusion.expand." in name:  # conversion starts it at 0; give it signal
                    parameter.normal_(0.0, 0.02)
    return student


def lower(exported):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    from edit_mobile.export.backends import executorch_program

    edge, coverage = executorch_program.lower(exported, [XnnpackPartitioner()])
    return executorch_program.to_executorch(edge).buffer, f"{coverage.ops_delegated}/{coverage.ops_total}"


def timed_ms(run) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000


def measure_resolution(resolution: int, args, workdir: Path) -> list[dict]:
    from executorch.runtime import Runtime

    model = edit_xl(resolution, args.layers)
    calib_dir = workdir / f"calib_{resolution}"
    options = CalibrationOptions(steps=args.steps, samples=args.samples, records=args.records,
                                 heldout_records=args.heldout, trajectory=args.trajectory)
    capture_calibration(model, calib_dir, random_text_encoder=True, options=options,
                        model_source=f"pixart-sigma-xl-{args.layers}-layers-edit")
    calibration = load_calibration(calib_dir)
    reference = DenoiserWrapper(model).eval()
    rewritten = DenoiserWrapper(apply_passes(copy.deepcopy(model), default_passes("xnnpack"))).eval()
    example = calibration.calibration_inputs[0]

    variants = {}
    with torch.no_grad():
        buffer, delegated = lower(torch.export.export(rewritten, example, strict=False))
        variants["fp32"] = {"buffer": buffer, "record": None, "delegated": delegated}
        for scheme in args.schemes:
            exported = torch.export.export(rewritten, example, strict=False)
            program, record = quantize_for_xnnpack(exported, scheme, calibration.calibration_inputs,
                                                   calibration.heldout_inputs)
            buffer, delegated = lower(program)
            variants[scheme] = {"buffer": buffer, "record": record, "delegated": delegated}

    runtime = Runtime.get()
    methods = {name: runtime.load_program(v["buffer"]).load_method("forward") for name, v in variants.items()}
    heldout = calibration.heldout_inputs
    with torch.no_grad():
        references = [reference(*inputs) for inputs in heldout]
    for name, method in methods.items():
        values = [psnr_db(ref, method.execute(list(inputs))[0]) for ref, inputs in zip(references, heldout, strict=True)]
        variants[name]["psnr"] = (sum(min(v, 200.0) for v in values) / len(values), min(values))

    runs = {name: [] for name in methods}
    for method in methods.values():  # warm-up: XNNPACK packs weights and sizes workspaces once
        method.execute(list(example))
    for _ in range(args.reps):
        for name, method in methods.items():
            runs[name].append(timed_ms(lambda method=method: method.execute(list(example))))

    tokens = (resolution // 16) ** 2
    fp32_ms = statistics.median(runs["fp32"])
    rows = []
    for name, variant in variants.items():
        median = statistics.median(runs[name])
        rows.append({
            "resolution": resolution, "tokens": tokens, "program": name, "median_ms": median,
            "min_ms": min(runs[name]), "runs_ms": runs[name], "speedup_vs_fp32": fp32_ms / median,
            "bytes": len(variant["buffer"]), "size_vs_fp32": len(variant["buffer"]) / len(variants["fp32"]["buffer"]),
            "heldout_psnr_db": variant["psnr"][0], "heldout_psnr_min_db": variant["psnr"][1],
            "delegated_ops": variant["delegated"], "record": variant["record"],
        })
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\nEDiT, PixArt-Sigma XL width, ExecuTorch XNNPACK, per denoising step "
          f"(targets: int8 >= {TARGET_SPEEDUP}x faster, held-out PSNR >= {TARGET_PSNR_DB:g} dB)")
    print(f"{'px':>5} {'tokens':>6} {'program':>13} {'median ms':>10} {'min ms':>8} {'speed-up':>9} "
          f"{'size MB':>8} {'size x':>7} {'PSNR dB':>8} {'worst dB':>9} {'delegated':>10}")
    for r in rows:
        print(f"{r['resolution']:>5} {r['tokens']:>6} {r['program']:>13} {r['median_ms']:>10.0f} {r['min_ms']:>8.0f} "
              f"{r['speedup_vs_fp32']:>8.2f}x {r['bytes'] / 1e6:>8.1f} {r['size_vs_fp32']:>7.2f} "
              f"{min(r['heldout_psnr_db'], 999):>8.1f} {min(r['heldout_psnr_min_db'], 999):>9.1f} {r['delegated_ops']:>10}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    resolutions = sorted({r["resolution"] for r in rows})
    programs = list(dict.fromkeys(r["program"] for r in rows))
    figure, axes = plt.subplots(1, len(resolutions), figsize=(4.5 * len(resolutions), 3.6), squeeze=False)
    for axis, resolution in zip(axes[0], resolutions, strict=True):
        subset = {r["program"]: r for r in rows if r["resolution"] == resolution}
        bars = axis.bar(programs, [subset[p]["median_ms"] for p in programs], color=["#888", "#4878a8", "#55a868", "#c44e52"][: len(programs)])
        for bar, program in zip(bars, programs, strict=True):
            r = subset[program]
            label = f"{r['speedup_vs_fp32']:.2f}x" + (f"\n{r['heldout_psnr_db']:.0f} dB" if program != "fp32" else "")
            axis.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
        axis.set_title(f"{resolution} px ({subset['fp32']['tokens']} tokens)")
        axis.set_ylabel("median ms per step")
    figure.suptitle("EDiT XL-width, ExecuTorch XNNPACK: fp32 vs int8")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--resolutions", default="512,1024")
    parser.add_argument("--schemes", default="int8-static,int8-dynamic")
    parser.add_argument("--trajectory", default="forward", choices=("forward", "sampler"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--records", type=int, default=16)
    parser.add_argument("--heldout", type=int, default=8)
    parser.add_argument("--reps", type=int, default=7, help="timed runs per program (interleaved)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    args = parser.parse_args()
    args.schemes = [s for s in args.schemes.split(",") if s]
    print(f"load average before: {os.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for resolution in (int(r) for r in args.resolutions.split(",")):
            rows += measure_resolution(resolution, args, Path(workdir))
            print_table(rows)
    print(f"load average after: {os.getloadavg()}")
    RESULTS.mkdir(exist_ok=True)
    stem = f"quantization{('_' + args.tag) if args.tag else ''}"
    (RESULTS / f"{stem}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str))
    plot(rows, RESULTS / f"{stem}.png")
    print(f"wrote {RESULTS / stem}.json and .png")


if __name__ == "__main__":
    main()
