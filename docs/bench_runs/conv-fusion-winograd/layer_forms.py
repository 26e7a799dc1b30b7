"""ConvFusion's 3x3 alone (PixArt-XL width, C = 1152 -> 288), token in, token out, as XNNPACK
programs in the ExecuTorch runtime, same rounds: the convolution (what the default export ran),
Winograd F(2x2, 3x3) as the `conv_fusion_winograd` pass builds it, and a 1-D variant (F(2, 3)
along columns, the three row taps direct, concatenated into 4 wider GEMMs) that was tried.

    python docs/bench_runs/conv-fusion-winograd/layer_forms.py 512
"""

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from executorch.runtime import Runtime
from torch import nn

from edit_mobile.export.passes.conv_fusion_winograd import (
    FILTER_TRANSFORM,
    WinogradConvFusion,
    input_transform,
    output_transform,
)
from edit_mobile.models.config import EDiTConfig
from edit_mobile.models.edit_attention import ConvFusion, image_to_tokens, tokens_to_image

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from export_latency import lower_xnnpack  # noqa: E402


class Convolution(nn.Module):
    def __init__(self, fusion: ConvFusion, grid):
        super().__init__()
        self.conv, self.grid = fusion.local, grid

    def forward(self, tokens):
        return image_to_tokens(self.conv(tokens_to_image(tokens, self.grid)))


class Winograd(nn.Module):
    def __init__(self, fusion: ConvFusion, grid):
        super().__init__()
        self.form, self.grid = WinogradConvFusion(fusion), grid

    def forward(self, tokens):
        return self.form.local(tokens, self.grid)


class ColumnWinograd(nn.Module):
    """F(2, 3) along columns only: 4 GEMMs (C -> 3 C/r, one output block per row tap), then
    the row taps as shifted adds. 1.5x fewer FLOPs than the conv (Winograd 2D: 2.25x)."""

    def __init__(self, fusion: ConvFusion, grid):
        super().__init__()
        weight = fusion.local.weight.detach().double()  # (O, I, row tap, col tap)
        per_col = torch.einsum("lb,oiab->laoi", FILTER_TRANSFORM.double(), weight)  # (4, 3, O, I)
        self.weights = nn.ParameterList(nn.Parameter(w.reshape(-1, w.shape[-1]).float().contiguous()) for w in per_col)
        self.bias = fusion.local.bias
        self.grid, self.out = grid, fusion.local.out_channels

    def forward(self, tokens):
        (height, width), out = self.grid, self.out
        batch, _, channels = tokens.shape
        cols = width // 2
        blocks = F.pad(tokens.view(batch, height, width, channels), (0, 0, 1, 1)).reshape(batch, height, cols + 1, 2 * channels)
        taps = [blocks[:, :, j // 2 : j // 2 + cols, (j % 2) * channels : (j % 2 + 1) * channels] for j in range(4)]
        products = [F.linear(plane, w) for plane, w in zip(input_transform(taps), self.weights, strict=True)]
        halves = []
        for half in output_transform(products):
            padded = F.pad(half, (0, 0, 0, 0, 1, 1))
            halves.append(sum(padded[:, a : a + height, :, a * out : (a + 1) * out] for a in range(3)))
        return torch.cat(halves, -1).reshape(batch, height * width, out) + self.bias


def runner(model, tokens):
    program, _ = lower_xnnpack(torch.export.export(model, (tokens,)))
    loaded = Runtime.get().load_program(program.buffer)
    method = loaded.load_method("forward")

    def run():
        return method.execute([tokens])[0]

    run.program = loaded
    return run


def main() -> None:
    px, channels = int(sys.argv[1]), 1152
    grid = (px // 16, px // 16)
    torch.manual_seed(0)
    fusion = ConvFusion(channels, EDiTConfig()).eval()
    tokens = torch.randn(1, grid[0] * grid[1], channels)
    forms = {"convolution": Convolution(fusion, grid), "winograd 2-D (the pass)": Winograd(fusion, grid),
             "winograd along columns": ColumnWinograd(fusion, grid)}
    with torch.no_grad():
        want = forms["convolution"](tokens)
    runs = {name: runner(form.eval(), tokens) for name, form in forms.items()}
    times = {name: [] for name in runs}
    for _ in range(15):
        for name, run in runs.items():
            run()
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1000)
    flops = 2 * grid[0] * grid[1] * channels * (channels // 4) * 9
    for name, ms in times.items():
        ms.sort()
        error = (runs[name]() - want).abs().max().item()
        print(f"{px} px {name}: median {ms[len(ms) // 2]:.2f} ms, fastest {ms[0]:.2f} "
              f"(the conv's {flops / 1e9:.1f} GFLOP at {flops / ms[0] / 1e6:.0f} GFLOP/s), max diff {error:.1e}")


if __name__ == "__main__":
    main()
