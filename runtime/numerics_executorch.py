"""Where an ExecuTorch program's numbers leave the reference: ETDump intermediate outputs.

Needs the artifact's ETRecord (manifest file role "etrecord", written at export with
`to_edge_transform_and_lower(..., generate_etrecord=True)` and `get_etrecord().save()`): it
maps each runtime instruction to debug handles, hence to graph nodes and model modules.

1. The program runs once with ETDump and a debug buffer: every non-delegated instruction and
   every delegate call logs its output tensors (a delegate is opaque inside: its outputs are
   the finest view the runtime gives).
2. The ETRecord's edge graph runs in PyTorch on the same inputs, with the reference model's
   weights put in place of the exported ones wherever names match, capturing every node.
3. Each logged runtime tensor is matched to the node producing it (debug handle, then shape),
   compared, and the rows are kept in execution order. The weights of the layers feeding a
   failing value inside its instruction are its suspects.
"""

from __future__ import annotations

import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import torch

from edit_mobile.errors import UserError
from edit_mobile.runtime.layers import LayerReport, LayerRow, short_module
from edit_mobile.runtime.manifest import Manifest
from edit_mobile.runtime.metrics import closeness
from edit_mobile.safe_read import no_pickled_code, one_line

ETRECORD_ROLE = "etrecord"
DEBUG_ENTRY_OVERHEAD = 256  # bytes per logged tensor for alignment and framing, generously
DEBUG_BUFFER_MARGIN = 1 << 20
MAX_SCANNED_MODULES = 48  # weight scans of a failing value's suspects (each reads the program once)


def load_etrecord(manifest: Manifest):
    from executorch.devtools.etrecord import parse_etrecord

    if not manifest.has(ETRECORD_ROLE):
        raise UserError(
            f"{manifest.root.name} has no ETRecord (manifest file role '{ETRECORD_ROLE}'); per-layer debugging "
            "needs one: export with generate_etrecord=True and save it as etrecord.bin"
        )
    entry = manifest.file(ETRECORD_ROLE)
    try:
        with no_pickled_code():  # ExecuTorch loads restricted; torch.export's serde would retry with pickle
            return parse_etrecord(str(entry.path))
    except Exception as err:  # a zip of pickled-free graph files; any parse failure means a bad file
        raise UserError(f"cannot read the ETRecord {entry.relative}: {' '.join(str(err).split())}") from err


def edge_program(etrecord):
    program = etrecord.edge_dialect_program
    if isinstance(program, dict):
        program = program.get("forward") or next(iter(program.values()))
    if program is None:
        raise UserError("the ETRecord holds no edge program; re-export with generate_etrecord=True")
    return program


def debug_buffer_bytes(graph_module) -> int:
    """An upper bound on what the runtime logs: every node's outputs, twice over.

    The runtime aborts the process when the debug buffer overflows, so this errs large."""
    total = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        values = node.meta.get("val")
        for value in values if isinstance(values, (tuple, list)) else [values]:
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size() + DEBUG_ENTRY_OVERHEAD
    return 2 * total + DEBUG_BUFFER_MARGIN


class _Capture(torch.fx.Interpreter):
    """Runs a graph, keeping every call_function node's result by node name."""

    def __init__(self, graph_module):
        super().__init__(graph_module)
        self.values: dict[str, object] = {}

    def run_node(self, node):
        result = super().run_node(node)
        if node.op == "call_function":
            self.values[node.name] = result.detach().clone() if isinstance(result, torch.Tensor) else result
        return result


def _reference_weights(program, reference_state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int, list[dict]]:
    """The program's parameters and buffers, with the reference's values wherever a name matches.

    Exported names may carry a wrapper prefix (e.g. 'denoiser.' for an fp16 cast); a rewrite
    pass may reshape a weight (Linear -> 1x1 conv) without changing its values."""
    from edit_mobile.runtime.weights import lookup_reference

    values, mapped, mismatches = {}, 0, []
    for name, exported in program.state_dict.items():
        reference = lookup_reference(name, reference_state)
        if reference is None or reference.numel() != exported.numel():
            values[name] = exported
            continue
        reference = reference.reshape(exported.shape).to(exported.dtype)
        values[name] = reference
        mapped += 1
        if exported.is_floating_point():
            gap = closeness(reference, exported)
            if gap.psnr_db < 100.0:
                mismatches.append({"weight": name, "psnr_db": round(gap.psnr_db, 2), "max_abs": gap.max_abs})
    return values, mapped, mismatches


def _placeholder_values(program, weights: dict[str, torch.Tensor], inputs) -> list:
    from torch.export.graph_signature import InputKind

    user_inputs = iter(inputs)
    values = []
    for spec in program.graph_signature.input_specs:
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            # Non-persistent buffers and lifted constants live in `constants`, not the state dict.
            values.append(weights.get(spec.target, program.state_dict.get(spec.target, program.constants.get(spec.target))))
        elif spec.kind == InputKind.USER_INPUT:
            values.append(next(user_inputs))
        else:
            raise UserError(f"the ETRecord's graph takes a {spec.kind.name} input, which per-layer replay does not support")
    return values


def _module_of(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _parameter_modules(node, group: set, parameter_of: dict[str, str]) -> list[str]:
    """Modules whose weights reach `node` without leaving its instruction (nearest first)."""
    seen, frontier, modules = {node}, [node], []
    while frontier:
        current = frontier.pop(0)
        for arg in current.all_input_nodes:
            if arg in seen:
                continue
            seen.add(arg)
            if arg.op == "placeholder" and arg.name in parameter_of:
                module = parameter_of[arg.name].rsplit(".", 1)[0]
                if module not in modules:
                    modules.append(module)
            elif arg in group:
                frontier.append(arg)
    return modules


def executorch_layer_report(manifest: Manifest, inputs, reference_state: dict[str, torch.Tensor], threshold_db: float) -> LayerReport:
    """Compare every intermediate value the ExecuTorch runtime logs with the reference's."""
    from executorch.devtools import Inspector

    from edit_mobile.runtime.executorch_session import ExecuTorchSession

    etrecord = load_etrecord(manifest)
    program = edge_program(etrecord)
    graph = program.graph_module.graph
    session = ExecuTorchSession(manifest, etdump=True, debug_buffer_size=debug_buffer_bytes(program.graph_module))
    checked = session.check_inputs(inputs)
    session.run(checked)
    with tempfile.TemporaryDirectory(prefix="edit-mobile-etdump-") as scratch:
        etdump_path, debug_path = Path(scratch) / "run.etdp", Path(scratch) / "debug.bin"
        session.write_etdump(etdump_path, debug_path)
        try:
            with warnings.catch_warnings():  # devtools warns about every graph kwarg it does not draw
                warnings.simplefilter("ignore")
                inspector = Inspector(etdump_path=str(etdump_path), etrecord=etrecord, debug_buffer_path=str(debug_path))
        except (TypeError, ValueError, KeyError, RuntimeError) as err:
            # ExecuTorch 1.5.1's ETDump reader rejects some programs' own debug events (fp16
            # XNNPACK: events without a name). The verdict stands; only the diagnosis is missing.
            note = (f"ExecuTorch's ETDump reader cannot read this program's debug events "
                    f"({type(err).__name__}: {one_line(err)[:160]}): no per-layer values for it")
            return LayerReport("executorch", threshold_db, [], [note], [])

    weights, mapped, mismatches = _reference_weights(program, reference_state)
    capture = _Capture(program.graph_module)
    with torch.no_grad():
        capture.run(*_placeholder_values(program, weights, checked))

    order = {node: index for index, node in enumerate(graph.nodes)}
    by_handle: dict[int, list] = defaultdict(list)
    for node in graph.nodes:
        handle = node.meta.get("debug_handle")
        if node.op == "call_function" and isinstance(handle, int):
            by_handle[handle].append(node)
    parameter_of = dict(program.graph_signature.inputs_to_parameters)  # placeholder -> weight name

    rows: list[LayerRow] = []
    for event in _logged_events(inspector):
        handles = [event.debug_handles] if isinstance(event.debug_handles, int) else list(event.debug_handles)
        group = {node for handle in handles for node in by_handle.get(handle, [])}
        candidates = sorted((n for n in group if isinstance(capture.values.get(n.name), torch.Tensor)), key=order.get)
        used = set()
        # A delegate call logs its arguments: inputs first, then its `num_outputs` outputs.
        logged = event.debug_data[-event.num_outputs:] if event.name == "DELEGATE_CALL" else event.debug_data
        for tensor in logged:
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                continue
            node = _nearest(tensor, [n for n in candidates if n not in used], capture.values)
            if node is None:
                continue
            used.add(node)
            where = "delegate " + (event.delegate_backend_name or "") if event.name == "DELEGATE_CALL" else "operator"
            rows.append(LayerRow(
                order=len(rows),
                where=f"{where} #{event._instruction_id}",
                module=short_module(_module_of(node)),
                op=str(getattr(node.target, "__name__", node.target)),
                shape=tuple(tensor.shape),
                closeness=closeness(capture.values[node.name], tensor),
                suspects=[short_module(m) for m in _parameter_modules(node, group, parameter_of)],
            ))
    notes = [f"{mapped} of {len(program.state_dict)} exported weights replaced by the reference's (matched by name)"]
    if not mapped:
        notes.append("no exported weight name matches the reference: the runtime is compared with the exported graph itself")
    notes.append("a delegate is opaque: its outputs are the finest values the runtime logs inside it")
    failing = next((row for row in rows if row.closeness.psnr_db < threshold_db), None)
    if failing is not None and not manifest.quantization and manifest.precision == "fp32":
        stored = session.weights.path if session.weights else session.entry.path  # where the bytes live
        changed = changed_program_weights(stored, failing.suspects[:MAX_SCANNED_MODULES], reference_state)
        if changed:
            # Inside an opaque delegate, the weights the program no longer holds are the culprits.
            failing.suspects = changed + [s for s in failing.suspects if s not in changed]
            notes.append(f"weights feeding the first failing value that the program does not hold verbatim: {', '.join(changed)}")
    return LayerReport("executorch", threshold_db, rows, notes, mismatches)


def changed_program_weights(program_path: Path, modules: list[str], reference_state: dict[str, torch.Tensor]) -> list[str]:
    """Of these modules, those with a weight whose reference bytes the fp32 program (or its
    external weights file, model.ptd) does not hold.

    An fp32 ExecuTorch program keeps every weight's float32 bytes, in the source layout, or
    transposed / channels-last for the delegate's kernels; a weight found in none of these
    layouts was changed between the reference and the program."""
    import mmap

    changed = []
    with open(program_path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for module in modules:
            weights = [t for name, t in reference_state.items() if name.rsplit(".", 1)[0] in (module, f"model.{module}")
                       and t.is_floating_point() and t.numel() >= 16 and not bool((t == t.flatten()[0]).all())]
            if any(not any(data.find(layout) >= 0 for layout in _stored_layouts(t)) for t in weights):
                changed.append(module)
    return changed


def _stored_layouts(tensor: torch.Tensor) -> list[bytes]:
    value = tensor.detach().float()
    layouts = [value]
    if value.dim() == 2:
        layouts.append(value.t())
    if value.dim() == 4:  # (O, I, H, W) -> channels-last (O, H, W, I), depthwise (I, H, W, O)
        layouts += [value.permute(0, 2, 3, 1), value.permute(1, 2, 3, 0)]
    return [layout.contiguous().numpy().tobytes() for layout in layouts]


def _logged_events(inspector):
    """Instruction-level events with logged outputs, in execution order (first run only)."""
    for block in inspector.event_blocks:
        for event in block.events:
            if event.name.startswith("native_call_") or event.is_delegated_op:
                continue  # native_call_* repeats its OPERATOR_CALL; delegated ops log no tensors
            if event.debug_data and event.debug_handles is not None:
                yield event


def _nearest(tensor: torch.Tensor, candidates: list, values: dict):
    """The node whose reference value this logged tensor is.

    A logged tensor carries no node name: its instruction's debug handles narrow it to a few
    nodes (a delegate's outputs are not ordered as the graph is, and one source op's handle can
    span several nodes), shape and dtype narrow further, and among what is left the nearest
    value decides. A wrong runtime value stays far from every candidate, so errors still show."""
    same = [n for n in candidates if tuple(values[n.name].shape) == tuple(tensor.shape) and values[n.name].dtype == tensor.dtype]
    if len(same) <= 1:
        return same[0] if same else None
    return min(same, key=lambda n: float((values[n.name].double() - tensor.double()).square().sum()))
