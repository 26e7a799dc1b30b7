"""PT2E int8 on a traced denoiser: annotate, calibrate, convert; and a quick estimate of
what keeping some layers float would give, without recalibrating.

The annotation is ExecuTorch's XNNPACKQuantizer (per-channel symmetric int8 weights; int8
activations, static from HistogramObserver ranges or dynamic per call). Its q/dq output is
the generic `quantized_decomposed` form, which coremltools converts too (Core ML W8A8).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence

import torch
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import propagate_annotation
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY
from tqdm import tqdm

from edit_mobile.export.quantization.layers import (
    ELEMENTWISE_OPS,
    QUANTIZABLE_OPS,
    in_layers,
    node_filter,
)

Inputs = tuple[torch.Tensor, ...]
ANNOTATED_OPS = QUANTIZABLE_OPS | ELEMENTWISE_OPS


class FilteredXNNPACKQuantizer(XNNPACKQuantizer):
    """XNNPACKQuantizer whose node filter binds every annotator.

    In executorch 1.5.1 the `cat` annotator ignores the filter, so a float layer's
    concatenations (the sin/cos timestep embedding) would still be quantized.
    """

    def annotate(self, model: GraphModule) -> GraphModule:
        self._annotate_for_quantization_config(model)
        if self.filter_fn is not None:
            for node in model.graph.nodes:
                if not self.filter_fn(node):
                    node.meta.pop(Q_ANNOTATION_KEY, None)
        propagate_annotation(model)
        return model


def make_quantizer(dynamic: bool, float_layers: Iterable[str] = ()) -> FilteredXNNPACKQuantizer:
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    quantizer = FilteredXNNPACKQuantizer().set_global(config)
    quantizer.set_filter_function(node_filter(float_layers, dynamic))
    return quantizer


def prepare(exported: torch.export.ExportedProgram, quantizer) -> GraphModule:
    return prepare_pt2e(exported.module(), quantizer)


def calibrate(prepared: GraphModule, inputs: Sequence[Inputs], progress: bool = True) -> None:
    with torch.no_grad():
        for record in tqdm(inputs, desc="calibrating observers", unit="record", disable=not progress):
            prepared(*record)


def quantize_graph(
    exported: torch.export.ExportedProgram,
    dynamic: bool,
    calibration_inputs: Sequence[Inputs],
    float_layers: Iterable[str] = (),
    fold_quantize: bool = True,
    progress: bool = True,
    observed: GraphModule | None = None,
    keep_prepared: list | None = None,
) -> GraphModule:
    """The converted (q/dq) module. Dynamic schemes need one record only, to trace shapes.

    `observed`: a calibrated prepared module of the same program (any float layers) whose
    observer statistics are reused instead of running the calibration set again.
    `keep_prepared`: receives a copy of the calibrated prepared module, for later reuse.
    """
    prepared = prepare(exported, make_quantizer(dynamic, float_layers))
    if observed is None or not copy_observers(observed, prepared):
        calibrate(prepared, calibration_inputs[:1] if dynamic else calibration_inputs, progress and not dynamic)
    if keep_prepared is not None:
        keep_prepared.append(copy.deepcopy(prepared))
    converted = convert_pt2e(prepared, fold_quantize=fold_quantize)
    drop_unused_weights(converted)
    if dynamic:
        unshare_dynamic_quant_chains(converted)
    return converted


def drop_unused_weights(module: GraphModule) -> None:
    """Delete the module's weights no node reads any more.

    convert_pt2e folds each quantized weight into a new int8 constant but leaves the float
    weight on the module, and torch.export lifts every weight of a module, read or not: the
    quantized program held all the float weights beside the int8 ones until lowering ended
    (SD3.5-Medium's int8 export: 9 GB of them)."""
    read = {node.target for node in module.graph.nodes if node.op == "get_attr"}
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, _ in named:
        if name not in read:
            owner, _, attribute = name.rpartition(".")
            delattr(module.get_submodule(owner), attribute)


def unshare_dynamic_quant_chains(module: GraphModule) -> None:
    """One choose_qparams / quantize / dequantize chain per GEMM, as ExecuTorch's LLM export does
    (DuplicateDynamicQuantChainPass). PixArt's 28 cross-attentions all project the same prompt
    embeddings: a chain shared by their K/V Linears groups nodes far apart in the graph, and
    XNNPACK's partitioner then fails with "Invalid partition, found dependency cycles"
    (pixart-sigma-xl-1024-edit int8-dynamic; ExecuTorch PR 18397)."""
    from executorch.backends.transforms.duplicate_dynamic_quant_chain import (
        DuplicateDynamicQuantChainPass,
    )

    DuplicateDynamicQuantChainPass()(module)
    module.recompile()


def _observers(prepared: GraphModule) -> dict[str, torch.nn.Module]:
    """Observer modules by the name of the node each one watches (one observer a node)."""
    found: dict[str, torch.nn.Module] = {}
    for node in prepared.graph.nodes:
        if node.op == "call_module" and node.target.startswith("activation_post_process"):
            watched = node.args[0].name if isinstance(node.args[0], Node) else None
            if watched is None or watched in found:
                return {}
            found[watched] = prepared.get_submodule(node.target)
    return found


def copy_observers(source: GraphModule, target: GraphModule) -> bool:
    """Give `target`'s observers the statistics of `source`'s on the same nodes. Both come
    from one program, so node names match; an observer with no twin means: calibrate."""
    sources, targets = _observers(source), _observers(target)
    if not targets or not all(name in sources and type(sources[name]) is type(module)
                              for name, module in targets.items()):
        return False
    for name, module in targets.items():
        module.load_state_dict(sources[name].state_dict())
    return True


def reexport(module: GraphModule, example_inputs: Inputs) -> torch.export.ExportedProgram:
    return torch.export.export(module, tuple(example_inputs), strict=False)


# --- estimates: a converted graph with some layers' q/dq bypassed --------------------------


def _is_dequantize(node: Node) -> bool:
    return node.op == "call_function" and str(node.target).startswith("quantized_decomposed.dequantize")


def _is_quantize(node) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and str(node.target).startswith(
        "quantized_decomposed.quantize"
    )


def with_quantized_only(converted: GraphModule, keep: Callable[[Node], bool]) -> GraphModule:
    """A copy of an unfolded converted graph (fold_quantize=False) in which every op for
    which `keep(op)` is False reads its float inputs and weights directly (skips its q/dq),
    and whose outputs stay float unless a kept quantized op reads them.

    This estimates, from one calibration, a model quantized with only some layers; it
    ignores that a float layer would also change the ranges its neighbours share with it.
    """
    simulated = copy.deepcopy(converted)
    graph = simulated.graph
    for node in list(graph.nodes):
        if not _is_dequantize(node) or not _is_quantize(node.args[0]):
            continue
        original = node.args[0].args[0]  # the float tensor before quantize
        float_producer = isinstance(original, Node) and not keep(original)
        for user in list(node.users):
            if not keep(user) or (float_producer and user.target not in ANNOTATED_OPS):
                user.replace_input_with(node, original)
    graph.eliminate_dead_code()
    simulated.recompile()
    return simulated


def with_float_layers(converted: GraphModule, float_layers: Iterable[str]) -> GraphModule:
    float_layers = tuple(float_layers)
    return with_quantized_only(converted, lambda node: not in_layers(node, float_layers))


def with_only_layer(converted: GraphModule, layer: str) -> GraphModule:
    return with_quantized_only(converted, lambda node: in_layers(node, (layer,)))
