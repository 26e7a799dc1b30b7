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
from pathlib import Path, PurePosixPath

import torch

from edit_mobile.errors import UserError
from edit_mobile.fileio import sha256_file
from edit_mobile.safe_read import JsonBounds, is_int, one_line, read_json

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

    def prompt_row(self, row: int) -> dict[str, torch.Tensor]:
        """The prompt-level inputs of one prompt table row, batch 1, by name."""
        return {name: self.tensors[f"prompt_inputs.{name}"][row : row + 1]
                for name in self.input_names if name in PROMPT_LEVEL_INPUTS}

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
class HeldoutTrajectory:
    sample: int
    positive: dict[str, torch.Tensor]  # prompt-level inputs by name, batch 1
    negative: dict[str, torch.Tensor] | None  # the "" prompt's, None without guidance
    noise: torch.Tensor  # (1, C, h, w): torch.randn seeded as calibrate seeded it


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

    def heldout_trajectories(self) -> list[HeldoutTrajectory]:
        """Each held-out prompt's sampler run as calibrate started it: its prompt inputs (and the
        negative ones with guidance) and its seeded initial noise, to re-run end to end. Empty
        for sets written before their prompt table named its rows' samples."""
        split, manifest = self.heldout, self.manifest
        if "prompt_row.sample" not in split.tensors:
            return []
        shape = next(tuple(spec["shape"]) for spec in manifest["inputs"] if spec["name"] == "hidden_states")
        owners = list(zip(split.tensors["prompt_row.sample"].tolist(), split.tensors["prompt_row.branch"].tolist(),
                          strict=True))
        guided = manifest["guidance"] > 1.0
        trajectories = []
        for sample in manifest["split"]["heldout"]["samples"]:
            negative = next((i for i, owner in enumerate(owners) if owner in ((sample, 0), (-1, 0))), None)
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(manifest["seed"] + sample))
            trajectories.append(HeldoutTrajectory(sample, split.prompt_row(owners.index((sample, 1))),
                                                  split.prompt_row(negative) if guided else None, noise))
        return trajectories

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
    """Load CALIB_DIR written by `edit-mobile calibrate`; files are checked against their hashes,
    the manifest against the schema and the records against the manifest's inputs."""
    from safetensors.torch import load_file

    directory = Path(directory)
    manifest_path = directory / MANIFEST
    manifest = _read_manifest(directory, manifest_path)
    check = _Checker(manifest_path)
    check.manifest(manifest)
    specs = tuple((spec["name"], tuple(spec["shape"]), spec["dtype"]) for spec in manifest["inputs"])
    splits = {}
    for split in SPLIT_FILES:
        entry = manifest["files"][split]
        path = _checked_file(directory, entry, split)
        try:
            tensors = load_file(path)
        except Exception as err:  # safetensors raises SafetensorError, OSError, ...
            raise UserError(f"{path} is not a readable safetensors file ({one_line(err)}); re-run edit-mobile calibrate") from err
        splits[split] = CalibrationSplit(tuple(name for name, _, _ in specs), tensors)
        check.records(splits[split], split, specs, (manifest.get("split") or {}).get(split))
    return CalibrationSet(directory, manifest, splits["calibration"], splits["heldout"])


# --- checks: a hostile or damaged set is one line, never a traceback, a hang or a read outside --

# Far above a real set (a few KiB manifest, ~6 levels deep, 4 inputs), low enough to bound work.
MAX_MANIFEST_BYTES = 16 << 20
MAX_DEPTH = 32
MAX_RANK = 8
MAX_INPUTS = 64
MAX_STEPS = 10_000
MAX_COUNT = 2**31
SHA256_HEX = frozenset("0123456789abcdef")
TENSOR_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}
RECORD_KEYS = ("record.prompt_index", "record.sample", "record.step", "record.branch")


def _read_manifest(directory: Path, manifest_path: Path) -> dict:
    _inside(directory, manifest_path)
    # -Infinity is legitimate here: diffusers' scheduler configs hold it (lambda_min_clipped).
    bounds = JsonBounds(MAX_MANIFEST_BYTES, MAX_DEPTH, max_items=None, max_string=None, allow_constants=True)
    manifest = read_json(manifest_path, "create one with edit-mobile calibrate", bounds, what="a calibration set")
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA or manifest.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{manifest_path} is not a {SCHEMA} v{SCHEMA_VERSION} manifest; re-run edit-mobile calibrate")
    return manifest


def _inside(directory: Path, path: Path) -> Path:
    """The path resolved, refused when it (or a link on the way) leaves the set's folder or is
    not a regular file (a FIFO would block the hash forever)."""
    try:
        resolved = path.resolve()
        is_file = resolved.is_file()
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop
        raise UserError(f"{path} cannot be resolved ({one_line(err)}); re-run edit-mobile calibrate") from err
    if not resolved.is_relative_to(directory.resolve()):
        raise UserError(f"{path} leads to {resolved}, outside the calibration set {directory}; re-run edit-mobile calibrate")
    if resolved.exists() and not is_file:
        raise UserError(f"{path} is not a regular file; re-run edit-mobile calibrate")
    return resolved


def _checked_file(directory: Path, entry: dict, split: str) -> Path:
    relative = PurePosixPath(entry["path"])
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise UserError(f"{directory / MANIFEST}: files.{split}.path {entry['path']!r} leaves the calibration set; re-run edit-mobile calibrate")
    path = directory / relative
    resolved = _inside(directory, path)
    changed = UserError(f"{path} is missing or changed since calibration; re-run edit-mobile calibrate")
    if not resolved.is_file():
        raise changed
    if entry.get("bytes") is not None and resolved.stat().st_size != entry["bytes"]:
        raise changed
    try:
        if sha256_file(resolved) != entry["sha256"].lower():
            raise changed
    except OSError as err:
        raise UserError(f"cannot read {path} ({one_line(err)}); re-run edit-mobile calibrate") from err
    return resolved


class _Checker:
    """The fields load_calibration and its callers read: type and range, one line each."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, field: str, wanted: str, value) -> UserError:
        text = repr(value)
        shown = text if len(text) <= 60 else text[:57] + "..."
        return UserError(f"{self.path}: {field} must be {wanted}, not {shown}; re-run edit-mobile calibrate")

    def integer(self, document: dict, key: str, low: int, high: int, field: str | None = None) -> None:
        value = document.get(key)
        if value is not None and not (is_int(value) and low <= value <= high):
            raise self.fail(field or key, f"a whole number from {low} to {high}", value)

    def manifest(self, manifest: dict) -> None:
        inputs = manifest.get("inputs")
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
            raise self.fail("inputs", f"a list of 1 to {MAX_INPUTS} input specs", inputs)
        for index, spec in enumerate(inputs):
            self.spec(spec, f"inputs[{index}]")
        names = [spec["name"] for spec in inputs]
        if len(set(names)) != len(names):
            raise self.fail("inputs", "inputs of distinct names", names)
        files = manifest.get("files")
        if not isinstance(files, dict) or set(files) != set(SPLIT_FILES):
            raise self.fail("files", f"an object of {' and '.join(SPLIT_FILES)} entries", files)
        for split, entry in files.items():
            self.file(entry, f"files.{split}")
        self.integer(manifest, "steps", 1, MAX_STEPS)
        self.integer(manifest, "samples", 1, MAX_COUNT)
        self.integer(manifest, "seed", -(2**63), 2**64 - 1)
        self.split_samples(manifest.get("split"))
        resolution = manifest.get("resolution")
        if resolution is not None and not (isinstance(resolution, list) and len(resolution) == 2
                                           and all(is_int(side) and 1 <= side <= 16384 for side in resolution)):
            raise self.fail("resolution", "[height, width] of whole numbers from 1 to 16384", resolution)

    def split_samples(self, split) -> None:
        """split.NAME.samples, where present: the sample numbers the split holds."""
        if split is None:
            return
        if not isinstance(split, dict):
            raise self.fail("split", "an object with an entry a split", split)
        for name, entry in split.items():
            samples = entry.get("samples") if isinstance(entry, dict) else None
            if samples is not None and not (isinstance(samples, list)
                                            and all(is_int(s) and 0 <= s < MAX_COUNT for s in samples)):
                raise self.fail(f"split.{name}.samples", f"a list of sample numbers from 0 to {MAX_COUNT - 1}", samples)

    def spec(self, spec, field: str) -> None:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise self.fail(field, "an object with a name, shape and dtype", spec)
        shape = spec.get("shape")
        if not isinstance(shape, list) or not 1 <= len(shape) <= MAX_RANK or not all(is_int(d) and d >= 1 for d in shape):
            raise self.fail(f"{field}.shape", f"a list of 1 to {MAX_RANK} whole numbers of 1 or more", shape)
        if spec.get("dtype") not in TENSOR_DTYPES:
            raise self.fail(f"{field}.dtype", f"one of {', '.join(TENSOR_DTYPES)}", spec.get("dtype"))

    def file(self, entry, field: str) -> None:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or "\0" in entry["path"]:
            raise self.fail(field, "an object with a path, sha256 and bytes", entry)
        digest = entry.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest.lower()) <= SHA256_HEX:
            raise self.fail(f"{field}.sha256", "64 hexadecimal digits", digest)
        self.integer(entry, "bytes", 0, 2**50, f"{field}.bytes")

    def records(self, split: CalibrationSplit, name: str, specs, declared) -> None:
        """Every key the records need, of the shapes the manifest's inputs give, indices in range."""
        tensors = split.tensors
        where = self.path.parent / SPLIT_FILES[name]

        def need(condition: bool, what: str) -> None:
            if not condition:
                raise UserError(f"{where}: {what}, as {MANIFEST} describes its records; re-run edit-mobile calibrate")

        for key in RECORD_KEYS:
            need(key in tensors and tensors[key].dtype == torch.int64 and tensors[key].dim() == 1, f"needs {key} of int64 (R,)")
        records = tensors["record.step"].shape[0]
        need(records >= 1 and all(tensors[key].shape[0] == records for key in RECORD_KEYS), "needs 1 or more records of every key")
        if isinstance(declared, dict) and declared.get("records") is not None:
            need(declared["records"] == records, f"needs {declared['records']!r} records, not {records}")
        prompts = []
        for input_name, shape, dtype in specs:
            key = f"{'prompt_inputs' if input_name in PROMPT_LEVEL_INPUTS else 'inputs'}.{input_name}"
            tensor = tensors.get(key)
            need(tensor is not None and tuple(tensor.shape[1:]) == shape[1:] and tensor.dtype == TENSOR_DTYPES[dtype],
                 f"needs {key} of {dtype} (N, {', '.join(map(str, shape[1:]))})")
            if key.startswith("inputs."):
                need(tensor.shape[0] == records, f"needs {key} of {records} records")
            else:
                prompts.append(tensor.shape[0])
        if "prompt_row.sample" in tensors:  # the prompt table's owners: one (sample, branch) a row
            owners = [tensors.get(f"prompt_row.{part}") for part in ("sample", "branch")]
            need(all(o is not None and o.dtype == torch.int64 and o.dim() == 1 and o.shape[0] == min(prompts, default=0)
                     for o in owners), "needs prompt_row.sample and prompt_row.branch of int64, one a prompt row")
            samples = set((declared or {}).get("samples") or []) if isinstance(declared, dict) else set()
            rows = set(zip(*(o.tolist() for o in owners), strict=True))
            need(all((s, 1) in rows for s in samples), "needs a prompt row for every sample the manifest lists")
        index = tensors["record.prompt_index"]
        if prompts:
            need(int(index.min()) >= 0 and int(index.max()) < min(prompts), f"needs record.prompt_index within 0..{min(prompts) - 1}")




