"""Per-operator time of an ExecuTorch program, from its ETDump, read with the devtools Inspector.

The pip build of ExecuTorch 1.5.1 has the event tracer: `Runtime.load_program(...,
enable_etdump=True)` records, for every run, each non-delegated instruction (OPERATOR_CALL)
and each delegate call (DELEGATE_CALL), plus the ops XNNPACK runs inside a delegate, named by
XNNPACK ("Fully Connected (NC, F32) GEMM #3") and carrying no debug handle.

Attribution to model modules needs the artifact's ETRecord (debug handle -> graph node ->
nn.Module path). Inside a delegate, each operator XNNPACK reports is matched to the serialized
XNNPACK node it ran, which carries the debug handle of its edge node (`xnnpack_delegate`).
What XNNPACK does not report (the delegate's setup and copies) is kept as the delegate call's
"overhead" so the rows add up.

An ETDump recorded elsewhere (the Android app, ExecuTorch's executor_runner --etdump_path) is
read the same way (`etdump_operator_profile`), against the artifact's own ETRecord.
"""

from __future__ import annotations

import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

from edit_mobile.errors import UserError
from edit_mobile.runtime.layers import short_module
from edit_mobile.runtime.manifest import Manifest
from edit_mobile.runtime.numerics_executorch import edge_program
from edit_mobile.runtime.profiling import OperatorProfile, OpTime, op_kind
from edit_mobile.runtime.xnnpack_delegate import (
    DelegateNode,
    attribute_delegate_ops,
    xnnpack_delegate_nodes,
)
from edit_mobile.safe_read import one_line

ETDUMP_IDENTIFIER = b"ED00"  # file_identifier of devtools/etdump/etdump_schema_flatcc.fbs

def executorch_operator_profile(manifest: Manifest, inputs, threads: int | None, runs: int, tick=lambda: None) -> OperatorProfile:
    from edit_mobile.runtime.executorch_session import ExecuTorchSession

    session = ExecuTorchSession(manifest, threads=threads, etdump=True)
    checked = session.check_inputs(inputs)
    for _ in range(runs):
        session.execute(checked)
        tick()
    with tempfile.TemporaryDirectory(prefix="edit-mobile-etdump-") as scratch:
        etdump_path = Path(scratch) / "profile.etdp"
        session.write_etdump(etdump_path)
        return etdump_operator_profile(manifest, etdump_path, "an ETDump-enabled session here")


def etdump_operator_profile(manifest: Manifest, etdump_path: Path, made_by: str = "the ETDump") -> OperatorProfile:
    """Per-operator times of an ETDump of the artifact's program, recorded here or on any device
    (the demo apps, ExecuTorch's executor_runner --etdump_path), attributed with its ETRecord."""
    from executorch.devtools import Inspector

    from edit_mobile.runtime.numerics_executorch import ETRECORD_ROLE, load_etrecord

    _check_etdump_header(etdump_path)
    etrecord = load_etrecord(manifest) if manifest.has(ETRECORD_ROLE) else None
    try:
        with warnings.catch_warnings():  # devtools warns about every graph kwarg it does not draw
            warnings.simplefilter("ignore")
            inspector = Inspector(etdump_path=str(etdump_path), etrecord=etrecord)
    except Exception as err:  # a flatbuffer that does not parse, or events of another program
        raise UserError(f"{etdump_path} is not an ETDump of {manifest.root.name}'s program ({one_line(err)}); pass "
                        "the .etdp its runtime wrote for this artifact") from err
    profile = attribute_events(inspector, etrecord, manifest.file("program").path)
    if etrecord is None:
        profile.notes.append("no ETRecord in the artifact: times are per op but not per block (export with an etrecord)")
    runs = _recorded_runs(inspector)
    if runs == 0:
        raise UserError(f"{etdump_path} records no run of the program; run it at least twice with the event tracer on")
    shown = f"mean over {runs - 1} runs after the first" if runs > 1 else "one run"
    profile.notes.append(f"{shown} of the {runs} recorded by {made_by}")
    return profile


def attribute_events(inspector, etrecord, program_path: Path) -> OperatorProfile:
    """The Inspector's events as per-operator times on modules (the ETRecord's graph nodes,
    reached inside XNNPACK delegates through the program's serialized delegate nodes)."""
    if etrecord is None:
        return _attribute(inspector, {}, {})
    return _attribute(inspector, _nodes_by_handle(edge_program(etrecord)), xnnpack_delegate_nodes(program_path))


def _check_etdump_header(path: Path) -> None:
    """A size-prefixed flatbuffer with ETDump's file identifier, checked here: devtools hands
    anything else to flatc, which prints its complaints to the terminal before failing."""
    with open(path, "rb") as handle:
        head = handle.read(12)
    size = path.stat().st_size
    if len(head) < 12 or head[8:12] != ETDUMP_IDENTIFIER or int.from_bytes(head[:4], "little") > size - 4:
        raise UserError(f"{path} is not an ETDump (no size-prefixed '{ETDUMP_IDENTIFIER.decode()}' flatbuffer); pass "
                        "the .etdp file the ExecuTorch runtime wrote")


def _recorded_runs(inspector) -> int:
    return max((len(event.perf_data.raw) for block in inspector.event_blocks for event in block.events
                if event.name == "Method::execute" and event.perf_data is not None), default=0)


def _nodes_by_handle(program) -> dict[int, list]:
    by_handle: dict[int, list] = defaultdict(list)
    for node in program.graph_module.graph.nodes:
        handle = node.meta.get("debug_handle")
        if node.op == "call_function" and isinstance(handle, int):
            by_handle[handle].append(node)
    return by_handle


def _module(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return short_module(list(stack.values())[-1][0]) if stack else ""


def _mean(event) -> float:
    """Mean over the runs after the first (cold caches, first-touch allocations). Means, not
    medians: per-op means add up to the mean run, so the rows sum to the total."""
    if event.perf_data is None:
        return 0.0
    raw = event.perf_data.raw[1:] or event.perf_data.raw
    return float(sum(raw) / len(raw))


def _attribute(inspector, by_handle: dict[int, list], delegates: dict[int, list[DelegateNode]]) -> OperatorProfile:
    run_ms, ops = 0.0, []
    pending_inner = []  # ops XNNPACK reported inside the delegate call that follows them
    last_kernel = ""
    for block in inspector.event_blocks:
        for event in block.events:
            if event.name == "Method::execute":
                run_ms = _mean(event)
            elif event.name.startswith("native_call_"):
                last_kernel = event.name.removeprefix("native_call_")
            elif event.is_delegated_op:
                pending_inner.append(event)
            elif event.name == "OPERATOR_CALL":
                nodes = _event_nodes(event, by_handle)
                # The kernel's own name is exact; debug handles may name several source ops.
                op = last_kernel.split(".")[0] or (event.op_types[-1].split(".")[1] if event.op_types else "operator")
                last_kernel = ""
                module = _module(nodes[-1]) if nodes else ""
                ops.append(OpTime(f"#{event._instruction_id} {op}", op, module, op_kind(op, module), _mean(event)))
            elif event.name == "DELEGATE_CALL":
                serialized = delegates.get(event._instruction_id, [])
                ops += _delegate_ops(event, pending_inner, _event_nodes(event, by_handle), serialized, by_handle)
                pending_inner = []
    return OperatorProfile("etdump", run_ms, ops)


def _event_nodes(event, by_handle) -> list:
    handles = event.debug_handles
    handles = [handles] if isinstance(handles, int) else list(handles or [])
    nodes = [node for handle in sorted(set(handles)) for node in by_handle.get(handle, [])]
    return sorted(nodes, key=lambda node: node.meta.get("debug_handle", 0))


def _delegate_ops(call, inner: list, nodes: list, serialized: list[DelegateNode], by_handle) -> list[OpTime]:
    """The delegate's own ops attributed to modules through their serialized nodes' debug
    handles (the call's majority module where none resolves), plus the call's unreported overhead."""
    backend = call.delegate_backend_name or "delegate"
    majority = _majority_module(nodes)
    handles = attribute_delegate_ops([event.name for event in inner], serialized)
    ops = []
    for event, handle in zip(inner, handles, strict=True):
        found = by_handle.get(handle, []) if handle is not None else []
        module = _module(found[-1]) if found else majority
        op = event.name.split(" #")[0]
        ops.append(OpTime(f"{backend}: {event.name}", op, module, op_kind(op, module), _mean(event)))
    overhead = max(0.0, _mean(call) - sum(op.ms for op in ops))
    ops.append(OpTime(f"#{call._instruction_id} {backend} call overhead", f"{backend} call", majority, "overhead", overhead))
    return ops


def _majority_module(nodes: list) -> str:
    counts: dict[str, int] = defaultdict(int)
    for node in nodes:
        counts[_module(node)] += 1
    return max(counts, key=counts.get) if counts else ""
