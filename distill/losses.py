"""The EDiT recipe's three losses (as LinFusion and CLEAR distil linear-attention students):

- task: the student's prediction against the noising target (noise, v or flow velocity);
- output: the student's prediction against the teacher's on the same input;
- feature: at every swapped attention, the student's output against the teacher's, per layer.

Default weights 1 / 0.5 / 0.5. Feature taps are forward hooks on the attention modules whose
processor is EDiT's; the teacher's modules of the same names give the targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    task: float = 1.0
    output: float = 0.5
    feature: float = 0.5

    @staticmethod
    def parse(text: str) -> LossWeights:
        """"1,0.5,0.5" -> task, output, feature."""
        values = [float(part) for part in text.split(",")]
        if len(values) != 3 or any(not (v >= 0) for v in values) or sum(values) == 0:
            raise ValueError("three weights >= 0, not all zero: TASK,OUTPUT,FEATURE")
        return LossWeights(*values)


def swapped_attention_names(student: torch.nn.Module) -> list[str]:
    """Names of the attention modules EDiT replaced (their processor is an EDiT processor)."""
    from edit_mobile.models.edit_attention import EDiTAttnProcessor

    return [name for name, module in student.named_modules()
            if isinstance(getattr(module, "processor", None), EDiTAttnProcessor)]


class AttentionTaps:
    """Keeps the image-token output of the named attention modules during one forward."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [modules[name].register_forward_hook(self._keep(name)) for name in names]

    def _keep(self, name: str):
        def hook(module, args, output):
            # Joint attention returns (image, prompt) outputs; the swapped part is the image's.
            self.outputs[name] = output[0] if isinstance(output, tuple) else output
        return hook

    def take(self) -> dict[str, torch.Tensor]:
        outputs, self.outputs = self.outputs, {}
        return outputs

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def distillation_losses(student_pred, teacher_pred, target, student_features, teacher_features) -> dict:
    feature = torch.stack([F.mse_loss(student_features[name], teacher_features[name])
                           for name in teacher_features]).mean()
    return {"task": F.mse_loss(student_pred, target), "output": F.mse_loss(student_pred, teacher_pred),
            "feature": feature}


def parameters_to_train(student: torch.nn.Module, which: str) -> list[str]:
    """Names of the parameters `--train` names: `new` the EDiT parts only (ConvFusion, the
    Spatial Compressor); `attention` those and the swapped attentions' projections; `all`."""
    dead = unused_parameters(student)
    names = [name for name, _ in student.named_parameters() if name not in dead]
    if which == "all":
        return names
    swapped = swapped_attention_names(student)
    new = [n for n in names if ".processor." in n]
    if which == "new":
        return new
    return new + [n for n in names if n not in new and any(n.startswith(f"{s}.") for s in swapped)]


def unused_parameters(model: torch.nn.Module) -> set[str]:
    """Parameters no output depends on, so never trained: SD3's last block attends with the
    prompt's queries but keeps no prompt output (`context_pre_only`, no `to_add_out`), leaving
    its prompt-query projection and norm without a gradient (DDP refuses such parameters)."""
    dead = set()
    for name, module in model.named_modules():
        if getattr(module, "context_pre_only", False) and getattr(module, "to_add_out", None) is None:
            for part in ("add_q_proj", "norm_added_q"):
                if getattr(module, part, None) is not None:
                    dead |= {f"{name}.{part}.{p}" for p, _ in getattr(module, part).named_parameters()}
    return dead
