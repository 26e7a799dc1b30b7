"""A gate that cannot fail is a defect: NaN and inf outputs fail everywhere, named as such."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edit_mobile.closeness import PERFECT_DB, closeness, meets_floor
from edit_mobile.export.manifest import file_entry
from edit_mobile.main import main
from edit_mobile.runtime.metrics import psnr_threshold


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_value_scores_nan_and_meets_no_floor(bad):
    reference = torch.ones(2, 8)
    value = reference.clone()
    value[0, 3] = bad
    for pair in ((reference, value), (value, reference)):
        figures = closeness(*pair)
        assert not figures.finite and math.isnan(figures.psnr_db)
        assert not meets_floor(figures.psnr_db, -PERFECT_DB)
    assert not psnr_threshold("fp32", None).passes([100.0, math.nan])


def test_identical_tensors_zeros_included_score_perfect():
    zeros = torch.zeros(3, 4)
    assert closeness(zeros, zeros).psnr_db == PERFECT_DB
    assert closeness(zeros, zeros + 1e-3).psnr_db == -PERFECT_DB


def _poison_onnx(art: Path) -> None:
    """Make the program return NaN everywhere (an initializer of the output projection set to
    NaN), and re-hash it as an attacker or a broken converter would."""
    manifest = json.loads((art / "manifest.json").read_text())
    model_path = art / manifest["files"]["program"]["path"]
    model = onnx.load(str(model_path))
    initializer = next(i for i in model.graph.initializer if "proj_out" in i.name and i.data_type == onnx.TensorProto.FLOAT)
    poisoned = np.full(numpy_helper.to_array(initializer).shape, np.nan, dtype=np.float32)
    initializer.CopyFrom(numpy_helper.from_array(poisoned, initializer.name))
    onnx.save(model, str(model_path))
    manifest["files"]["program"] = file_entry(art, manifest["files"]["program"]["path"])
    (art / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_an_artifact_whose_output_is_nan_fails_validate_and_generate_writes_nothing(tmp_path, capsys):
    art = tmp_path / "art"
    assert main(["export", "tiny-pixart-edit", "--backend", "onnx", "--resolution", "64", "-o", str(art)]) == 0
    _poison_onnx(art)
    report = tmp_path / "report.json"
    assert main(["validate", str(art), "--samples", "1", "--json", str(report)]) == 1
    out = capsys.readouterr().out
    assert "non-finite output" in out and "PASS" not in out
    data = json.loads(report.read_text())
    assert not data["passed"] and all(row["finite"] is False for row in data["outputs"])
    image = tmp_path / "image.png"
    assert main(["generate", str(art), "--prompt", "a red circle", "--steps", "2", "-o", str(image)]) == 2
    assert "NaN or inf" in capsys.readouterr().err and not image.exists()
