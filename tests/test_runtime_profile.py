"""edit-mobile profile: the JSON has the promised fields with plausible values."""

from __future__ import annotations

import json

import pytest
from test_runtime_artifacts import artifact

from edit_mobile.main import main


@pytest.mark.parametrize("kind", ["xnnpack", "onnx"])
def test_profile_reports_latency_memory_and_operator_times_that_add_up(kind, tmp_path, capsys):
    path = tmp_path / "profile.json"
    assert main(["profile", str(artifact(kind)), "--iters", "5", "--warmup", "1", "--threads", "1", "--json", str(path)]) == 0
    assert "latency" in capsys.readouterr().out
    result = json.loads(path.read_text())
    latency = result["latency_ms"]
    assert result["threads"] == 1 and latency["runs"] == 5
    assert 0 < latency["min"] <= latency["median"] <= latency["p90"] <= latency["max"]
    assert result["load_ms"] > 0 and result["memory"]["peak_rss_mb"] >= result["memory"]["rss_before_load_mb"] > 0
    operators = result["operators"]
    assert operators["run_ms"] > 0 and operators["ops_total_ms"] > 0
    # Per-operator times add up to about one run: ExecuTorch accounts for each instruction and
    # delegate call; onnxruntime leaves its executor's own time between kernels out.
    low, high = (0.8, 1.2) if kind == "xnnpack" else (0.4, 1.2)
    assert low <= operators["coverage"] <= high, operators["coverage"]
    assert sum(operators["by_kind"].values()) == pytest.approx(operators["ops_total_ms"])
    assert sum(operators["by_block"].values()) == pytest.approx(operators["ops_total_ms"])
    # (norms may be rewritten by export passes into plain arithmetic, so they are not required)
    assert {"attention", "mlp", "conv"} <= set(operators["by_kind"])
    assert {"transformer_blocks.0", "transformer_blocks.1"} <= set(operators["by_block"])
    if kind == "xnnpack":  # ExecuTorch's memory plan, read from the program: at least the output it returns
        memory = result["memory"]
        assert memory["planned_bytes"] >= 1 * 8 * 16 * 16 * 4 and memory["delegate_calls"] >= 1
