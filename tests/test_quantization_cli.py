"""`edit-mobile sensitivity`: table, JSON and PNG per layer; an unreachable target is an error."""

from __future__ import annotations

import json

from edit_mobile.main import main


def test_sensitivity_writes_a_table_and_a_png_and_says_when_it_cannot(tmp_path, capsys):
    calib = tmp_path / "calib"
    assert main(["calibrate", "tiny-pixart-edit", "--steps", "2", "--samples", "2", "--records", "3",
                 "--heldout-records", "2", "-o", str(calib)]) == 0
    code = main(["sensitivity", "tiny-pixart-edit", "--calibration", str(calib), "--min-psnr", "190",
                 "-o", str(tmp_path / "report")])
    captured = capsys.readouterr()
    assert code == 2
    errors = [line for line in captured.err.splitlines() if "error:" in line]  # besides progress bars
    assert len(errors) == 1 and errors[0].startswith("edit-mobile sensitivity: error:")
    assert "cannot reach 190 dB" in errors[0]
    assert "transformer_blocks.0" in captured.out and "all layers quantized" in captured.out
    report = json.loads((tmp_path / "report" / "sensitivity.json").read_text())
    assert {cost["layer"] for cost in report["layers"]} >= {"pos_embed", "transformer_blocks.1", "proj_out"}
    assert report["choice"]["target_met"] is False
    png = (tmp_path / "report" / "sensitivity.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
