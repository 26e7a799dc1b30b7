"""Per-operator time of an ONNX model, from onnxruntime's own profiler.

onnxruntime writes a Chrome trace: one `<node>_kernel_time` event per node per run, and one
`model_run` per run. It profiles the graph it actually runs, after its optimisations, so that
graph is saved alongside (optimized_model_filepath) and node names are looked up in it.

Modules come from weight names: the exporter names initializers after the PyTorch parameters
('model.transformer_blocks.0.ff.net.2.bias'). A node consuming one belongs to that module; a
node feeding only one module's nodes joins it (the MatMul before a bias Add); any other node
takes the module of its first attributed input.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from edit_mobile.runtime.layers import short_module
from edit_mobile.runtime.manifest import Manifest
from edit_mobile.runtime.profiling import OperatorProfile, OpTime, op_kind

KERNEL_SUFFIX = "_kernel_time"


def onnx_operator_profile(manifest: Manifest, inputs, threads: int | None, runs: int, tick=lambda: None) -> OperatorProfile:
    import onnx

    from edit_mobile.runtime.onnx_session import OnnxSession

    with tempfile.TemporaryDirectory(prefix="edit-mobile-ort-") as scratch:
        optimized = Path(scratch) / "optimized.onnx"
        session = OnnxSession(manifest, threads=threads, profile_prefix=str(Path(scratch) / "ort"), optimized_path=str(optimized))
        checked = session.check_inputs(inputs)
        for _ in range(runs):
            session.execute(checked)
            tick()
        trace = json.loads(session.end_profiling().read_text())
        graph = onnx.load(str(optimized), load_external_data=False).graph if optimized.is_file() else None
    modules = node_modules(graph) if graph is not None else {}
    kernel_ms: dict[str, list[float]] = defaultdict(list)
    op_types: dict[str, str] = {}
    run_ms: list[float] = []
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith(KERNEL_SUFFIX):
            node = event["name"][: -len(KERNEL_SUFFIX)]
            kernel_ms[node].append(event["dur"] / 1000)
            op_types[node] = event.get("args", {}).get("op_name", "?")
        elif event.get("cat") == "Session" and event.get("name") == "model_run":
            run_ms.append(event["dur"] / 1000)
    ops = []
    for node, times in kernel_ms.items():
        module = modules.get(node, "")
        ops.append(OpTime(node, op_types[node], module, op_kind(op_types[node], module), _mean_after_first(times)))
    profile = OperatorProfile("onnxruntime-profiler", _mean_after_first(run_ms) if run_ms else 0.0, ops)
    profile.notes.append(f"mean over {runs - 1} runs after one discarded, with onnxruntime's profiler; "
                         "nodes are those of the optimised graph")
    return profile


def _mean_after_first(values: list[float]) -> float:
    """Means, not medians, so per-node times add up to the run time; the first run is cold."""
    kept = values[1:] or values
    return statistics.fmean(kept)


def node_modules(graph) -> dict[str, str]:
    """Node name -> short module path, from weight names (see the module docstring)."""
    initializers = {init.name for init in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    module: dict[str, str] = {}
    for node in graph.node:  # weights a node consumes name its module
        owned = [i.rsplit(".", 1)[0] for i in node.input if i in initializers and "." in i and not i.startswith("val_")]
        if owned:
            module[node.name] = short_module(owned[0])
    for node in reversed(graph.node):  # a node feeding one module's nodes only joins it
        if node.name in module:
            continue
        users = {module.get(user.name) for output in node.output for user in consumers[output]}
        if len(users) == 1 and None not in users:
            module[node.name] = users.pop()
    for node in graph.node:  # the rest follow their first attributed input
        if node.name not in module:
            source = next((producer[i] for i in node.input if i in producer and producer[i].name in module), None)
            if source is not None:
                module[node.name] = module[source.name]
    return module
