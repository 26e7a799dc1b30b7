"""A calibration set on disk, and its loader.

CALIB_DIR/
  calibration.json           manifest: model and prompt hashes, sampler, steps, seed, split
  calibration.safetensors    records used to calibrate quantizers
  heldout.safetensors        records of prompts never used for calibration: accuracy checks

Each .safetensors holds R records of the denoiser's inputs (batch 1 each). Inputs that are
fixed along a trajectory (prompt embeddings, pooled embeddings) are stored once per prompt
and branch in `prompt_inputs.<name>` and indexed by `record.prompt_index`, so the file does
not repeat a (T, D) embedding at every step:
  inputs.<name>          (R, ...)   per-step inputs: hidden_states, timestep
  prompt_inputs.<name>   (E, ...)   per-prompt inputs: encoder_hidden_states,
                                    encoder_attention_mask (PixArt), pooled_projections (SD3)
  record.prompt_index    (R,) int64
  record.sample, record.step, record.branch  (R,) int64: which prompt, step, guidance branch
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from edit_mobile.errors import UserError
from edit_mobile.fileio import sha256_file

SCHEMA = "edit-mobile/calibration"
SCHEMA_VERSION = 1
MANIFEST = "calibration.json"
SPLIT_FILES = {"calibration": "calibration.safetensors", "heldout": "heldout.safetensors"}
PROMPT_LEVEL_INPUTS = ("encoder_hidden_states", "encoder_attention_mask", "pooled_projections")


@dataclass
class CalibrationSplit:
    input_names: tuple[str, ...]
    tensors: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return self.tensors["record.step"].shape[0]

    def record(self, index: int) -> tuple[torch.Tensor, ...]:
        """One record's inputs, batch 1, in the denoiser's signature order."""
        prompt_row = int(self.tensors["record.prompt_index"][index])
        values = []
        for name in self.input_names:
            if name in PROMPT_LEVEL_INPUTS:
                values.append(self.tensors[f"prompt_inputs.{name}"][prompt_row : prompt_row + 1])
            else:
                values.append(self.tensors[f"inputs.{name}"][index : index + 1])
        return tuple(values)

    @property
    def inputs(self) -> list[tuple[torch.Tensor, ...]]:
        return [self.record(i) for i in range(len(self))]

    @property
    def steps(self) -> torch.Tensor:
        return self.tensors["record.step"]

    @property
    def timesteps(self) -> torch.Tensor:
        return self.tensors["inputs.timestep"]


@dataclass
class CalibrationSet:
    path: Path
    manifest: dict
    calibration: CalibrationSplit
    heldout: CalibrationSplit

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.calibration.input_names

    @property
    def calibration_inputs(self) -> list[tuple[torch.Tensor, ...]]:
        return self.calibration.inputs

    @property
    def heldout_inputs(self) -> list[tuple[torch.Tensor, ...]]:
        return self.heldout.inputs

    def summary(self) -> dict:
        """What an artifact manifest records about the calibration it used."""
        keys = ("model", "prompts", "steps", "seed", "guidance", "resolution", "trajectory")
        summary = {key: self.manifest.get(key) for key in keys}
        summary["records"] = {split: len(getattr(self, split)) for split in SPLIT_FILES}
        summary["manifest_sha256"] = sha256_file(self.path / MANIFEST)
        return summary

    def check_matches(self, input_specs) -> None:
        """Raise UserError unless the records fit inputs given as (name, shape, dtype) specs;
        any batch fits (records are batch 1 and are concatenated to a program's batch)."""
        names = tuple(spec.name for spec in input_specs)
        if names != self.input_names:
            raise UserError(
                f"calibration set {self.path} records inputs {list(self.input_names)} but the model "
                f"takes {list(names)}; run edit-mobile calibrate with this model"
            )
        first = self.calibration.record(0)
        for spec, value in zip(input_specs, first, strict=True):
            if tuple(value.shape[1:]) != tuple(spec.shape[1:]):
                raise UserError(
                    f"calibration set {self.path} has {spec.name} of shape {tuple(value.shape)}, the "
                    f"model expects {tuple(spec.shape)}; re-run calibrate with this resolution "
                    "and prompt length"
                )


def write_calibration_set(directory: Path, manifest: dict, splits: dict[str, dict[str, torch.Tensor]]) -> None:
    """Write into an (atomic, still private) directory; hashes go into the manifest."""
    from safetensors.torch import save_file

    manifest = dict(manifest, schema=SCHEMA, schema_version=SCHEMA_VERSION, files={})
    for split, filename in SPLIT_FILES.items():
        tensors = {name: tensor.contiguous() for name, tensor in splits[split].items()}
        save_file(tensors, directory / filename)
        manifest["files"][split] = {
            "path": filename,
            "sha256": sha256_file(directory / filename),
            "bytes": (directory / filename).stat().st_size,
        }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def load_calibration(directory: str | os.PathLike) -> CalibrationSet:
    """Load CALIB_DIR written by `edit-mobile calibrate`; files are checked against their hashes."""
    from safetensors.torch import load_file

    directory = Path(directory)
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(
            f"{directory} is not a calibration set (cannot read {MANIFEST}); "
            "create one with edit-mobile calibrate"
        ) from err
    if manifest.get("schema") != SCHEMA or manifest.get("schema_version") != SCHEMA_VERSION:
        raise UserError(
            f"{manifest_path} is not a {SCHEMA} v{SCHEMA_VERSION} manifest; re-run edit-mobile calibrate"
        )
    input_names = tuple(spec["name"] for spec in manifest["inputs"])
    splits = {}
    for split, entry in manifest["files"].items():
        path = directory / entry["path"]
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise UserError(f"{path} is missing or changed since calibration; re-run edit-mobile calibrate")
        splits[split] = CalibrationSplit(input_names, load_file(path))
    return CalibrationSet(directory, manifest, splits["calibration"], splits["heldout"])
