"""Memory per process of distilling a real-width student (not a test): what a GPU needs.

For PixArt-Sigma XL width (EDiT) or SD3.5-Medium width (MM-EDiT) with a few layers, at one
resolution, it runs two steps of the real distillation loop (`edit_mobile.distill.engine`) under
torchrun for each setting, replicated (DDP) and sharded (FSDP2, `--shard`), with and without
gradient checkpointing, one sample a process, and reads each process's:
  - parameter bytes it holds (teacher + its part of the student) and Adam state bytes,
  - peak resident memory of two steps over the memory held before them, less Adam's state:
    gradients, activations, gathered blocks, the teacher's attention scores.
Two layer counts are run, so that the per-layer part of each figure can be scaled to the real
model's depth (28 layers for PixArt-Sigma XL, 24 for SD3.5-Medium) by a straight line.
This is CPU memory here; on a GPU the same tensors are device memory (plus the CUDA context and
allocator slack). bf16 autocast would shrink activations, not the fp32 master weights.

    python bench/distill_memory.py [--family pixart|sd3] [--resolution 1024] [--layers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu_name  # bench/machine.py, beside this script

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "measured" / "distill_memory"
REAL_LAYERS = {"pixart": 28, "sd3": 24}
SETTINGS = (("ddp", False), ("ddp", True), ("fsdp2", False), ("fsdp2", True))  # (parallel, checkpointing)
MIB = 2**20


def worker(args) -> None:
    """One process of one setting: build, distil two steps, report to args.report (rank 0 merges)."""
    import torch
    import torch.distributed as dist
    from export_latency import FAMILIES

    from edit_mobile.distill.engine import Distiller, DistillOptions, Distributed
    from edit_mobile.distill.objective import objective_for
    from edit_mobile.memory import release_freed_memory
    from edit_mobile.models.conversion import convert
    from edit_mobile.models.families import family_of
    from edit_mobile.runtime.profiling import peak_rss_mb, reset_peak_rss, rss_mb

    torch.set_num_threads(1)
    env = Distributed(shard=args.shard)
    teacher = FAMILIES[args.family][0](args.resolution, args.layers)
    student = convert(teacher)
    data = sample_set(teacher, args.resolution, env.world)
    options = DistillOptions(schedule=[(args.resolution, 2)], batch=env.world, train="attention",
                             checkpoint_every=10**9, gradient_checkpointing=args.checkpointing, shard=args.shard)
    with tempfile.TemporaryDirectory() as work:
        distiller = Distiller(teacher, student, [data], objective_for(family_of(teacher).scheduler()), options,
                              Path(work), env)
        held = {"parameters_mib": local_bytes(list(teacher.parameters()) + list(student.parameters())) / MIB}
        release_freed_memory()  # building's freed heap, so the mark below starts from what is held
        before = rss_mb()
        reset_peak_rss()
        for _ in range(2):
            distiller.train_step()
        adam = [t for state in distiller.optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
        held["adam_mib"] = local_bytes(adam) / MIB
        training = peak_rss_mb(before) - before  # Adam's state, gradients, activations, gathered blocks
        record = {**held, "rss_before_mib": before, "training_peak_mib": training,
                  "step_peak_over_held_mib": training - held["adam_mib"]}
    records = [record]
    if env.world > 1:
        records = [None] * env.world
        dist.all_gather_object(records, record)
    if env.main:
        Path(args.report).write_text(json.dumps(records))
    env.close()


def sample_set(teacher, resolution, count):
    """`count` random training samples of the denoiser's shapes (memory does not depend on values)."""
    from edit_mobile.distill.data import DistillSet
    from edit_mobile.models.signature import TransformerSignature

    signature = TransformerSignature.of(teacher, resolution, resolution, batch=count)
    example = dict(zip((spec.name for spec in signature.inputs), signature.example_inputs(seed=0), strict=True))
    prompt = {name: value for name, value in example.items() if name not in ("hidden_states", "timestep")}
    return DistillSet(example["hidden_states"], prompt, {n: v[:1] for n, v in prompt.items()}, [""] * count)


def local_bytes(tensors) -> int:
    """Bytes this process holds: a DTensor's local shard only."""
    total = 0
    for tensor in tensors:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        total += local.numel() * local.element_size()
    return total


def run_setting(family: str, resolution: int, layers: int, processes: int, parallel: str, checkpointing: bool) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_port", "29541", str(Path(__file__)), "--worker", "--family", family,
                "--resolution", str(resolution), "--layers-one", str(layers), "--report", str(report)]
        argv += ["--shard"] * (parallel == "fsdp2") + ["--checkpointing"] * checkpointing
        completed = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                                "PYTHONPATH": str(HERE)})
        if completed.returncode != 0:
            raise SystemExit(f"{parallel} layers={layers}: {completed.stderr.strip().splitlines()[-1]}")
        per_rank = json.loads(report.read_text())
    worst = max(per_rank, key=lambda r: r["rss_before_mib"] + r["training_peak_mib"])
    return {"family": family, "resolution": resolution, "layers": layers, "processes": processes,
            "parallel": parallel, "checkpointing": checkpointing, **worst}


def scaled(rows: list[dict], key: str, real_layers: int) -> float:
    """The figure at the real depth, from a straight line through the two layer counts."""
    (a, b) = sorted(rows, key=lambda r: r["layers"])
    per_layer = (b[key] - a[key]) / (b["layers"] - a["layers"])
    return a[key] + per_layer * (real_layers - a["layers"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(REAL_LAYERS), default="pixart")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--layers", type=int, nargs=2, default=[1, 2], help="two layer counts to scale from")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--layers-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--shard", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.layers = args.layers_one
        worker(args)
        return
    from tqdm import tqdm

    rows = []
    jobs = [(layers, parallel, checkpointing) for parallel, checkpointing in SETTINGS for layers in args.layers]
    for layers, parallel, checkpointing in tqdm(jobs, desc="settings"):
        rows.append(run_setting(args.family, args.resolution, layers, args.processes, parallel, checkpointing))
        tqdm.write(json.dumps(rows[-1]))
    real = REAL_LAYERS[args.family]
    print(f"\ndistillation memory per process, {args.family} width at {args.resolution} px, {args.processes} processes, "
          f"one sample each ({cpu_name()}); scaled to {real} layers from {args.layers[0]} and {args.layers[1]}")
    print(f"{'parallel':<8} {'ckpt':>5} {'params MiB':>11} {'Adam MiB':>9} {'step MiB':>9} {'total MiB':>10}")
    table = []
    for parallel, checkpointing in SETTINGS:
        pair = [r for r in rows if r["parallel"] == parallel and r["checkpointing"] == checkpointing]
        figures = {key: scaled(pair, key, real) for key in ("parameters_mib", "adam_mib", "step_peak_over_held_mib")}
        figures["total_mib"] = sum(figures.values())
        table.append({"parallel": parallel, "checkpointing": checkpointing, **figures})
        print(f"{parallel:<8} {str(checkpointing):>5} {figures['parameters_mib']:>11.0f} {figures['adam_mib']:>9.0f} "
              f"{figures['step_peak_over_held_mib']:>9.0f} {figures['total_mib']:>10.0f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.family}_{args.resolution}.json"
    path.write_text(json.dumps({"cpu": cpu_name(), "real_layers": real, "rows": rows, "scaled": table}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
