"""Delegation coverage of a lowered ExecuTorch program: how much of the work a delegate runs.

Counted on the edge graph after partitioning: the nodes inside each lowered module
(`original_module`, before the backend's own preprocessing) are delegated, the top-level
call_function nodes other than the delegate calls run on the portable CPU kernels.
FLOPs are estimated from node shapes: 2*M*N*K for matmuls and convolutions, one per output
element for other compute ops, none for pure data movement (views, permutes, copies).
"""

from __future__ import annotations

import math
import operator
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

# Ops that move or relabel data and do no arithmetic. Falling back on these costs copies,
# not compute, so tests that guard the delegate ask only about the other ops.
DATA_MOVEMENT_OPS = frozenset(
    {
        "aten.view_copy.default",
        "aten.view.default",
        "aten._unsafe_view.default",
        "aten.permute_copy.default",
        "aten.permute.default",
        "aten.expand_copy.default",
        "aten.unsqueeze_copy.default",
        "aten.squeeze_copy.dims",
        "aten.squeeze_copy.dim",
        "aten.squeeze_copy.default",
        "aten.clone.default",
        "aten.alias_copy.default",
        "aten.slice_copy.Tensor",
        "aten.select_copy.int",
        "aten.split_with_sizes_copy.default",
        "aten.split_copy.Tensor",
        "aten.cat.default",
        "aten.t_copy.default",
        "aten.transpose_copy.int",
        "dim_order_ops._clone_dim_order.default",
        "dim_order_ops._to_dim_order_copy.default",
        "aten._to_copy.default",
    }
)
_MATMUL_OPS = {"aten.mm.default", "aten.bmm.default", "aten.addmm.default", "aten.linear.default",
               "aten.matmul.default"}
_CONV_OPS = {"aten.convolution.default", "aten.conv2d.default"}
_SDPA_OPS = {"aten.scaled_dot_product_attention.default"}


def op_name(node: torch.fx.Node) -> str:
    """'aten.mul.Scalar' for an edge or ATen op; the callable's name otherwise."""
    target = node.target
    overload = getattr(target, "_op", target)  # EdgeOpOverload wraps an OpOverload
    if isinstance(overload, torch._ops.OpOverload):
        return str(overload)
    return getattr(target, "__name__", str(target))


def module_path(node: torch.fx.Node) -> str:
    """Innermost nn.Module that produced the node, e.g. 'model.transformer_blocks.0.attn1'."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, _type = list(stack.values())[-1]
    return str(path)


def _shape(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, torch.Tensor):
        return tuple(int(d) for d in value.shape)
    return None


def _arg_shape(node: torch.fx.Node, index: int) -> tuple[int, ...] | None:
    if index >= len(node.args) or not isinstance(node.args[index], torch.fx.Node):
        return None
    return _shape(node.args[index].meta.get("val"))


def estimate_flops(node: torch.fx.Node) -> int:
    name = op_name(node)
    if name in DATA_MOVEMENT_OPS:
        return 0
    out = node.meta.get("val")
    out = out[0] if isinstance(out, (tuple, list)) and out else out
    out_shape = _shape(out)
    if out_shape is None:
        return 0
    out_numel = math.prod(out_shape)
    if name in _MATMUL_OPS:
        # The reduction length is the last dim of the left operand (addmm: args[1]).
        left = _arg_shape(node, 1 if name == "aten.addmm.default" else 0)
        return 2 * out_numel * (left[-1] if left else 1)
    if name in _CONV_OPS:
        weight = _arg_shape(node, 1)  # (C_out, C_in / groups, kh, kw)
        return 2 * out_numel * (math.prod(weight[1:]) if weight else 1)
    if name in _SDPA_OPS:
        query, key = _arg_shape(node, 0), _arg_shape(node, 1)
        if query and key:
            # QK^T and PV: two matmuls of (L x D) by (D x S).
            return 4 * math.prod(query[:-1]) * key[-2] * query[-1]
    return out_numel


def _is_counted(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and node.target is not operator.getitem


@dataclass
class DelegationCoverage:
    delegates: list[str]
    delegate_calls: int
    ops_total: int
    ops_delegated: int
    flops_total: int
    flops_delegated: int
    non_delegated_ops: dict[str, int] = field(default_factory=dict)
    # module path -> op -> count, for the ops that do arithmetic outside a delegate
    non_delegated_compute: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def flops_share_delegated(self) -> float:
        return self.flops_delegated / self.flops_total if self.flops_total else 1.0

    @property
    def ops_share_delegated(self) -> float:
        return self.ops_delegated / self.ops_total if self.ops_total else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "delegates": self.delegates,
            "delegate_calls": self.delegate_calls,
            "ops_total": self.ops_total,
            "ops_delegated": self.ops_delegated,
            "ops_share_delegated": round(self.ops_share_delegated, 6),
            "flops_total": self.flops_total,
            "flops_share_delegated": round(self.flops_share_delegated, 6),
            "non_delegated_ops": dict(sorted(self.non_delegated_ops.items())),
            "non_delegated_compute": {
                path: dict(sorted(ops.items()))
                for path, ops in sorted(self.non_delegated_compute.items())
            },
        }

    def summary(self) -> str:
        return (
            f"{self.ops_delegated}/{self.ops_total} ops ({self.ops_share_delegated:.1%}) and "
            f"{self.flops_share_delegated:.2%} of FLOPs in {', '.join(self.delegates) or 'no delegate'}"
            f" ({self.delegate_calls} calls)"
        )


def delegation_coverage(graph_module: torch.fx.GraphModule) -> DelegationCoverage:
    """Coverage of the top-level graph of a lowered edge program (EdgeProgramManager
    .exported_program().graph_module after to_edge_transform_and_lower)."""
    delegates: set[str] = set()
    calls = ops_total = ops_delegated = flops_total = flops_delegated = 0
    outside: Counter[str] = Counter()
    outside_compute: dict[str, Counter[str]] = defaultdict(Counter)
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.target.startswith("lowered_module"):
            lowered = getattr(graph_module, node.target)
            delegates.add(lowered.backend_id)
            for inner in lowered.original_module.graph_module.graph.nodes:
                if _is_counted(inner):
                    flops = estimate_flops(inner)
                    ops_total += 1
                    ops_delegated += 1
                    flops_total += flops
                    flops_delegated += flops
        elif _is_counted(node):
            if getattr(node.target, "__name__", "") == "executorch_call_delegate":
                calls += 1
                continue
            name = op_name(node)
            ops_total += 1
            flops_total += estimate_flops(node)
            outside[name] += 1
            if name not in DATA_MOVEMENT_OPS:
                outside_compute[module_path(node)][name] += 1
    return DelegationCoverage(
        delegates=sorted(delegates),
        delegate_calls=calls,
        ops_total=ops_total,
        ops_delegated=ops_delegated,
        flops_total=flops_total,
        flops_delegated=flops_delegated,
        non_delegated_ops=dict(outside),
        non_delegated_compute={path: dict(ops) for path, ops in outside_compute.items()},
    )
