"""Teacher -> EDiT conversion, on diffusers models and returning diffusers models.

The student is built from the teacher's config plus the EDiT options and takes the teacher's
state dict whole: every weight the teacher has (W_q, W_k, W_v, W_o, norms, MLPs, embeddings)
is reused unchanged. Only the new convolutions are fresh, initialised so the student starts
near the teacher: ConvFusion's 1x1 conv at zero (queries = the teacher's, behind the ReLU
kernel), the Spatial Compressor at 2x2 block means (keys/values = local averages of the
teacher's). What remains different at start is the ReLU kernel itself; distillation closes it.
"""

from __future__ import annotations

import torch
from diffusers import ModelMixin, PixArtTransformer2DModel, SD3Transformer2DModel

from edit_mobile.errors import UserError
from edit_mobile.models.config import EDiTConfig
from edit_mobile.models.families import all_families, family_of, get_family
from edit_mobile.models.pixart_edit import PixArtEDiTTransformer2DModel
from edit_mobile.models.sd3_mm_edit import SD3MMEDiTTransformer2DModel

CONVERSION_SEED = 0


def model_family(model: ModelMixin) -> str:
    """The family's name ("pixart", "sd3"); edit_mobile.models.families.family_of gives the object."""
    return family_of(model).name


def is_edit(model: ModelMixin) -> bool:
    return isinstance(model, tuple(family.student_class for family in all_families()))


def edit_options(model: ModelMixin) -> EDiTConfig | None:
    return EDiTConfig.from_dict(model.config["edit_config"]) if is_edit(model) else None


def _rebuild(model: ModelMixin, cls: type[ModelMixin], config: dict) -> ModelMixin:
    parameter = next(model.parameters())
    # The new convolutions' random part (ConvFusion's 3x3) is seeded: a conversion gives the
    # same student whatever ran before it (distillation runs on several processes rely on it).
    with torch.device(parameter.device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(CONVERSION_SEED)
        rebuilt = cls.from_config(config)
    missing, unexpected = rebuilt.load_state_dict(model.state_dict(), strict=False)
    # Only EDiT processor weights may differ between the two architectures.
    if any(".processor." not in name for name in [*missing, *unexpected]):
        raise RuntimeError(f"conversion lost weights: missing={missing} unexpected={unexpected}")
    if rebuilt.dtype != parameter.dtype:
        rebuilt = rebuilt.to(parameter.dtype)
    return rebuilt.train(model.training)


def _teacher_config(model: ModelMixin) -> dict:
    return {key: value for key, value in model.config.items() if key != "edit_config"}


def student_of(teacher: ModelMixin, family: str, options) -> ModelMixin:
    """The family's EDiT student built from `teacher`'s config and weights (a family file's
    `convert` calls this)."""
    if is_edit(teacher):
        raise UserError(f"{type(teacher).__name__} is already an EDiT model; pass its teacher")
    if model_family(teacher) != family:
        raise UserError(f"expected a {family} transformer, got {type(teacher).__name__}")
    if isinstance(options, dict):
        options = EDiTConfig.from_dict(options)
    config = {**_teacher_config(teacher), "edit_config": (options or EDiTConfig()).to_dict()}
    return _rebuild(teacher, get_family(family).student_class, config)


def to_edit(
    teacher: PixArtTransformer2DModel, options: EDiTConfig | dict | None = None
) -> PixArtEDiTTransformer2DModel:
    """PixArt teacher -> EDiT student: every attn1 becomes EDiT attention; attn2 is untouched."""
    return student_of(teacher, "pixart", options)


def to_mm_edit(
    teacher: SD3Transformer2DModel, options: EDiTConfig | dict | None = None
) -> SD3MMEDiTTransformer2DModel:
    """SD3 teacher -> MM-EDiT student: joint attention hybrid, MMDiT-X attn2 EDiT."""
    return student_of(teacher, "sd3", options)


def convert(teacher: ModelMixin, options: EDiTConfig | dict | None = None) -> ModelMixin:
    """The family's conversion: `to_edit` for PixArt, `to_mm_edit` for SD3."""
    return family_of(teacher).convert(teacher, options)


def to_teacher(student: ModelMixin) -> ModelMixin:
    """Drop the EDiT attention: the teacher architecture with the student's shared weights."""
    if not is_edit(student):
        return student
    return _rebuild(student, family_of(student).teacher_class, _teacher_config(student))
