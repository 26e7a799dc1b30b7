"""Core ML (iPhone, iPad, Mac; ANE / GPU / CPU): model.mlpackage, an ML program by coremltools.

Core ML runs only on Apple systems, so here the package is converted and inspected: its
inputs / outputs (names, shapes, dtypes) and the MIL op types it holds go to the manifest.
Compute precision is fp16 by default (what the Neural Engine runs); I/O stays float32 so the
apps feed the same arrays as to every other backend.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edit_mobile.errors import UserError
from edit_mobile.export.backends.base import Backend, BackendResult, LoweringJob, named_stage
from edit_mobile.export.manifest import COREML_CHUNK_MB

PACKAGE_DIR = "model.mlpackage"
DEFAULT_TARGET = "iOS17"
WEIGHTS_DIR = "Data/com.apple.CoreML/weights"
_BUILD_DATE_KEY = "com.github.apple.coremltools.conversion_date"
# MIL dtypes in the model description -> manifest dtype names
_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 131104: "int32"}


def deployment_target(name: str | None):
    """'iOS17' / 'macOS14' -> coremltools target; a clear error for other names."""
    import coremltools as ct

    name = name or DEFAULT_TARGET
    target = getattr(ct.target, name, None)
    if target is None or target < ct.target.iOS15:
        choices = [t.name for t in ct.target if t >= ct.target.iOS15 and t.name[:3] in ("iOS", "mac")]
        raise UserError(
            f"Core ML deployment target {name!r} is not one of {', '.join(dict.fromkeys(choices))} "
            "(ML programs need iOS15 / macOS12 or later)"
        )
    return target


def compute_precision(precision: str):
    import coremltools as ct

    return ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32


def strip_build_date(mlmodel) -> None:
    """coremltools stamps the conversion date into the spec: drop it for byte-identical output."""
    metadata = mlmodel.user_defined_metadata
    if _BUILD_DATE_KEY in metadata:
        del metadata[_BUILD_DATE_KEY]


def make_package_deterministic(package: Path) -> None:
    """Make an .mlpackage's bytes a function of its content. Its Manifest.json names items by
    random UUIDs: replace them by UUIDs derived from each item's path (they are only keys).
    Its spec is a protobuf whose maps serialise in per-process hash order: rewrite it with
    deterministic serialisation (the same message, parsed back identically)."""
    from coremltools.proto import Model_pb2

    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    renamed = {}
    entries = {}
    for old_id, item in manifest["itemInfoEntries"].items():
        new_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "mlpackage:" + item["path"])).upper()
        renamed[old_id] = new_id
        entries[new_id] = item
        if item["name"].endswith(".mlmodel"):
            spec_path = package / "Data" / item["path"]
            spec = Model_pb2.Model()
            spec.ParseFromString(spec_path.read_bytes())
            spec_path.write_bytes(spec.SerializeToString(deterministic=True))
    manifest["itemInfoEntries"] = entries
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True))


def spec_io(feature_descriptions) -> list[dict[str, Any]]:
    specs = []
    for feature in feature_descriptions:
        array = feature.type.multiArrayType
        specs.append(
            {
                "name": feature.name,
                "shape": [int(d) for d in array.shape],
                "dtype": _ARRAY_DTYPES.get(array.dataType, str(array.dataType)),
            }
        )
    return specs


def ml_programs(spec) -> list:
    """The ML program specs of a package: itself, or each chunk of a chunked pipeline."""
    if spec.WhichOneof("Type") == "pipeline":
        return [model for model in spec.pipeline.models if model.WhichOneof("Type") == "mlProgram"]
    return [spec]


def _main_block(spec):
    function = spec.mlProgram.functions["main"]
    return function.block_specializations[function.opset]


def mil_op_types(spec) -> dict[str, int]:
    counts = Counter(op.type for program in ml_programs(spec) for op in _main_block(program).operations)
    return dict(sorted(counts.items()))


def mil_ranks(spec) -> dict[str, int]:
    """Highest tensor rank in the program, and among matmul operands: the Neural Engine
    wants rank 4 or less (the mobile rewrite folds heads into the batch for that)."""
    max_rank, matmul_rank = 0, 0
    for program in ml_programs(spec):
        rank = {value.name: value.type.tensorType.rank for value in program.mlProgram.functions["main"].inputs}
        for op in _main_block(program).operations:
            for output in op.outputs:
                rank[output.name] = output.type.tensorType.rank
            if op.type == "matmul":
                for argument in ("x", "y"):
                    for binding in op.inputs[argument].arguments:
                        matmul_rank = max(matmul_rank, rank.get(binding.name, 0))
        max_rank = max(max_rank, *rank.values())
    return {"max_rank": max_rank, "matmul_max_rank": matmul_rank}


def inspect_package(package: Path) -> dict[str, Any]:
    """What a Mac would report about the package, read from its spec: I/O, ops and ranks (over
    every chunk of a chunked package), the number of chunks (1: not chunked), weight bytes."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(package))
    return {
        "inputs": spec_io(spec.description.input),
        "outputs": spec_io(spec.description.output),
        "ops": mil_op_types(spec),
        **mil_ranks(spec),
        "specification_version": spec.specificationVersion,
        "chunks": len(ml_programs(spec)),
        "weight_bytes": weight_bytes(package),
    }


def weight_bytes(package: Path) -> int:
    """Bytes of the package's weight files (a chunked pipeline keeps each chunk's there too)."""
    return sum(path.stat().st_size for path in (package / WEIGHTS_DIR).rglob("*") if path.is_file())


def chunk_package(package: Path, limit_mb: float) -> list[int]:
    """Split `package` in place into a Core ML pipeline of chunks holding at most `limit_mb`
    megabytes of weights each (coremltools' bisect_model, repeated on chunks still too large;
    the pipeline has the package's inputs and outputs, so an app loads it as before).
    Returns the chunks' weight bytes, [] when the package fits."""
    import coremltools as ct

    limit = int(limit_mb * 1e6)
    if limit <= 0 or weight_bytes(package) <= limit:
        return []
    with tempfile.TemporaryDirectory(dir=package.parent, prefix=".chunks-") as scratch:
        chunks = _bisect_until(package, limit, Path(scratch))
        models = [ct.models.MLModel(str(chunk), skip_model_load=True) for chunk in chunks]
        staged = Path(scratch) / PACKAGE_DIR
        with named_stage("coremltools make_pipeline"):
            ct.utils.make_pipeline(*models).save(str(staged))
        sizes = [weight_bytes(chunk) for chunk in chunks]
        shutil.rmtree(package)
        staged.rename(package)
    return sizes


def _bisect_until(package: Path, limit: int, scratch: Path) -> list[Path]:
    size = weight_bytes(package)
    if size <= limit:
        return [package]
    halves = scratch / f"{package.stem}.halves"
    with named_stage("coremltools bisect_model"):
        ct_bisect(package, halves)
    first, second = (halves / f"{package.stem}_chunk{index}.mlpackage" for index in (1, 2))
    if max(weight_bytes(first), weight_bytes(second)) >= size:
        raise UserError(f"a single Core ML weight is larger than --coreml-chunk-mb {limit / 1e6:g}; "
                        "raise it, or pass 0 for no chunks")
    return _bisect_until(first, limit, scratch) + _bisect_until(second, limit, scratch)


_BISECT = """
import sys
from coremltools.models.utils import bisect_model
bisect_model(sys.argv[1], sys.argv[2], merge_chunks_to_pipeline=False, check_output_correctness=False)
"""  # check_output_correctness would run both halves: Core ML exists only on Apple systems


def ct_bisect(package: Path, out_dir: Path) -> None:
    """bisect_model in a child process: it orders the halves' boundary tensors by set iteration,
    so a fixed hash seed makes the same package split into the same bytes (and the whole MIL
    program it loads is freed when the child exits)."""
    done = subprocess.run([sys.executable, "-c", _BISECT, str(package), str(out_dir)], capture_output=True,
                          text=True, check=False, env={**os.environ, "PYTHONHASHSEED": "0"})
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"bisect_model exited with {done.returncode}")


def convert(job: LoweringJob, target_name: str | None):
    import coremltools as ct

    target = deployment_target(target_name)
    # coremltools converts ATen-dialect programs (the core-ATen decomposition, no edge ops).
    with named_stage("run_decompositions"):
        exported = job.exported.run_decompositions({})
    with named_stage("coremltools.convert"):
        mlmodel = ct.convert(
            exported,
            convert_to="mlprogram",
            minimum_deployment_target=target,
            compute_precision=compute_precision(job.precision),
            inputs=[
                ct.TensorType(name=name, shape=tuple(tensor.shape), dtype=np.float32)
                for name, tensor in zip(job.input_names, job.example_inputs, strict=True)
            ],
            outputs=[ct.TensorType(name=name, dtype=np.float32) for name in job.output_names],
            skip_model_load=True,  # Core ML itself exists only on Apple systems
        )
    strip_build_date(mlmodel)
    return mlmodel, target


class CoreMLBackend(Backend):
    name = "coreml"
    description = "Core ML .mlpackage (ML program) by coremltools; converted and inspected here"
    default_precision = "fp16"
    casts_model_for_fp16 = False

    def check_available(self) -> None:
        try:
            import coremltools  # noqa: F401
        except ImportError as err:
            raise UserError(f"the coreml backend needs coremltools ({err}); pip install coremltools") from err

    def lower(self, job: LoweringJob, out_dir: Path) -> BackendResult:
        mlmodel, target = convert(job, job.options.get("coreml_target"))
        with named_stage("mlmodel.save"):
            mlmodel.save(str(out_dir / PACKAGE_DIR))
        expected = [(n, list(t.shape)) for n, t in zip(job.input_names, job.example_inputs, strict=True)]
        result = BackendResult(
            files={"program": PACKAGE_DIR},
            delegation=None,
            program={"format": "mlprogram", "minimum_deployment_target": target.name,
                     "compute_precision": job.precision},
        )
        result = self.program_rewritten(result, out_dir)
        found = [(spec["name"], spec["shape"]) for spec in result.program["inputs"]]
        if found != expected:
            raise RuntimeError(f"Core ML inputs {found} differ from the signature's {expected}")
        return result

    def program_rewritten(self, result: BackendResult, out_dir: Path) -> BackendResult:
        package = out_dir / result.files["program"]
        make_package_deterministic(package)
        result.program = {**result.program, **inspect_package(package)}
        return result

    def finish(self, result: BackendResult, out_dir: Path, options: dict[str, Any]) -> BackendResult:
        limit_mb = options.get("coreml_chunk_mb")
        chunks = chunk_package(out_dir / result.files["program"], COREML_CHUNK_MB if limit_mb is None else limit_mb)
        if not chunks:
            return result
        result = self.program_rewritten(result, out_dir)
        result.program["chunk_weight_bytes"] = chunks
        return result


BACKEND = CoreMLBackend()
