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
