"""EDiT options. The paper's text was not available: every uncertain detail is an option.

docs/edit.md gives the formulas and their sources; each field says which detail it covers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from edit_mobile.errors import UserError


@dataclass(frozen=True)
class EDiTConfig:
    # "conv": ConvFusion adds local context to the queries; "none": queries W_q X as the teacher's,
    # the lightest form (for the ConvFusion question: what its accuracy is worth in latency).
    fusion: Literal["conv", "none"] = "conv"
    # ConvFusion (queries): Conv3x3 C -> C / fusion_reduction, GroupNorm, LeakyReLU, Conv1x1 back to C.
    fusion_reduction: int = 4
    # 1 = full 3x3 conv (faithful default); larger = grouped 3x3, a lighter form to measure.
    fusion_groups: int = 1
    # GroupNorm groups, clipped to a divisor of the reduced channels.
    fusion_norm_groups: int = 32
    # "norm_act": GroupNorm then LeakyReLU (the more plausible order); "act_norm" the other.
    fusion_order: Literal["norm_act", "act_norm"] = "norm_act"
    fusion_negative_slope: float = 0.01
    # Spatial Compressor (keys/values): depthwise conv, kernel 3, stride 2 -> 4x fewer tokens.
    compression_kernel: int = 3
    compression_stride: int = 2
    # Keeps the ReLU-kernel normaliser away from zero when every query feature is zero.
    eps: float = 1e-6
    # MM-EDiT image rows: "eta" mixes linear and softmax parts by N_I / (N_I + N_T);
    # "exact" shares one normaliser between the ReLU kernel and the exponential kernel.
    mm_normalizer: Literal["eta", "exact"] = "eta"
    # MM-EDiT prompt rows attend to the full ("full") or compressed ("compressed") image keys.
    mm_prompt_image_keys: Literal["full", "compressed"] = "full"

    def __post_init__(self) -> None:
        checks = {
            "fusion": self.fusion in ("conv", "none"),
            "fusion_reduction": self.fusion_reduction >= 1,
            "fusion_groups": self.fusion_groups >= 1,
            "fusion_norm_groups": self.fusion_norm_groups >= 1,
            "fusion_order": self.fusion_order in ("norm_act", "act_norm"),
            "compression_stride": self.compression_stride >= 1,
            "compression_kernel": self.compression_kernel >= self.compression_stride,
            "eps": self.eps > 0,
            "mm_normalizer": self.mm_normalizer in ("eta", "exact"),
            "mm_prompt_image_keys": self.mm_prompt_image_keys in ("full", "compressed"),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise UserError(f"invalid EDiT option {bad[0]}={getattr(self, bad[0])!r}; see EDiTConfig")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> EDiTConfig:
        values = dict(values or {})
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown EDiT option {unknown[0]!r}; known options: {sorted(known)}")
        return cls(**values)
