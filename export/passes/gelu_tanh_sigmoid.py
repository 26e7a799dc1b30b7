"""Pass `gelu_tanh_sigmoid`: tanh-approximated GELU as x * sigmoid(2u) when computing in fp16.

Serves XNNPACK at fp16: its GELU takes float32 only, so an fp16 program ran both GELUs of
every block (N x 4C elements each) on the portable kernels. The identity
0.5 * (1 + tanh(u)) = sigmoid(2u), u = sqrt(2/pi) * (x + 0.044715 x^3), gives the same
function from mul / add / sigmoid, which XNNPACK runs in fp16. In float32 the native GELU
is kept (XNNPACK has one: its erf form, which ExecuTorch's GELU visitor lowers whatever
`approximate` says, within 5e-4 of tanh-GELU), so the pass changes nothing there: the choice is
made from the dtype while tracing. transformers' gelu_new (T5's) is the same function written
with a pow XNNPACK does not take: it becomes the sigmoid form in every precision (exact, where
the native GELU would be erf's: 5.5e-4 off on tiny-pixart's T5 embeddings). x * x overflows fp16 only for |x| > 256, where sigmoid saturates to
0 or 1 and the result is GELU's own limit (0 or x).
Cost in fp16: four elementwise ops instead of one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.activations import GELU as DiffusersGELU
from torch import nn

from edit_mobile.export.passes.base import MobilePass, swap_children

TWO_SQRT_2_OVER_PI = 2.0 * math.sqrt(2.0 / math.pi)


def gelu_tanh(x: torch.Tensor, native_in_fp32: bool = True) -> torch.Tensor:
    if x.dtype != torch.float16 and native_in_fp32:
        return F.gelu(x, approximate="tanh")
    inner = x * (1.0 + 0.044715 * (x * x))  # x + 0.044715 x^3, without forming x^3
    return x * torch.sigmoid(TWO_SQRT_2_OVER_PI * inner)


class SigmoidGELU(nn.Module):
    """nn.GELU(approximate="tanh"); `native_in_fp32=False` keeps the sigmoid form in fp32 too."""

    def __init__(self, native_in_fp32: bool = True):
        super().__init__()
        self.native_in_fp32 = native_in_fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_tanh(x, self.native_in_fp32)


class SigmoidGELUProjection(nn.Module):
    """diffusers' GELU (Linear then tanh-GELU), same `proj`."""

    def __init__(self, gelu: DiffusersGELU):
        super().__init__()
        self.proj = gelu.proj

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return gelu_tanh(self.proj(hidden_states))


def _sigmoid_form(module: nn.Module):
    if type(module) is nn.GELU and module.approximate == "tanh":
        return SigmoidGELU()
    if type(module).__name__ == "NewGELUActivation":  # transformers' gelu_new (T5 v1.1): its x^3
        return SigmoidGELU(native_in_fp32=False)  # is a pow XNNPACK does not take, in fp32 as well
    if type(module) is DiffusersGELU and module.approximate == "tanh":
        return SigmoidGELUProjection(module)
    return None


class GeluTanhSigmoid(MobilePass):
    name = "gelu_tanh_sigmoid"
    serves = (
        "XNNPACK fp16 (no fp16 GELU): tanh-GELU as x*sigmoid(2u) when tracing in fp16, native GELU "
        "in fp32; costs three extra elementwise ops in fp16 only"
    )

    def apply(self, model: nn.Module) -> int:
        return swap_children(model, _sigmoid_form)
