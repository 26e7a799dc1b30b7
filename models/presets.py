"""Named models, built from their configs with random weights, and loading local folders.

Nothing here reaches a model hub: real checkpoints come from a local diffusers folder.
A preset NAME is the teacher; NAME-edit is its EDiT (PixArt) or MM-EDiT (SD3) student.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import ModelMixin

from edit_mobile.errors import UserError
from edit_mobile.models.conversion import convert
from edit_mobile.models.families import all_families, family_of_class_name, get_family

EDIT_SUFFIX = "-edit"


@dataclass(frozen=True)
class Preset:
    family: str
    config: dict
    description: str


def _family_presets() -> dict[str, Preset]:
    return {name: Preset(family.name, config, description)
            for family in all_families() for name, (config, description) in family.presets().items()}


PRESETS: dict[str, Preset] = _family_presets()


# Presets with trained weights: the shapes world's teachers, shipped as diffusers pipeline
# folders in edit_mobile.pretrained (made by `make shapes`). NAME-edit is the student distilled
# from the teacher, shipped beside it; `edit-mobile convert NAME` gives the undistilled one.
SHIPPED: dict[str, str] = {
    "shapes-pixart": "PixArt-Sigma layout trained on the shapes world, 256 px, 6 layers of width 128",
    "shapes-sd3": "SD3.5 (MMDiT-X) layout trained on the shapes world, 256 px, 4 layers of width 128",
}


def preset_names() -> list[str]:
    return [name + suffix for name in [*PRESETS, *SHIPPED] for suffix in ("", EDIT_SUFFIX)]


def _split_edit(name: str) -> tuple[str, bool]:
    return (name[: -len(EDIT_SUFFIX)], True) if name.endswith(EDIT_SUFFIX) else (name, False)


def shipped_folder(name: str) -> Path:
    """The pipeline folder of a shipped preset (the teacher NAME or its distilled student
    NAME-edit), or one line saying it is missing."""
    from edit_mobile.pretrained import pipeline_folder

    folder = pipeline_folder(name)
    if folder is None:
        raise UserError(f"the {name} weights are not in this installation; run `make shapes` to make them")
    return folder


def pipeline_folder_of(source: str | Path | None) -> Path | None:
    """The diffusers pipeline folder (text encoders, tokenizers, VAE, scheduler) a model comes
    with: a shipped preset's, the folder itself, or the pipeline folder around a transformer/."""
    if source is None:
        return None
    text = str(source)
    if not Path(text).exists():
        return shipped_folder(text) if _split_edit(text)[0] in SHIPPED else None
    path = Path(text)
    return next((f for f in (path, path.parent) if (f / "model_index.json").is_file()), None)


def build_preset(name: str, seed: int = 0, device: str | torch.device = "cpu") -> ModelMixin:
    """A preset with random weights (seeded), on `device` ("meta" builds no weights at all).

    EDiT presets also randomise the new convolutions (ConvFusion's 1x1 starts at zero in a
    conversion), so every path of the student carries signal in tests and benchmarks.
    """
    base, want_edit = _split_edit(name)
    if base in SHIPPED:
        return _shipped(name, device)
    if base not in PRESETS:
        raise UserError(f"unknown model {name!r}: not a preset ({', '.join(preset_names())}) nor a folder")
    preset = PRESETS[base]
    teacher_cls = get_family(preset.family).teacher_class
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = teacher_cls.from_config(preset.config)
        if want_edit:
            model = convert(model)
            if str(device) != "meta":
                _randomise_fusion(model)
    return model.eval()


def _shipped(name: str, device) -> ModelMixin:
    """A shipped teacher or distilled EDiT / MM-EDiT student with its trained weights."""
    folder = shipped_folder(name) / "transformer"
    return (_architecture(folder) if str(device) == "meta" else load_folder(folder)).eval()


def _randomise_fusion(model: ModelMixin) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".conv_fusion.expand." in name:
                parameter.normal_(0.0, 0.02)


def is_tiny(source: str | Path | None, config: dict | None = None) -> bool:
    """Is this one of the tiny presets: by name, or by a config keeping every setting of one (as
    a student converted from it does)? Tiny presets have no real text encoder or VAE anywhere,
    so calibration and the image pipeline use seeded random ones."""
    if str(source or "").startswith("tiny-"):
        return True
    if config is None and source is not None and Path(source).is_dir():
        try:
            config = json.loads((_transformer_folder(Path(source)) / "config.json").read_text())
        except (UserError, ValueError):
            return False
    normal = lambda value: list(value) if isinstance(value, list | tuple) else value  # noqa: E731
    return config is not None and any(
        all(normal(config.get(key)) == normal(value) for key, value in preset.config.items())
        for name, preset in PRESETS.items() if name.startswith("tiny-")
    )


def _transformer_folder(path: Path) -> Path:
    """A transformer folder, or the `transformer/` folder inside a pipeline folder."""
    if (path / "config.json").is_file():
        return path
    if (path / "transformer" / "config.json").is_file():
        return path / "transformer"
    raise UserError(f"{path} has no config.json: pass a diffusers transformer (or pipeline) folder")


def _class_name(folder: Path) -> str:
    try:
        class_name = json.loads((folder / "config.json").read_text())["_class_name"]
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{folder / 'config.json'} is not a diffusers model config ({err})") from err
    if family_of_class_name(class_name) is None:
        from edit_mobile.models.families import all_families

        known = ", ".join(family.teacher_class.__name__ for family in all_families())
        raise UserError(f"{folder} holds a {class_name}, not a transformer of a known family; "
                        f"pass a folder of a {known} or its student")
    return class_name


def _model_class(class_name: str) -> type[ModelMixin]:
    family = family_of_class_name(class_name)
    return family.student_class if family.student_class.__name__ == class_name else family.teacher_class


# Bounds on a folder's config, checked before anything is allocated: the largest real models of
# these families (SD3.5-Large: 38 layers, 24 heads of 64; PixArt-Sigma XL: 28 layers, 16 x 72)
# sit far inside them, and a typo or hostile config (10000 layers, patch 0) cannot reach memory.
CONFIG_BOUNDS = {
    "num_layers": (1, 256), "num_attention_heads": (1, 512), "attention_head_dim": (1, 1024),
    "patch_size": (1, 16), "in_channels": (1, 1024), "out_channels": (1, 1024),
    "sample_size": (1, 1024), "caption_channels": (1, 65536), "cross_attention_dim": (1, 65536),
    "joint_attention_dim": (1, 65536), "caption_projection_dim": (1, 65536),
    "pooled_projection_dim": (1, 65536), "pos_embed_max_size": (1, 4096),
    "num_cross_attention_heads": (1, 512), "cross_attention_head_dim": (1, 1024),
}
MAX_PARAMETERS = 20e9  # 80 GB of fp32 weights: more than any phone model, less than a typo


def load_folder(path: str | Path) -> ModelMixin:
    """A local diffusers transformer folder, refused unless its config is sane and its
    safetensors hold exactly the tensors (names and shapes) that config builds."""
    folder = _transformer_folder(Path(path))
    cls = _model_class(_class_name(folder))
    expected = _expected_tensors(folder, cls)
    _check_weights(folder, expected)
    # `accelerate` is not a dependency: ask for the plain load rather than be warned each time.
    return cls.from_pretrained(folder, use_safetensors=True, low_cpu_mem_usage=False).eval()


def _expected_tensors(folder: Path, cls: type[ModelMixin]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the model's state dict, built on the meta device (no memory)."""
    config = cls.load_config(folder)
    for key, (low, high) in CONFIG_BOUNDS.items():
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise UserError(f"{folder / 'config.json'}: {key} = {value!r} is not a whole number from {low} to {high}; "
                            "fix the config or pass another model folder")
    try:
        with torch.device("meta"):
            model = cls.from_config(config)
    except Exception as err:  # noqa: BLE001 - any failure to build means the config is unusable
        raise UserError(f"{folder / 'config.json'} does not build a {cls.__name__} "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); fix the config") from err
    parameters = sum(p.numel() for p in model.parameters())
    if parameters > MAX_PARAMETERS:
        raise UserError(f"{folder / 'config.json'} builds {parameters / 1e9:.0f}B parameters (over "
                        f"{MAX_PARAMETERS / 1e9:.0f}B); fix the config")
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files diffusers would read: the shards of an index, or the single file."""
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise UserError(f"{index} is not a safetensors index ({err}); save the model again") from err
        return [folder / shard for shard in shards]
    single = folder / "diffusion_pytorch_model.safetensors"
    if single.is_file():
        return [single]
    raise UserError(f"{folder} has no diffusion_pytorch_model.safetensors; pickled weights are never loaded: "
                    "save the model with safe_serialization=True")


def _check_weights(folder: Path, expected: dict[str, tuple[int, ...]]) -> None:
    from safetensors import safe_open

    found: dict[str, tuple[int, ...]] = {}
    for file in _weight_files(folder):
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                    found[key] = tuple(handle.get_slice(key).get_shape())
        except Exception as err:  # noqa: BLE001 - safetensors raises several types for bad files
            raise UserError(f"{file} is not a readable safetensors file ({type(err).__name__}); save the model again") from err
    problems = [f"missing {name}" for name in expected if name not in found]
    problems += [f"{name} is {list(found[name])}, the config needs {list(shape)}"
                 for name, shape in expected.items() if name in found and found[name] != shape]
    problems += [f"unexpected {name}" for name in found if name not in expected]
    if problems:
        more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
        raise UserError(f"{folder}'s weights do not match its config: {'; '.join(problems[:2])}{more}; "
                        "pass a complete folder saved by diffusers or edit-mobile")


def load_architecture(name_or_path: str | Path) -> ModelMixin:
    """The model's architecture on the meta device: its config, no weights read or made."""
    text = str(name_or_path)
    if not Path(text).exists():
        return build_preset(text, device="meta")
    return _architecture(_transformer_folder(Path(text)))


def _architecture(folder: Path) -> ModelMixin:
    """A transformer folder's model built from its config on the meta device: no weights read."""
    cls = _model_class(_class_name(folder))
    with torch.device("meta"):
        return cls.from_config(cls.load_config(folder))


def load_transformer(name_or_path: str | Path) -> ModelMixin:
    """A preset name (teacher or `-edit`) or a local diffusers folder (teacher or EDiT)."""
    text = str(name_or_path)
    if Path(text).exists():
        return load_folder(text)
    return build_preset(text)


def prompt_tokens_of(source: str | Path | None, model: ModelMixin) -> int:
    """The prompt length a model is run at by default: what its pipeline folder's tokenizers
    say (the shapes SD3 reads 32 + 32 tokens), else its family's (PixArt 300, SD3 333)."""
    from edit_mobile.models.families import family_of

    return family_of(model).default_prompt_tokens_of(pipeline_folder_of(source))
