"""Program-data separation: a program whose weights pass 2 GB exports through the XNNPACK
backend (weights to model.ptd, the bundled program without them) and runs in the ExecuTorch
runtime. Before it, a real-size export died writing its bundle: flatbuffers cannot grow a
buffer beyond 2 GB."""

from __future__ import annotations

import torch

from edit_mobile.export.backends.base import LoweringJob
from edit_mobile.export.backends.xnnpack import BACKEND, EXTERNAL_WEIGHTS_FROM_BYTES, weight_bytes

WIDTH = 23_200  # one 23200 x 23200 float32 weight: 2.15 GB, past the 2 GiB flatbuffer limit


class WideLayer(torch.nn.Module):
    """One linear layer, its weight the identity on the first columns and zero elsewhere:
    cheap to build, and its output (the input) shows the weights were read correctly."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(WIDTH, WIDTH, bias=False)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight.fill_diagonal_(1.0)

    def forward(self, x):
        return self.linear(x)


def test_a_program_with_weights_past_2_gb_exports_and_runs(tmp_path):
    from executorch.runtime import Runtime

    model = WideLayer().eval()
    inputs = (torch.linspace(-1, 1, WIDTH).reshape(1, WIDTH),)
    exported = torch.export.export(model, inputs)
    assert weight_bytes(exported) > 2**31 > EXTERNAL_WEIGHTS_FROM_BYTES  # so `auto` keeps them outside
    job = LoweringJob(exported, inputs, (inputs[0].clone(),), ["x"], ["y"], "fp32", options={})
    del model

    result = BACKEND.lower(job, tmp_path)
    del job, exported
    sizes = {role: (tmp_path / name).stat().st_size for role, name in result.files.items()}
    assert result.program["weights"] == "external"
    assert sizes["weights"] > 2**31
    # No second copy of the weights: not in the program, the bundle, nor the ETRecord.
    assert max(sizes["program"], sizes["bundled_program"], sizes["etrecord"]) < 2**20, sizes

    program = Runtime.get().load_program(tmp_path / result.files["program"],
                                         data_path=tmp_path / result.files["weights"])
    (output,) = program.load_method("forward").execute(list(inputs))
    torch.testing.assert_close(output, inputs[0], rtol=0, atol=1e-6)
