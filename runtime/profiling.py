"""`edit-mobile profile`: load time, latency, memory and where the time goes, per artifact.

Latency is wall time around the runtime's own call (inputs checked once, before the loop).
Peak RSS is the process's high-water mark from /proc, reset just before loading where Linux
allows it (/proc/self/clear_refs), so it measures loading and running, not the import of torch.
Per-operator times come from the runtime's profiler in a second, instrumented session (ETDump
for ExecuTorch, onnxruntime's profiler for ONNX), so the latency figures carry no profiling cost.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field

import torch

from edit_mobile.errors import UserError
from edit_mobile.runtime.layers import short_module
from edit_mobile.runtime.manifest import Manifest, read_manifest
from edit_mobile.runtime.session import Session, load, torch_dtype

KINDS = ("attention", "mlp", "conv", "norm", "other", "overhead")
NORM_OPS = ("layer_norm", "group_norm", "rms_norm", "batch_norm", "layernorm", "groupnorm", "instancenorm",
            "normalization", "simplifiedlayernorm")
ATTENTION_OPS = ("softmax", "bmm", "scaled_dot_product", "attention", "batch matrix multiply")
PROFILED_RUNS = 6  # runs recorded by the instrumented session; the first is discarded


@dataclass
class OpTime:
    """One operator's mean time per run, attributed to a block and a kind."""

    name: str
    op: str
    module: str  # short module path, '' when unknown
    kind: str
    ms: float

    @property
    def block(self) -> str:
        return block_of(self.module)

    def as_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "module": self.module, "block": self.block, "kind": self.kind, "ms": self.ms}


@dataclass
class OperatorProfile:
    source: str  # "etdump" | "onnxruntime-profiler"
    run_ms: float  # the runtime's own measure of one run (mean)
    ops: list[OpTime] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        return sum(op.ms for op in self.ops)

    def grouped(self, key) -> dict[str, float]:
        totals: dict[str, float] = {}
        for op in self.ops:
            totals[key(op)] = totals.get(key(op), 0.0) + op.ms
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def as_dict(self, top: int = 15) -> dict:
        return {
            "source": self.source,
            "run_ms": self.run_ms,
            "ops_total_ms": self.total_ms,
            "coverage": self.total_ms / self.run_ms if self.run_ms > 0 else None,
            "by_kind": self.grouped(lambda op: op.kind),
            "by_block": self.grouped(lambda op: op.block),
            "by_op": self.grouped(lambda op: op.op),
            "top_ops": [op.as_dict() for op in sorted(self.ops, key=lambda op: -op.ms)[:top]],
            "ops": [op.as_dict() for op in self.ops],
            "notes": self.notes,
        }


def op_kind(op: str, module: str) -> str:
    """attention / mlp / conv / norm / other, from the op first, then the module it runs for."""
    name = op.lower()
    if "conv" in name:
        return "conv"
    if any(key in name for key in NORM_OPS):
        return "norm"
    if any(key in name for key in ATTENTION_OPS):
        return "attention"
    parts = module.split(".")
    if any(part.startswith("attn") for part in parts):
        return "attention"
    if any(part in ("ff", "ff_context", "mlp", "ffn") for part in parts):
        return "mlp"
    if parts and parts[-1].startswith("norm"):
        return "norm"
    return "other"


def block_of(module: str) -> str:
    """'transformer_blocks.3.attn1.to_q' -> 'transformer_blocks.3'; 'pos_embed.proj' -> 'pos_embed'."""
    if not module:
        return "(unattributed)"
    parts = module.split(".")
    if len(parts) > 1 and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0]


# --- memory --------------------------------------------------------------------------------

def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


def peak_rss_mb(*samples: float | None) -> float | None:
    """The kernel's peak-RSS mark, never below a sample taken since its reset: the kernel syncs
    per-thread RSS counters lazily, so VmHWM can trail a fresh VmRSS read by a few pages."""
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max([kib / 1024, *(sample for sample in (*samples, rss_mb()) if sample is not None)])


# --- inputs and timing -----------------------------------------------------------------------

def profiling_inputs(manifest: Manifest, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """The first test vector if the artifact has them, else seeded inputs of the right shapes."""
    if manifest.has("test_vectors"):
        from edit_mobile.runtime.validate import load_test_vectors

        vectors, _ = load_test_vectors(manifest)
        if vectors:
            return vectors[0]
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for spec in manifest.inputs:
        dtype = torch_dtype(spec.dtype)
        if spec.name == "timestep":
            tensors.append((torch.rand(spec.shape, generator=generator) * 999).to(dtype))
        elif spec.name.endswith("mask"):
            tensors.append(torch.ones(spec.shape, dtype=dtype))
        else:
            tensors.append(torch.randn(spec.shape, generator=generator).to(dtype))
    return tuple(tensors)


def latency_stats(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    p90_index = min(len(ms) - 1, max(0, round(0.9 * (len(ms) - 1))))
    return {
        "min": ms[0], "median": statistics.median(ms), "p90": ms[p90_index], "mean": statistics.fmean(ms),
        "max": ms[-1], "stdev": statistics.stdev(ms) if len(ms) > 1 else 0.0, "runs": len(ms),
    }


def time_runs(session: Session, inputs: tuple[torch.Tensor, ...], iters: int, warmup: int, on_run=lambda: None) -> list[float]:
    checked = session.check_inputs(inputs)
    for _ in range(warmup):
        session.execute(checked)
        on_run()
    times = []
    for _ in range(iters):
        started = time.perf_counter()
        session.execute(checked)
        times.append(time.perf_counter() - started)
        on_run()
    return times


# --- the command ---------------------------------------------------------------------------

def profile(art_dir: str | os.PathLike, iters: int = 20, warmup: int = 3, threads: int | None = None,
            operators: bool = True, progress=None) -> dict:
    if iters < 1 or warmup < 0:
        raise UserError(f"--iters {iters} must be at least 1 and --warmup {warmup} at least 0")
    tick = progress or (lambda: None)
    verify_started = time.perf_counter()
    manifest = read_manifest(art_dir)
    verify_ms = (time.perf_counter() - verify_started) * 1000
    inputs = profiling_inputs(manifest)

    resettable = reset_peak_rss()
    rss_before = rss_mb()
    session = load(manifest, threads=threads)
    rss_loaded = rss_mb()
    times = time_runs(session, inputs, iters, warmup, tick)
    result = {
        "artifact": str(art_dir),
        "description": manifest.describe(),
        "runtime": session.runtime,
        "backend": manifest.backend,
        "precision": manifest.precision,
        "threads": threads or session.default_threads(),
        "iters": iters,
        "warmup": warmup,
        "verify_ms": verify_ms,
        "load_ms": session.load_seconds * 1000,
        "latency_ms": latency_stats(times),
        "memory": {
            "rss_before_load_mb": rss_before,
            "rss_after_load_mb": rss_loaded,
            "peak_rss_mb": peak_rss_mb(rss_before, rss_loaded),
            "peak_is_since_load": resettable,
            **session.planned_memory(),
        },
        "program_bytes": session.file_bytes(),
    }
    session_class = type(session)
    session.close()
    del session
    if operators:
        result["operators"] = session_class.operator_profile(manifest, inputs, threads, PROFILED_RUNS, tick).as_dict()
    return result


def module_label(path: str) -> str:
    return short_module(path) if path else ""
