"""The ExecuTorch path shared by the .pte backends: partition, lower, serialise, measure.

Program-data separation: a backend that serialises its weights through ExecuTorch's
NamedDataStore (XNNPACK, Vulkan) can keep them out of the .pte, in `model.ptd`, beside it. The
flatbuffer then holds only the graph, so no real-size program meets the 2 GB flatbuffer limit,
and the bundled program and every method of a program share the one copy of the weights
(XNNPACK names each constant by its sha256: methods with the same weights store them once).
The Vulkan delegate ignores the tag XNNPACK files its weights under and writes its own files,
`vulkan_constants_<digest>.ptd` shards (see backends/vulkan.py and `weights_roles`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from executorch.exir import (
    EdgeCompileConfig,
    EdgeProgramManager,
    ExecutorchBackendConfig,
    ExecutorchProgramManager,
    to_edge_transform_and_lower,
)
from executorch.exir.backend.utils import WhyNoPartition, is_same_node
from executorch.exir.pass_base import ExportedProgramPassBase, ExportedProgramPassResult
from executorch.exir.passes.constant_prop_pass import constant_prop_pass
from torch.export.graph_signature import InputKind

from edit_mobile.export.backends.base import named_stage
from edit_mobile.export.backends.partition_reachability import compact_partitioner_reachability
from edit_mobile.export.coverage import DelegationCoverage, delegation_coverage


class FoldConstantSubgraphs(ExportedProgramPassBase):
    """Compute at export every op fed by constants alone (ExecuTorch's constant_prop_pass;
    it leaves quantization primitives alone, so quantized weights stay quantized).

    PixArt's PatchEmbed builds its sin-cos position table in forward from lifted scalar
    constants. XNNPACK takes none of its ops (arange, sin, cos), so the table was computed by
    portable kernels at every step, between delegate calls. Vulkan's partitioner made it a
    partition with no runtime input, which Vulkan's FuseBatchNormPass retraced under a fresh
    FakeTensorMode and the pass manager rejected ("fake mode ... doesn't match"). Folded, the
    table is one constant. Several methods in one program: QualifyConstantNames after it.
    """

    def call(self, exported_program) -> ExportedProgramPassResult:
        return ExportedProgramPassResult(constant_prop_pass(exported_program), True)


class QualifyConstantNames(ExportedProgramPassBase):
    """Prefix a method's lifted constants with the method's name (every method of a
    multi-method program runs it, after any pass that adds constants).

    In model.ptd ExecuTorch files a constant no delegate took under its name, one name a
    program: when two methods hold different constants under one name (constant_prop_pass names
    every method's first folded constant `_prop_tensor_constant0`), the last method's data
    silently answers for both. The first to load the other's then fails (error 0x24, invalid
    external data) or, same dtype and shape, computes with the wrong numbers. Parameters keep
    their module names: under one name they are one weight, stored once."""

    def __init__(self, method: str) -> None:
        super().__init__()
        self.method = method

    def call(self, exported_program) -> ExportedProgramPassResult:
        for spec in exported_program.graph_signature.input_specs:
            if spec.kind == InputKind.CONSTANT_TENSOR:
                qualified = f"{self.method}.{spec.target}"
                exported_program.constants[qualified] = exported_program.constants.pop(spec.target)
                spec.target = qualified
        return ExportedProgramPassResult(exported_program, True)


def check_shared_constant_names(edge: EdgeProgramManager) -> None:
    """Refuse a program whose methods hold different weights under one name in model.ptd (see
    `QualifyConstantNames`): the file would keep only one of them."""
    seen: dict[str, torch.Tensor] = {}
    for method in edge.methods:
        for name, tensor in external_constants(edge.exported_program(method)).items():
            other = seen.setdefault(name, tensor)
            if other is not tensor and not (other.shape == tensor.shape and other.dtype == tensor.dtype
                                             and torch.equal(other, tensor)):
                raise ValueError(f"methods hold different weights named {name!r} in model.ptd, which keeps "
                                 "one (name each method's constants apart: QualifyConstantNames)")


def external_constants(exported: torch.export.ExportedProgram) -> dict[str, torch.Tensor]:
    """The program's weights left outside its delegates, by the name model.ptd files them under.
    ExecuTorch keeps the scalars it lifted itself (placeholders named `_lifted_tensor...`) in
    the .pte (exir.passes.external_constants_pass): those are not counted."""
    signature = exported.graph_signature
    names = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
             **signature.inputs_to_lifted_tensor_constants}
    tables = {**exported.state_dict, **exported.constants}
    return {names[node.name]: tables[names[node.name]] for node in exported.graph.nodes
            if node.op == "placeholder" and node.name in names and "_lifted_tensor" not in node.name}


PROGRAM_FILE = "model.pte"
WEIGHTS_NAME = "model"  # -> model.ptd, ExecuTorch's name for a program's external data
ETRECORD_FILE = "etrecord.bin"
# `--weights auto` keeps weights outside the program from this size: phones mmap a .ptd, the
# flatbuffer tools stop at 2 GB, and small programs stay one file for the simplest loaders.
EXTERNAL_WEIGHTS_FROM_BYTES = 1 << 30


def external_weights(choice: str | None, stored_bytes: Callable[[], int]) -> bool:
    """`--weights`: embedded, external, or auto (None): external from EXTERNAL_WEIGHTS_FROM_BYTES
    of weights as the backend stores them, counted only for auto."""
    choice = choice or "auto"
    if choice != "auto":
        return choice == "external"
    return stored_bytes() >= EXTERNAL_WEIGHTS_FROM_BYTES


def weight_bytes(exported, float_bytes: int | None = None) -> int:
    """Bytes of the program's weights as exported (after any cast or quantization); with
    `float_bytes`, floating-point weights counted at that size (a backend storing them in fp16)."""
    tensors = list(exported.state_dict.values()) + list(exported.constants.values())
    return sum(t.numel() * (float_bytes if float_bytes and t.is_floating_point() else t.element_size())
               for t in tensors if hasattr(t, "element_size"))


def lower(
    exported: torch.export.ExportedProgram,
    partitioners: list[Any],
    compile_config: EdgeCompileConfig | None = None,
    transform_passes: list[Any] | None = None,
    generate_etrecord: bool = False,
    external_weights: bool = False,
) -> tuple[EdgeProgramManager, DelegationCoverage]:
    edge = _lower_programs({"forward": exported}, partitioners, external_weights, compile_config=compile_config,
                           transform_passes=transform_passes, generate_etrecord=generate_etrecord)
    return edge, delegation_coverage(edge.exported_program().graph_module)


def lower_methods(
    programs: dict[str, torch.export.ExportedProgram],
    partitioners: list[Any],
    external_weights: bool,
    folded: tuple[str, ...] = (),
) -> tuple[EdgeProgramManager, dict[str, DelegationCoverage]]:
    """Several methods lowered into one program (with every weight outside it, in model.ptd, if
    `external_weights`): methods holding the same weights (a denoiser at several resolutions)
    store them once. The methods named in `folded` have their constant-only subgraphs folded;
    every method's constants are named in the method."""
    # Every method named: ExecuTorch deep-copies the methods a pass dict leaves out.
    passes = {name: [*([FoldConstantSubgraphs()] if name in folded else []), QualifyConstantNames(name)]
              for name in programs}
    edge = _lower_programs(programs, partitioners, external_weights, transform_passes=passes)
    if external_weights:
        check_shared_constant_names(edge)
    return edge, {name: delegation_coverage(edge.exported_program(name).graph_module) for name in programs}


def _lower_programs(programs: dict[str, torch.export.ExportedProgram], partitioners: list[Any],
                    external_weights: bool, **options) -> EdgeProgramManager:
    """to_edge_transform_and_lower with the weights tagged for model.ptd if asked, lowering's
    copies sharing the weights, the partitioners' reachability in bits (partition_reachability),
    and ExecuTorch's caches of the lowered graph let go after."""
    if external_weights:
        for exported in programs.values():
            tag_external_weights(exported)
    with (named_stage("to_edge_transform_and_lower"), weights_shared_by_copies(programs.values()),
          compact_partitioner_reachability()):
        edge = to_edge_transform_and_lower(programs, partitioner=partitioners, **options)
    release_lowering_caches()
    return edge


@contextlib.contextmanager
def weights_shared_by_copies(programs) -> Iterator[None]:
    """Inside the block, a deep copy of any of the programs' weights is the weight itself.

    Lowering deep-copies programs whole: every partition before its backend preprocesses it
    (all partitions at once, BackendDetails.copy_exported_program_for_preprocess), and the
    edge program the ETRecord keeps. Each copy held another full set of weights (an XL
    export peaked at 5.3x its weights). Preprocessing reads weights and serialises new bytes;
    nothing in lowering writes into one, so the copies may share them: ExecuTorch's own CUDA
    backend copies its partitions the same way. `copy.deepcopy` asks the object itself for
    `__deepcopy__`, so the attribute set here on each weight answers for it alone.
    """
    weights = {id(t): t for program in programs for t in program_weights(program)}
    for tensor in weights.values():
        tensor.__deepcopy__ = _shared_copy(tensor)
    try:
        yield
    finally:
        for tensor in weights.values():
            with contextlib.suppress(AttributeError):
                del tensor.__deepcopy__


def _shared_copy(tensor: torch.Tensor):
    def copy(memo: dict) -> torch.Tensor:
        return tensor

    return copy


def program_weights(exported: torch.export.ExportedProgram) -> list[torch.Tensor]:
    tables = (exported.state_dict, exported.constants)
    return [value for table in tables for value in table.values() if isinstance(value, torch.Tensor)]


def release_lowering_caches() -> None:
    """Two module-level holders in ExecuTorch keep the graph just lowered, with the lowered
    program and every serialised weight in it (gigabytes), alive until the process ends:
    exir.backend.utils.is_same_node's unbounded lru_cache (keyed by the graph's nodes) and the
    partitioner configs' WhyNoPartition loggers (the last node refused). Let both go."""
    is_same_node.cache_clear()
    for name, module in list(sys.modules.items()):
        if name.startswith("executorch.backends.") and module is not None:
            for value in list(vars(module).values()):
                if isinstance(value, WhyNoPartition):
                    value.node = None


def tag_external_weights(exported: torch.export.ExportedProgram) -> None:
    """Mark every lifted weight (parameters, buffers, constants: quantized weights included)
    for the external data file. Delegates read the tag from the placeholder's custom metadata,
    which lowering carries into each delegated subgraph."""
    signature = exported.graph_signature
    weights = (set(signature.inputs_to_parameters) | set(signature.inputs_to_buffers)
               | set(signature.inputs_to_lifted_tensor_constants))
    for node in exported.graph.nodes:
        if node.op == "placeholder" and node.name in weights:
            node.meta.setdefault("custom", {})["delegate_constant_tag"] = WEIGHTS_NAME


def to_executorch(edge: EdgeProgramManager, external_weights: bool = False) -> ExecutorchProgramManager:
    # extract_delegate_segments keeps delegate blobs out of the flatbuffer, as the runtime
    # expects for large programs (the default too; stated because the .pte layout depends on it).
    # external_constants: the weights no delegate took go to model.ptd as well.
    config = ExecutorchBackendConfig(
        extract_delegate_segments=True,
        external_constants=(lambda node: WEIGHTS_NAME) if external_weights else False,
    )
    with named_stage("to_executorch"):
        return edge.to_executorch(config)


def write_program(program: ExecutorchProgramManager, out_dir: Path, external_weights: bool = False) -> dict[str, str]:
    """model.pte, and the data files beside it when the program keeps its weights outside
    (ExecuTorch writes one `<tag>.ptd` a tag): manifest roles, see `weights_roles`. `out_dir`
    is the artifact's staging folder, which holds no other .ptd."""
    with named_stage("writing the program"):
        with open(out_dir / PROGRAM_FILE, "wb") as handle:
            program.write_to_file(handle)  # streamed from the serialiser's pieces, not joined first
        files = {"program": PROGRAM_FILE}
        if external_weights:
            program.write_tensor_data_to_file(str(out_dir))
            files.update(weights_roles(sorted(path.name for path in out_dir.glob("*.ptd"))))
    return files


def weights_roles(names: list[str]) -> dict[str, str]:
    """The manifest roles of a program's data files: `weights` for the first, model.ptd when
    there is one (XNNPACK's one file, where every reader looks), `weights.1`, `weights.2`, ...
    for the others in name order (the Vulkan delegate's `vulkan_constants_<digest>.ptd` shards,
    one or more a delegated partition; model.ptd then holds the constants no delegate took).
    A reader that hands ExecuTorch one data file reads `weights`; every file is listed, hashed
    and checked by the manifest's readers like any other role."""
    first = f"{WEIGHTS_NAME}.ptd"
    ordered = sorted(names, key=lambda name: (name != first, name))
    return {"weights" if index == 0 else f"weights.{index}": name for index, name in enumerate(ordered)}


def write_etrecord(program: ExecutorchProgramManager, out_dir: Path, without_weights: bool = False) -> str:
    """The ETRecord maps the program's debug handles back to graph nodes and modules: the
    runtime's per-layer numerics and per-block profile need it (devtools Inspector).
    `without_weights`: its programs keep their graphs but not the weights' values (a real-size
    ETRecord would otherwise hold two more copies of them); numerics then load the reference's.
    The edge program after the transform passes, which ExecuTorch records as an extra module,
    never keeps its weights: nothing reads them, and they would be one more copy."""
    with named_stage("ETRecord"):
        etrecord = program.get_etrecord()
        for exported in (etrecord.graph_map or {}).values():
            strip_weights(exported)
        if without_weights:
            for exported in etrecord_programs(etrecord):
                strip_weights(exported)
        etrecord.save(str(out_dir / ETRECORD_FILE))
    return ETRECORD_FILE


def etrecord_programs(etrecord) -> list[torch.export.ExportedProgram]:
    edge = etrecord.edge_dialect_program
    programs = list(edge.values()) if isinstance(edge, dict) else [edge]
    return [p for p in [etrecord.exported_program, *programs] if p is not None]


def strip_weights(exported: torch.export.ExportedProgram) -> None:
    """Each weight replaced by one zero broadcast to its shape: the same shapes and dtypes for
    the graph, one element of storage each when serialised. Only for a program already written."""
    for table in (exported.state_dict, exported.constants):
        for name, tensor in list(table.items()):
            if isinstance(tensor, torch.Tensor) and tensor.numel() > 1:
                stub = torch.zeros((), dtype=tensor.dtype).expand(tensor.shape)
                table[name] = torch.nn.Parameter(stub, requires_grad=False) if isinstance(tensor, torch.nn.Parameter) else stub
