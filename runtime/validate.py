"""`edit-mobile validate`: is the artifact's output the PyTorch reference's, within its precision?

The artifact and the reference (rebuilt from reference/) run on the same inputs: the
manifest's test vectors, then held-out calibration inputs (or seeded random inputs of the
manifest's shapes). Every output is scored by PSNR, SQNR, cosine and max abs error, and
passes when its worst PSNR clears the absolute floor for the artifact's precision (fp32 60,
fp16 40, quantized 30 dB; a quantized artifact on held-out records, worst of every timestep
bucket). A non-finite output fails, named as such. The rebuilt reference must also reproduce
the exported test vectors, or the comparison means nothing.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edit_mobile.errors import UserError
from edit_mobile.memory import release_freed_memory
from edit_mobile.runtime.manifest import Manifest, read_manifest
from edit_mobile.runtime.metrics import (
    Closeness,
    Threshold,
    closeness,
    psnr_threshold,
    timestep_buckets,
)
from edit_mobile.runtime.session import Session, load, load_reference

TEST_VECTORS_ROLE = "test_vectors"
REFERENCE_REPRODUCES_DB = 80.0  # the rebuilt reference vs the outputs stored at export
DEFAULT_SAMPLES = 4
RANDOM_SEED_BASE = 1000  # random inputs never coincide with export's test vectors (seed 0)
BUNDLED_ATOL_RMSE_FACTOR = 10.0  # bundled check: |error| within 10x the RMSE the threshold allows


@dataclass
class OutputScore:
    output: str
    source: str
    samples: list[Closeness]
    threshold: Threshold
    gated: bool = True  # False: reported for information, not held to the threshold
    timesteps: list[float] | None = None  # per sample, for the per-bucket figures

    @property
    def finite(self) -> bool:
        return all(s.finite for s in self.samples)

    @property
    def worst_psnr(self) -> float:
        return math.nan if not self.finite else min(s.psnr_db for s in self.samples)

    @property
    def mean_psnr(self) -> float:
        return math.nan if not self.finite else sum(s.psnr_db for s in self.samples) / len(self.samples)

    @property
    def passed(self) -> bool:
        return self.threshold.passes([s.psnr_db for s in self.samples])

    @property
    def judged_psnr(self) -> float:
        return self.worst_psnr

    def failure(self) -> str:
        if not self.finite:
            bad = sum(not s.finite for s in self.samples)
            return f"{self.output}: non-finite output (NaN or inf) on {bad} of {len(self.samples)} {self.source} samples"
        return (f"{self.output}: worst PSNR {self.worst_psnr:.1f} dB < {self.threshold.db:.1f} dB on {self.source} "
                f"(mean {self.mean_psnr:.1f} dB)")

    def as_dict(self) -> dict:
        finite = [s for s in self.samples if s.finite]
        row = {
            "output": self.output, "source": self.source, "samples": len(self.samples), "gated": self.gated,
            "finite": self.finite,
            "psnr_db_min": _json_number(self.worst_psnr),
            "psnr_db_mean": _json_number(self.mean_psnr),
            "sqnr_db_min": min((s.sqnr_db for s in finite), default=None) if self.finite else None,
            "cosine_min": min((s.cosine for s in finite), default=None) if self.finite else None,
            "max_abs": max((s.max_abs for s in finite), default=None) if self.finite else None,
            "threshold_db": self.threshold.db, "judged_on": "min", "passed": self.passed,
            "per_sample": [s.as_dict() for s in self.samples],
        }
        if self.timesteps is not None:
            row["per_timestep_bucket"] = [
                {key: _json_number(value) for key, value in bucket.items()}
                for bucket in timestep_buckets(self.timesteps, [s.psnr_db for s in self.samples])
            ]
        return row


@dataclass
class ValidationReport:
    artifact: str
    runtime: str
    description: str
    threshold: Threshold
    scores: list[OutputScore] = field(default_factory=list)
    reference_check: list[OutputScore] = field(default_factory=list)
    bundled: list[dict] = field(default_factory=list)
    per_layer: dict | None = None
    images: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        lines = [s.failure() for s in self.scores if s.gated and not s.passed]
        lines += [
            f"reference/ does not reproduce the exported {s.output} (PSNR {s.worst_psnr:.1f} dB < {s.threshold.db:g} dB): "
            "the reference model or the test vectors are not the exported ones" for s in self.reference_check if not s.passed
        ]
        lines += [f"bundled test case {b['case']}: {b['detail']}" for b in self.bundled if not b["passed"]]
        return lines

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def verdict_inputs(self) -> list[str]:
        return sorted({s.source for s in self.scores if s.gated})

    def as_dict(self) -> dict:
        return {
            "artifact": self.artifact, "runtime": self.runtime, "description": self.description,
            "threshold_db": self.threshold.db, "threshold": self.threshold.describe(),
            "verdict_inputs": self.verdict_inputs,
            "passed": self.passed, "failures": self.failures,
            "outputs": [s.as_dict() for s in self.scores],
            "reference_check": [s.as_dict() for s in self.reference_check],
            "bundled_program": self.bundled, "per_layer": self.per_layer, "images": self.images,
            "notes": self.notes,
        }


def load_test_vectors(manifest: Manifest) -> tuple[list[tuple[torch.Tensor, ...]], dict[str, list[torch.Tensor]]]:
    """Inputs (in manifest order) and expected outputs stored at export.

    A key holds one vector of the spec's shape, or K of them stacked on a new first axis."""
    from safetensors.torch import load_file

    entry = manifest.file(TEST_VECTORS_ROLE)
    tensors = load_file(str(entry.path))
    inputs_by_name, outputs = {}, {}
    for spec in manifest.inputs:
        inputs_by_name[spec.name] = _vectors(tensors, f"input.{spec.name}", spec.shape, entry.relative)
    for spec in manifest.outputs:
        if f"output.{spec.name}" in tensors:
            outputs[spec.name] = _vectors(tensors, f"output.{spec.name}", spec.shape, entry.relative)
    counts = {name: len(vectors) for name, vectors in inputs_by_name.items()}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{name}: {count}" for name, count in counts.items())
        raise UserError(f"{entry.relative} holds different numbers of vectors per input ({shown}); re-export the artifact")
    count = next(iter(counts.values()))
    inputs = [tuple(inputs_by_name[spec.name][i] for spec in manifest.inputs) for i in range(count)]
    return inputs, outputs


def _vectors(tensors: dict, key: str, shape: tuple[int, ...], file: str) -> list[torch.Tensor]:
    if key not in tensors:
        raise UserError(f"{file} has no '{key}'; re-export the artifact")
    tensor = tensors[key]
    if tuple(tensor.shape) == shape:
        return [tensor]
    if tuple(tensor.shape[1:]) == shape:
        return list(tensor.unbind(0))
    raise UserError(f"{file}: '{key}' has shape {list(tensor.shape)}, not the manifest's {list(shape)}; re-export the artifact")


def heldout_inputs(manifest: Manifest, calibration_dir: str | os.PathLike, samples: int) -> list[tuple[torch.Tensor, ...]]:
    """Held-out calibration records in signature order, batched to the artifact's batch."""
    from edit_mobile.calibration import load_calibration

    calibration = load_calibration(calibration_dir)
    names = list(getattr(calibration, "input_names", [spec.name for spec in manifest.inputs]))
    if names != [spec.name for spec in manifest.inputs]:
        raise UserError(
            f"calibration set {calibration_dir} records inputs {names} but the artifact takes "
            f"{[spec.name for spec in manifest.inputs]}; calibrate the artifact's model"
        )
    records = list(calibration.heldout_inputs)
    batch = manifest.batch
    needed = samples * batch
    if len(records) < batch:
        raise UserError(f"calibration set {calibration_dir} has {len(records)} held-out records; the artifact needs batch {batch}")
    records = records[:needed]
    grouped = [records[i : i + batch] for i in range(0, len(records) - batch + 1, batch)]  # whole batches
    return [tuple(torch.cat(parts) for parts in zip(*group, strict=True)) for group in grouped]


def random_inputs(manifest: Manifest, reference: Session, samples: int) -> list[tuple[torch.Tensor, ...]]:
    """Seeded inputs of the manifest's shapes, made as the model's signature makes examples."""
    from edit_mobile.models import TransformerSignature

    height, width = manifest.resolution
    signature = TransformerSignature.of(
        reference.model, height, width, batch=manifest.batch, prompt_tokens=manifest.data.get("prompt_tokens")
    )
    return [signature.example_inputs(seed=RANDOM_SEED_BASE + i) for i in range(samples)]


def score(session: Session, expected: list[dict], inputs, source: str, threshold: Threshold) -> list[OutputScore]:
    """The artifact's outputs on `inputs` against the reference's (`expected`, one dict a sample)."""
    per_output: dict[str, list[Closeness]] = {spec.name: [] for spec in session.outputs}
    for sample, wanted in zip(inputs, expected, strict=True):
        produced = session.run(sample)
        for name in per_output:
            per_output[name].append(closeness(wanted[name], produced[name]))
    timesteps = _sample_timesteps(session, inputs)
    return [OutputScore(name, source, values, threshold, timesteps=timesteps) for name, values in per_output.items()]


def _sample_timesteps(session: Session, inputs) -> list[float] | None:
    names = session.input_names
    if "timestep" not in names:
        return None
    index = names.index("timestep")
    return [float(sample[index].flatten()[0]) for sample in inputs]


def _json_number(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def validate(
    art_dir: str | os.PathLike,
    calibration: str | os.PathLike | None = None,
    samples: int = DEFAULT_SAMPLES,
    per_layer: bool = False,
    images: str | os.PathLike | None = None,
    image_options: dict | None = None,
    threads: int | None = None,
    progress=None,
    quantized_floor_db: float | None = None,
) -> ValidationReport:
    if samples < 0:
        raise UserError(f"--samples {samples} must be 0 or more")
    manifest = read_manifest(art_dir)
    threshold = psnr_threshold(manifest.precision, manifest.quantization, quantized_floor_db)
    tick = progress or (lambda message: None)
    reference = load_reference(manifest, threads=threads)
    vectors, stored = load_test_vectors(manifest) if manifest.has(TEST_VECTORS_ROLE) else ([], {})
    input_sets, notes = _input_sets(manifest, reference, vectors, samples, calibration)
    first = input_sets[0][1][0]
    # The reference runs first and goes before the artifact loads, unless a later comparison
    # needs it: a real-size model cannot hold both (SD3.5-Medium: 9.2 GiB beside its program).
    tick("PyTorch reference")
    expected = {source: [reference.run(sample) for sample in inputs] for source, inputs in input_sets}
    if not (per_layer or images is not None):
        reference = None
        release_freed_memory()
    session = load(manifest, threads=threads)
    report = ValidationReport(str(Path(art_dir)), session.runtime, manifest.describe(), threshold, notes=notes)
    for source, inputs in input_sets:
        tick({"test_vectors": "test vectors", "heldout": "held-out calibration inputs"}.get(source, "random inputs"))
        report.scores += score(session, expected[source], inputs, source, threshold)
    for name, values in stored.items():
        rebuilt = [outputs[name] for outputs in expected["test_vectors"]]
        report.reference_check.append(OutputScore(name, "test_vectors", [
            closeness(e, r) for e, r in zip(values, rebuilt, strict=True)], Threshold(REFERENCE_REPRODUCES_DB, "exact rebuild")))
    if manifest.quantization and calibration is not None:
        # Gaussian test vectors and random inputs lie outside the calibrated ranges: a
        # quantized artifact is judged on the held-out records; the others are shown.
        for other in report.scores:
            other.gated = other.source == "heldout"
        _check_calibration_identity(manifest, calibration, report)
    if stored:
        tick("bundled program")
        report.bundled = session.bundled_checks(bundled_atol(stored, threshold.db))
    if per_layer:
        tick("per-layer")
        report.per_layer = session.layer_report(first, reference, threshold.db).as_dict()
    if images is not None:
        tick("images")
        from edit_mobile.runtime.images import compare_images

        report.images = compare_images(manifest, session, reference, images, **(image_options or {}))
    return report


def _input_sets(manifest: Manifest, reference: Session, vectors, samples: int, calibration):
    """[(source, inputs)] to compare on: the test vectors, then held-out records (or seeded
    random inputs); and the notes on what is missing."""
    notes = [] if vectors else ["no test vectors in the manifest"]
    if manifest.quantization and calibration is None:
        notes.append("a quantized artifact is judged on held-out calibration inputs: pass --calibration DIR; "
                     "without it the verdict uses the test vectors and random inputs")
    input_sets = [("test_vectors", vectors)] if vectors else []
    if samples and calibration is not None:
        # A quantized artifact is judged on at least as many held-out records as export measured.
        count = max(samples, int((manifest.quantization or {}).get("heldout_records") or 0) // manifest.batch)
        input_sets.append(("heldout", heldout_inputs(manifest, calibration, count)))
    elif samples:
        input_sets.append(("random", random_inputs(manifest, reference, samples)))
    if not input_sets:
        raise UserError(f"nothing to compare: {manifest.root.name} has no test vectors and --samples is 0; pass --samples N")
    return input_sets, notes


def _check_calibration_identity(manifest: Manifest, calibration_dir, report: ValidationReport) -> None:
    from edit_mobile.calibration.calibration_set import MANIFEST
    from edit_mobile.fileio import sha256_file

    expected = ((manifest.quantization or {}).get("calibration") or {}).get("manifest_sha256")
    if expected and sha256_file(Path(calibration_dir) / MANIFEST) != expected:
        report.notes.append(f"{calibration_dir} is not the calibration set the artifact was quantized with")


def bundled_atol(stored: dict[str, list[torch.Tensor]], threshold_db: float) -> float:
    """The bundled cases' absolute tolerance: the threshold's error at the test vectors' peak."""
    peak = max(float(t.abs().max()) for values in stored.values() for t in values)
    return BUNDLED_ATOL_RMSE_FACTOR * peak * 10 ** (-threshold_db / 20)


