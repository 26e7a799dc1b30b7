"""Core ML (.mlpackage, converted and inspected here) and Core ML through ExecuTorch (coreml-pte,
lowered here): produced, with the signature's inputs / outputs, in the ops Core ML runs."""

from __future__ import annotations

import pytest
from export_artifacts import exported, manifest


@pytest.mark.parametrize("model", ["tiny-pixart-edit", "tiny-sd3-edit"])
def test_mlpackage_has_the_signature_and_neural_engine_friendly_ops(model):
    from edit_mobile.export.backends.coreml import inspect_package

    art_dir = exported(model, "coreml")
    data = manifest(art_dir)
    assert data["precision"] == "fp16"  # Core ML's default: what the Neural Engine runs
    report = inspect_package(art_dir / data["files"]["program"]["path"])  # read back from disk
    assert report["inputs"] == data["inputs"] and report["outputs"] == data["outputs"]
    assert data["program"]["minimum_deployment_target"] == "iOS17"
    ops = report["ops"]
    # EDiT's linear attention: ReLU kernel, batched matmuls, a division by the normaliser;
    # ConvFusion and the spatial compressor: convolutions.
    assert {"relu", "matmul", "conv"} <= set(ops)
    assert "real_div" in ops or "mul" in ops
    assert report["matmul_max_rank"] <= 4, "matmuls must be rank 4 or less for the Neural Engine"


def test_a_package_past_the_chunk_size_becomes_a_pipeline_of_chunks_with_its_signature():
    """Apple chunks models past ~1 GB of weights for the Neural Engine: here a tiny package with a
    chunk size of 0.15 MB of its 0.44 MB, split by coremltools' bisect_model, inspected (the
    chunks run only on a Mac)."""
    import coremltools as ct

    from edit_mobile.export.backends.coreml import inspect_package, ml_programs

    whole = manifest(exported("tiny-pixart-edit", "coreml"))
    art_dir = exported("tiny-pixart-edit", "coreml", backend_options={"coreml_chunk_mb": 0.15})
    data = manifest(art_dir)
    program = data["program"]
    assert whole["program"]["chunks"] == 1 and "chunk_weight_bytes" not in whole["program"]  # 1 GB default
    assert program["chunks"] == len(program["chunk_weight_bytes"]) >= 3
    assert all(size <= 150_000 for size in program["chunk_weight_bytes"])
    assert sum(program["chunk_weight_bytes"]) >= whole["program"]["weight_bytes"]  # every weight kept
    package = art_dir / data["files"]["program"]["path"]
    spec = ct.utils.load_spec(str(package))
    assert spec.WhichOneof("Type") == "pipeline" and len(ml_programs(spec)) == program["chunks"]
    assert (data["inputs"], data["outputs"]) == (whole["inputs"], whole["outputs"])
    # The chunks hold the whole graph's compute ops (bisect_model adds identities at the cuts and
    # its re-conversion may fold a reshape).
    compute = lambda ops: {op: n for op, n in ops.items() if op not in ("cast", "const", "identity", "reshape")}  # noqa: E731
    assert compute(inspect_package(package)["ops"]) == compute(whole["program"]["ops"])


def test_deployment_target_is_an_option_and_checked():
    from edit_mobile.errors import UserError
    from edit_mobile.export.backends.coreml import deployment_target

    assert deployment_target("iOS18").name == "iOS18"
    with pytest.raises(UserError, match="deployment target"):
        deployment_target("iOS12")


def test_coreml_delegate_takes_the_whole_graph():
    art_dir = exported("tiny-pixart-edit", "coreml-pte")
    data = manifest(art_dir)
    coverage = data["delegation"]
    assert coverage["delegates"] == ["CoreMLBackend"]
    assert coverage["non_delegated_compute"] == {}, coverage["non_delegated_ops"]
    assert coverage["flops_share_delegated"] == 1.0
    assert data["precision"] == "fp16" and data["program"]["minimum_deployment_target"] == "iOS17"
    assert (art_dir / "model.pte").read_bytes()[4:8] == b"ET12"  # ExecuTorch flatbuffer identifier
