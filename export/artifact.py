"""Export one denoiser step to an artifact folder: the orchestrator behind `edit-mobile export`.

load model -> reference outputs -> rewrite passes -> (fp16 cast) -> torch.export ->
(quantization) -> backend lowering -> manifest, all written into a temporary folder that is
renamed into place only when complete. The same request gives byte-identical files.

ART_DIR/
  manifest.json                  how to call the model (schema edit-mobile/manifest v1)
  model.pte | model.onnx | model.mlpackage   (+ model.bpte for XNNPACK, model.ort on request)
  test_vectors.safetensors       input.<name> / output.<name>: PyTorch float32 reference
  reference/                     the PyTorch model (diffusers folder, safetensors)
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from edit_mobile.errors import UserError
from edit_mobile.export import manifest as manifest_io
from edit_mobile.export.backends import Backend, LoweringJob, get_backend
from edit_mobile.fileio import atomic_output_dir, check_output_dir
from edit_mobile.memory import release_freed_memory

TEST_VECTORS_FILE = "test_vectors.safetensors"
REFERENCE_DIR = "reference"
BATCH_SIZES = (1, 2)
# A rewrite pass must keep float32 outputs equal up to float reassociation.
PASS_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportRequest:
    model: str  # preset name or local diffusers folder
    backend: str
    output: Path
    resolution: tuple[int, int] | None = None  # pixels (H, W); None = the model's default
    precision: str | None = None  # None = the backend's default
    batch: int = 1
    passes: list[str] | None = None  # None = the backend's default passes; [] = none
    quantize: str | None = None
    calibration: Path | None = None
    min_psnr: float | None = None  # quantization: keep sensitive layers float for this PSNR
    float_layers: tuple[str, ...] = ()  # quantization: layers kept float by name
    prompt_tokens: int | None = None
    seed: int = 0  # of the test vectors
    allow_below_floor: bool = False  # keep an artifact whose self-check is below its PSNR floor
    force: bool = False  # replace an output folder edit-mobile did not write (never an input)
    backend_options: dict[str, Any] = field(default_factory=dict)

    @property
    def inputs(self) -> list:
        """What the export reads: its output never lands on or inside these."""
        return [self.model, self.calibration]


class CastedDenoiser(nn.Module):
    """Runs the wrapped denoiser in `dtype` behind float32 inputs and output, so that every
    artifact has the same I/O whatever its precision (the app never converts arrays)."""

    def __init__(self, denoiser: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.denoiser = denoiser.to(dtype)
        self.dtype = dtype

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.denoiser(*(x.to(self.dtype) for x in inputs)).to(torch.float32)


# --- checks made before any work, so that bad input leaves nothing behind -----------------


def check_precision(precision: str) -> None:
    if precision not in manifest_io.PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(manifest_io.PRECISIONS)}")


def check_batch(batch: int) -> None:
    if batch not in BATCH_SIZES:
        raise UserError(f"batch {batch} is not supported; choose one of {', '.join(map(str, BATCH_SIZES))}")


# --- hooks into the rewrite passes and quantization packages ------------------------------


def resolve_passes(requested: list[str] | None, backend_name: str, model: nn.Module | None = None,
                   image_tokens: int | None = None, scheme: str | None = None) -> list[str]:
    """The pass names to apply, checked and in the order the passes package applies them; the
    backend's defaults (`requested` None) without those `model` cannot take, that do not serve
    an export of up to `image_tokens` image tokens, or that are not a default for its `scheme`
    (the quantization scheme, or the precision of a float export: "fp32", "fp16")."""
    if requested is not None and not requested:
        return []
    try:
        from edit_mobile.export.passes import PASSES, check_pass_names, default_passes
    except ImportError as err:
        raise UserError(
            f"the mobile rewrite passes are not available in this build ({err}); export with --no-passes"
        ) from err
    if requested is None:
        requested = [name for name in default_passes(backend_name)
                     if (model is None or PASSES[name].applies_to(model, image_tokens))
                     and (PASSES[name].default_schemes is None or scheme in PASSES[name].default_schemes)]
    chosen = set(check_pass_names(list(requested)))
    return [name for name in PASSES if name in chosen]


def apply_passes(model: nn.Module, names: list[str], share_weights: bool = False) -> nn.Module:
    if not names:
        return model
    from edit_mobile.export.passes import apply_passes as apply

    return apply(model, names, share_weights)


def quantization_api(backend_name: str, scheme: str):
    """edit_mobile.export.quantization, with the scheme checked for the backend. See its
    docstring for the two-stage contract: quantize_program on the torch.export program, then
    (record["stage"] == "lowered") quantize_lowered on the written program file."""
    from edit_mobile.export import quantization

    quantization.check_scheme(backend_name, scheme)
    return quantization


# --- the export --------------------------------------------------------------------------


def model_record(source: str, model: nn.Module) -> dict[str, Any]:
    from edit_mobile.models import is_edit, model_family

    config = {key: value for key, value in dict(model.config).items() if not key.startswith("_")}
    return {
        "source": source,
        "family": model_family(model),
        "edit": is_edit(model),
        "class_name": type(model).__name__,
        "config": config,
    }


def apply_umask(folder: Path) -> None:
    """Give the artifact ordinary permissions: its staging folder is made private (mkdtemp)
    and some writers create 0600 files, but an artifact is meant to be read and copied."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def write_test_vectors(path: Path, names: list[str], inputs, output_name: str, output) -> None:
    tensors = {f"input.{name}": tensor.contiguous() for name, tensor in zip(names, inputs, strict=True)}
    tensors[f"output.{output_name}"] = output.contiguous()
    save_file(tensors, str(path))


def check_passes_kept_outputs(reference: torch.Tensor, rewritten: torch.Tensor, names: list[str]) -> None:
    error = (rewritten - reference).abs().max().item()
    scale = max(reference.abs().max().item(), 1.0)
    if not error <= PASS_TOLERANCE * scale:
        raise RuntimeError(f"rewrite passes {names} changed the float32 output by {error:.3g}")


@dataclass
class ExportPlan:
    """A checked request: everything resolved before any file is written."""

    request: ExportRequest
    backend: Backend
    precision: str
    pass_names: list[str]
    quantization: Any  # the edit_mobile.export.quantization module, or None
    model: nn.Module | None  # None once the program to lower is made (release_model)
    record: dict[str, Any]
    signature: Any  # edit_mobile.models.TransformerSignature
    calibration_set: Any = None  # the request's calibration set, read once (edit_mobile.calibration.CalibrationSet)
    calibration_warnings: list[str] = field(default_factory=list)


def plan_export(request: ExportRequest) -> ExportPlan:
    """Check the whole request, cheapest checks first, so that bad input costs little and
    leaves nothing behind. Raises UserError."""
    from edit_mobile.models import TransformerSignature, load_transformer, prompt_tokens_of

    backend: Backend = get_backend(request.backend)
    precision = request.precision or backend.default_precision
    check_precision(precision)
    check_batch(request.batch)
    check_output_dir(request.output, "export", request.inputs, request.force)
    backend.check_available()
    if request.quantize is None and (request.min_psnr is not None or request.float_layers):
        raise UserError("--min-psnr and --float-layers apply only with --quantize SCHEME")
    quantization = None
    if request.quantize:
        from edit_mobile.export.quantization import resolve_scheme

        request = dataclasses.replace(request, quantize=resolve_scheme(backend.name, request.quantize))
        quantization = quantization_api(backend.name, request.quantize)
    if request.passes:
        resolve_passes(request.passes, backend.name)  # unknown names fail before loading
    model = load_transformer(request.model)
    height, width = request.resolution or (None, None)
    signature = TransformerSignature.of(
        model, height, width, batch=request.batch,
        prompt_tokens=request.prompt_tokens or prompt_tokens_of(request.model, model),
    )
    pass_names = resolve_passes(request.passes, backend.name, model, signature.image_tokens,
                                request.quantize or precision)
    record = model_record(request.model, model)  # before passes may rebuild modules
    calibration_set, warnings = None, []
    if request.calibration is not None:
        from edit_mobile.calibration import load_calibration

        calibration_set = load_calibration(request.calibration)
        warnings = calibration_warnings(calibration_set, model)
    return ExportPlan(request, backend, precision, pass_names, quantization, model, record, signature,
                      calibration_set, warnings)


# Latents along a sane sampler trajectory stay within a few units (unit-variance noise, scaled
# by the scheduler); |x| in the tens or hundreds means the trajectory diverged (a model without
# trained weights), and observers calibrated on it quantize nothing the phone will see.
DIVERGED_LATENT_ABS = 50.0


def calibration_warnings(calibration, model: nn.Module) -> list[str]:
    """What is suspect about the calibration set for this model, one line each."""
    from edit_mobile.calibration import model_sha256

    calibration_dir = calibration.path
    warnings = []
    recorded = calibration.manifest["model"]
    if recorded.get("sha256") != model_sha256(model):
        warnings.append(f"{calibration_dir} was recorded with another model ({recorded.get('source')}, "
                        f"{recorded.get('class_name')}): its activation ranges may not be this model's; "
                        "calibrate this model")
    latents = [record[0] for record in calibration.calibration_inputs]
    largest = max((float(x.abs().max()) for x in latents), default=0.0)
    if not largest <= DIVERGED_LATENT_ABS:
        warnings.append(f"{calibration_dir} holds latents up to |x| = {largest:.3g} (a sane trajectory stays "
                        f"under {DIVERGED_LATENT_ABS:g}): the sampler diverged; calibrate with trained weights "
                        "or --trajectory forward")
    return warnings


def write_reference(plan: ExportPlan, staging: Path) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The PyTorch model and its float32 output on seeded inputs: what every backend is
    compared against, on this machine and on the device."""
    from edit_mobile.models import DenoiserWrapper

    inputs = plan.signature.example_inputs(seed=plan.request.seed)
    reference = DenoiserWrapper(plan.model).eval()(*inputs)
    plan.model.save_pretrained(staging / REFERENCE_DIR, safe_serialization=True)
    output_name = plan.signature.outputs[0].name
    write_test_vectors(staging / TEST_VECTORS_FILE, plan.signature.input_names, inputs, output_name, reference)
    return inputs, reference


def mobile_denoiser(plan: ExportPlan, inputs, reference: torch.Tensor) -> nn.Module:
    """The module to trace: rewrite passes applied (checked to keep the output), then cast to
    fp16 behind float32 I/O where the backend runs fp16 by casting."""
    from edit_mobile.models import DenoiserWrapper

    casts = plan.precision == "fp16" and plan.backend.casts_model_for_fp16
    # Uncast, the rewritten copy holds the model's own weights: one copy of them in memory.
    denoiser: nn.Module = DenoiserWrapper(apply_passes(plan.model, plan.pass_names, share_weights=not casts)).eval()
    if plan.pass_names:
        check_passes_kept_outputs(reference, denoiser(*inputs), plan.pass_names)
    if casts:
        denoiser = CastedDenoiser(denoiser, torch.float16).eval()
    return denoiser


def trace(plan: ExportPlan, denoiser: nn.Module, inputs) -> tuple[torch.export.ExportedProgram, dict | None]:
    """torch.export of the denoiser, quantized before lowering where the scheme says so."""
    exported = torch.export.export(denoiser, inputs, strict=False)
    if plan.quantization is None:
        return exported, None
    request = plan.request
    return plan.quantization.quantize_program(
        exported, backend=plan.backend.name, scheme=request.quantize,
        calibration=plan.calibration_set, signature=plan.signature, denoiser=denoiser,
        min_psnr=request.min_psnr, float_layers=tuple(request.float_layers),
    )


def lower(plan: ExportPlan, job: LoweringJob, quantization: dict | None, staging: Path):
    """The backend writes its program; schemes that quantize the written file run after it.
    A third-party failure becomes one line; its traceback goes to a log beside the output
    (the staging folder is removed on failure)."""
    from edit_mobile.export.backends.base import lowering_stage

    name = plan.backend.name
    log_path = staging.parent / f"{Path(plan.request.output).name}.export-error.log"
    with lowering_stage(name, "lowering", log_path):
        result = plan.backend.lower(job, staging)
    if quantization is not None and quantization.get("stage") == "lowered":
        request = plan.request
        with lowering_stage(name, "quantization of the written program", log_path):
            quantization = plan.quantization.quantize_lowered(
                staging / result.files["program"], backend=name, scheme=request.quantize,
                calibration=plan.calibration_set, signature=plan.signature, record=quantization,
                min_psnr=request.min_psnr, float_layers=tuple(request.float_layers),
            )
            result = plan.backend.program_rewritten(result, staging)
    with lowering_stage(name, "finishing the program", log_path):
        result = plan.backend.finish(result, staging, job.options)
    return result, quantization


@dataclass
class CheckSamples:
    """What the written program is held to: inputs, PyTorch's float32 outputs, their name."""

    inputs: list
    references: list
    name: str


def check_samples(plan: ExportPlan, inputs, reference) -> CheckSamples:
    """A quantized program is held to the held-out calibration records, a float one to the
    test vectors. Computed before tracing, so the eager model can go once the program is made."""
    if plan.quantization is None or plan.calibration_set is None:
        return CheckSamples([inputs], [reference], "test vectors")
    from edit_mobile.export.quantization import load_records
    from edit_mobile.models import DenoiserWrapper

    _, _, samples = load_records(plan.calibration_set, plan.signature)
    wrapper = DenoiserWrapper(plan.model).eval()
    return CheckSamples(samples, [wrapper(*sample) for sample in samples], "held-out calibration records")


def self_check(plan: ExportPlan, result, quantization: dict | None, staging: Path, samples: CheckSamples) -> dict:
    """Run the written program here and hold it to its floor (see export/self_check.py)."""
    from edit_mobile.export import self_check as checks

    floor = checks.floor_db(plan.precision, quantization is not None)
    delegates = (result.delegation or {}).get("delegates") or []
    weights = staging / result.files["weights"] if "weights" in result.files else None
    record = checks.check_program(staging / result.files["program"], delegates, samples.inputs, samples.references,
                                  floor, samples.name, weights)
    what = f"{plan.backend.name} {(quantization or {}).get('scheme') or plan.precision}"
    return checks.enforce_floor(record, what, plan.request.allow_below_floor)


def release_model(plan: ExportPlan) -> None:
    """Drop the eager model once the program to lower is made: a quantized program holds its
    own weights, and the runtime that checks the written program loads its own copy; a
    real-size model cannot afford three sets (SD3.5-Medium: 9.2 GiB in float32)."""
    plan.model = None
    release_freed_memory()


def write_manifest(plan: ExportPlan, result, quantization: dict | None, staging: Path, checked: dict) -> None:
    roles = {**result.files, "test_vectors": TEST_VECTORS_FILE, "reference_model": REFERENCE_DIR}
    manifest = manifest_io.build_manifest(
        model=plan.record,
        resolution=plan.signature.resolution,
        batch=plan.request.batch,
        prompt_tokens=plan.signature.prompt_tokens,
        backend=plan.backend.name,
        precision=plan.precision,
        quantization=quantization,
        passes=plan.pass_names,
        inputs=[spec.to_dict() for spec in plan.signature.inputs],
        outputs=[spec.to_dict() for spec in plan.signature.outputs],
        files={role: manifest_io.file_entry(staging, path) for role, path in sorted(roles.items())},
        delegation=result.delegation,
        program=result.program,
    )
    manifest["self_check"] = checked
    if plan.calibration_warnings:
        manifest["calibration_warnings"] = plan.calibration_warnings
    manifest_io.write_manifest(staging, manifest)


def export_artifact(request: ExportRequest) -> Path:
    """Write the artifact folder for `request`; returns its path. Raises UserError on bad input."""
    plan = plan_export(request)
    request = plan.request  # checked, aliases resolved
    for warning in plan.calibration_warnings:
        print(f"warning: {warning}", file=sys.stderr)
    stages = tqdm(total=6, desc=f"export {request.model} -> {plan.backend.name}", unit="stage",
                  file=sys.stderr, disable=None, leave=False)
    with atomic_output_dir(request.output, "export", request.inputs, request.force) as staging, torch.no_grad(), stages:
        stages.set_postfix_str("reference")
        inputs, reference = write_reference(plan, staging)
        stages.update()
        stages.set_postfix_str("passes")
        denoiser = mobile_denoiser(plan, inputs, reference)
        stages.update()
        stages.set_postfix_str("torch.export")
        samples = check_samples(plan, inputs, reference)
        exported, quantization = trace(plan, denoiser, inputs)
        del denoiser
        release_model(plan)  # a quantized program holds its own weights; a float one shares the model's
        stages.update()
        stages.set_postfix_str(f"lower to {plan.backend.name}")
        job = LoweringJob(
            exported=exported,
            example_inputs=inputs,
            reference_outputs=(reference,),
            input_names=plan.signature.input_names,
            output_names=[spec.name for spec in plan.signature.outputs],
            precision=plan.precision,
            options={**request.backend_options, "quantized": quantization is not None},
        )
        del exported  # the job owns it: a backend may drop it once the program is written
        result, quantization = lower(plan, job, quantization, staging)
        del job
        release_freed_memory()
        stages.update()
        stages.set_postfix_str("self-check")
        checked = self_check(plan, result, quantization, staging, samples)
        stages.update()
        stages.set_postfix_str("manifest")
        write_manifest(plan, result, quantization, staging, checked)
        apply_umask(staging)
        stages.update()
    return Path(request.output)
