"""FLOPs per denoising step, total and inside attention, counted by torch's FlopCounterMode.

Counting runs on the meta device: shapes only, no weights, so full-size models cost nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from diffusers import ModelMixin
from torch.utils.flop_counter import FlopCounterMode

from edit_mobile.models.signature import DenoiserWrapper, TransformerSignature

# diffusers names the attentions of a block attn, attn1 and attn2.
_ATTENTION_MODULE = re.compile(r"\.attn\d?$")


@dataclass(frozen=True)
class StepFlops:
    total: int
    attention: int
    parameters: int


def count_step_flops(model: ModelMixin, signature: TransformerSignature) -> StepFlops:
    with torch.device("meta"):
        shape_only = type(model).from_config(model.config)  # same architecture, no weights
        inputs = [torch.empty(spec.shape) for spec in signature.inputs]
    wrapper = DenoiserWrapper(shape_only)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        wrapper(*inputs)
    per_module = counter.get_flop_counts()
    attention = sum(
        sum(ops.values()) for name, ops in per_module.items() if _ATTENTION_MODULE.search(name)
    )
    parameters = sum(parameter.numel() for parameter in shape_only.parameters())
    return StepFlops(counter.get_total_flops(), attention, parameters)
