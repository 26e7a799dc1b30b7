"""The pipeline artifact for Core ML: `export MODEL --backend coreml --pipeline`.

One .mlpackage a component, as Apple's ml-stable-diffusion ships its text encoder, UNet and
decoder: text_encoder.mlpackage, denoiser.mlpackage, decoder.mlpackage. A component with
several resolutions is one multifunction package (a function a method, `denoise_HxW`;
coremltools stores weights the functions share once), which needs iOS 18 / macOS 15, the
pipeline's default target. The denoiser computes at the request's precision (fp16 by default,
what the Neural Engine runs); the text encoder and decoder in fp32, as in the other pipelines.
Core ML runs only on Apple systems: here the packages are converted and inspected, not run.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from edit_mobile.errors import UserError
from edit_mobile.export.backends.base import LoweringJob, named_stage
from edit_mobile.export.pipeline_target import PipelineTarget

COMPONENTS = {"encode_prompt": "text_encoder", "denoise_": "denoiser", "decode_": "decoder"}
PIPELINE_TARGET = "iOS18"  # multifunction packages
SINGLE_FUNCTION = "main"


def component_of(method: str) -> str:
    return next(component for prefix, component in COMPONENTS.items() if method.startswith(prefix))


def check_target(target_name: str | None, resolutions: int):
    """The deployment target, refused where it cannot hold a multifunction package."""
    import coremltools as ct

    from edit_mobile.export.backends.coreml import deployment_target

    target = deployment_target(target_name or PIPELINE_TARGET)
    if target < ct.target.iOS18 and resolutions > 1:
        raise UserError(f"several resolutions make multifunction Core ML packages, which need iOS18 or later, not "
                        f"{target.name}; pass --coreml-target iOS18 or one --resolution")
    return target


def write_coreml_methods(programs: dict, methods, staging: Path, precision: str,
                         target_name: str | None) -> tuple[dict, dict]:
    """Each component as an .mlpackage (multifunction where it has several methods), made
    deterministic and inspected. Returns (roles -> files, per-method record)."""
    target = check_target(target_name, len([m for m in methods if m.name.startswith("denoise_")]))
    groups: dict[str, list] = {}
    for method in methods:
        groups.setdefault(component_of(method.name), []).append(method)
    files, records = {}, {}
    with tempfile.TemporaryDirectory(prefix="functions-", dir=staging.parent) as scratch:
        for component, group in groups.items():
            package = f"{component}.mlpackage"
            converted = {m.name: convert_method(programs[m.name], m, precision if component == "denoiser" else "fp32",
                                                target, Path(scratch)) for m in group}
            combine(converted, staging / package)
            role = "program" if component == "denoiser" else f"component.{component}"
            files[role] = package
            for method in group:
                function = method.name if len(group) > 1 else SINGLE_FUNCTION
                records[method.name] = {"file": role, "function": function, "minimum_deployment_target": target.name,
                                        "compute_precision": precision if component == "denoiser" else "fp32"}
            check_functions(staging / package, group, records)
    return files, records


def convert_method(program, method, precision: str, target, scratch: Path) -> Path:
    from edit_mobile.export.backends.coreml import convert

    job = LoweringJob(program, method.inputs, (), method.input_names, method.output_names, precision)
    mlmodel, _ = convert(job, target.name)
    path = scratch / f"{method.name}.mlpackage"
    with named_stage(f"save {path.name}"):
        mlmodel.save(str(path))
    return path


def combine(converted: dict[str, Path], package: Path) -> None:
    """One function: the package as converted; several: a multifunction package."""
    import coremltools as ct

    from edit_mobile.export.backends.coreml import make_package_deterministic

    if len(converted) == 1:
        shutil.move(str(next(iter(converted.values()))), package)
    else:
        descriptor = ct.utils.MultiFunctionDescriptor()
        for name, path in converted.items():
            descriptor.add_function(str(path), src_function_name=SINGLE_FUNCTION, target_function_name=name)
        descriptor.default_function_name = next(iter(converted))
        with named_stage(f"save_multifunction {package.name}"):
            ct.utils.save_multifunction(descriptor, str(package))
    make_package_deterministic(package)


def check_functions(package: Path, group, records: dict) -> None:
    """The package declares each method's function with the method's input names and shapes."""
    import coremltools as ct

    from edit_mobile.export.backends.coreml import spec_io

    description = ct.utils.load_spec(str(package)).description
    declared = ({function.name: function.input for function in description.functions}
                if description.functions else {SINGLE_FUNCTION: description.input})
    for method in group:
        found = [(spec["name"], spec["shape"]) for spec in spec_io(declared[records[method.name]["function"]])]
        expected = [(name, list(tensor.shape)) for name, tensor in zip(method.input_names, method.inputs, strict=True)]
        if found != expected:
            raise RuntimeError(f"Core ML {package.name} {method.name} inputs {found} differ from {expected}")


class CoreMLPipelineTarget(PipelineTarget):
    backend = "coreml"
    runtime = "Core ML"
    program_format = "mlprogram"
    decomposes_encoder_and_decoder = True

    def check(self, request) -> None:
        check_target(request.coreml_target, max(len(request.resolutions), 1))

    def write(self, programs: dict, methods: list, request, staging: Path):
        return (None, *write_coreml_methods(programs, methods, staging, request.precision, request.coreml_target))

    def not_run(self) -> dict:
        return {"ran": False, "runtime": self.runtime,
                "reason": "Core ML runs only on Apple systems: converted and inspected here; validate on a Mac"}


TARGET = CoreMLPipelineTarget()
