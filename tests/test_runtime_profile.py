"""edit-mobile profile: the JSON has the promised fields with plausible values."""

from __future__ import annotations

import json

import pytest
import torch
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
    assert {"attention", "mlp", "conv"} <= set(operators["by_kind"]), (operators["by_kind"], operators["by_op"])
    assert {"transformer_blocks.0", "transformer_blocks.1"} <= set(operators["by_block"])
    if kind == "xnnpack":  # ExecuTorch's memory plan, read from the program: at least the output it returns
        memory = result["memory"]
        assert memory["planned_bytes"] >= 1 * 8 * 16 * 16 * 4 and memory["delegate_calls"] >= 1


class WideLinear(torch.nn.Module):
    """A 1x1 convolution (which XNNPACK runs as a GEMM, so counting GEMMs misattributes every
    one after it), then two narrow Linears and one 20x wider, all in one delegate."""

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Conv2d(64, 64, 1)
        self.first, self.second = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)
        self.wide = torch.nn.Linear(64, 64 * 20)

    def forward(self, image):
        tokens = self.mix(image).flatten(2).transpose(1, 2)  # (1, 1024, 64)
        return self.second(self.first(tokens)), self.wide(tokens)


def test_delegate_time_lands_on_the_module_that_spends_it(tmp_path):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools import Inspector
    from executorch.devtools.etrecord import parse_etrecord
    from executorch.runtime import Runtime

    from edit_mobile.export.backends.executorch_program import lower
    from edit_mobile.runtime.profile_executorch import attribute_events

    inputs = (torch.randn(1, 64, 32, 32),)
    edge, _ = lower(torch.export.export(WideLinear().eval(), inputs), [XnnpackPartitioner()], generate_etrecord=True)
    program = edge.to_executorch()
    (tmp_path / "model.pte").write_bytes(program.buffer)
    program.get_etrecord().save(str(tmp_path / "etrecord.bin"))
    loaded = Runtime.get().load_program(tmp_path / "model.pte", enable_etdump=True, debug_buffer_size=0)
    method = loaded.load_method("forward")
    for _ in range(4):
        method.execute(list(inputs))
    loaded.write_etdump_result_to_file(str(tmp_path / "run.etdp"), str(tmp_path / "debug.bin"))
    inspector = Inspector(etdump_path=str(tmp_path / "run.etdp"), etrecord=str(tmp_path / "etrecord.bin"))
    profile = attribute_events(inspector, parse_etrecord(str(tmp_path / "etrecord.bin")), tmp_path / "model.pte")
    by_module = profile.grouped(lambda op: op.module if op.kind != "overhead" else "(overhead)")
    linears = {module: ms for module, ms in by_module.items() if module in ("mix", "first", "second", "wide")}
    assert set(linears) == {"mix", "first", "second", "wide"}, by_module
    assert max(linears, key=linears.get) == "wide", linears
    assert linears["wide"] > 3 * max(linears[m] for m in ("mix", "first", "second")), linears
