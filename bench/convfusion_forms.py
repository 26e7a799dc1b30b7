"""What lighter ConvFusion forms cost in accuracy and save in FLOPs: a distillation proxy.

The speed targets (docs/targets.md) are for the default ConvFusion form; a lighter form (grouped 3x3) can replace it only once its accuracy cost is measured.
No trained PixArt-Sigma weights are reachable here, so this measures a proxy: one attention
layer at PixArt-Sigma XL width (1152, 16 heads) whose query/key weights are scaled so its
softmax is peaked, as trained attention is, fed token grids with spatial structure (smoothed
noise). Each EDiT form starts from that teacher (conversion initialisation) and is distilled on
its attention output (the paper's per-layer feature loss) for the same number of steps; we
report held-out PSNR of the attention output vs the teacher and the layer's FLOPs at 1024 px.
Absolute numbers say little about a trained model; the ranking and the gaps are the point.

    python bench/convfusion_forms.py [--steps 150] [--grid 32]
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from edit_mobile.models import EDiTAttnProcessor, EDiTConfig

WIDTH, HEADS = 1152, 16


def smooth_tokens(batch: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    """(B, grid*grid, C) tokens with local correlation: blurred noise plus fine noise."""
    noise = torch.randn(batch, WIDTH, grid, grid, generator=generator)
    blurred = F.avg_pool2d(F.avg_pool2d(noise, 5, 1, 2), 5, 1, 2) * 3
    image = blurred + 0.3 * torch.randn(batch, WIDTH, grid, grid, generator=generator)
    return image.flatten(2).transpose(1, 2)


class NoFusion(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(image)


def make_teacher(sharpness: float) -> Attention:
    teacher = Attention(query_dim=WIDTH, heads=HEADS, dim_head=WIDTH // HEADS, bias=True)
    with torch.no_grad():
        teacher.to_q.weight.mul_(sharpness)
        teacher.to_k.weight.mul_(sharpness)
    return teacher.eval()


def make_student(teacher: Attention, groups: int | None, grid: int) -> Attention:
    student = copy.deepcopy(teacher)
    processor = EDiTAttnProcessor(WIDTH, EDiTConfig(fusion_groups=groups or 1))
    processor.token_grid = (grid, grid)
    if groups is None:  # no ConvFusion at all: the baseline that shows what it buys
        processor.conv_fusion = NoFusion()
    student.set_processor(processor)
    return student.train()


def psnr(reference: torch.Tensor, output: torch.Tensor) -> float:
    rmse = (reference - output).pow(2).mean().sqrt()
    return float(20 * torch.log10(reference.abs().max() / rmse))


def layer_gflops(module: Attention, tokens: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(tokens)
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--grid", type=int, default=32, help="token grid side (32 = 512 px)")
    parser.add_argument("--sharpness", type=float, default=3.0, help="teacher q/k weight scale")
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = make_teacher(args.sharpness)
    heldout = smooth_tokens(2, args.grid, torch.Generator().manual_seed(123))
    with torch.no_grad():
        target = teacher(heldout)
    forms = {"none": None, "full (default)": 1, "grouped g=8": 8, "grouped g=32": 32}
    flops_tokens = torch.randn(1, 64 * 64, WIDTH, device="meta")
    print(f"proxy: one attention layer, width {WIDTH}, {HEADS} heads, {args.grid}x{args.grid} tokens, "
          f"{args.steps} distillation steps each")
    print(f"{'ConvFusion form':<16} {'start PSNR':>10} {'end PSNR':>9} {'layer GFLOP @1024px':>20}")
    for label, groups in forms.items():
        student = make_student(teacher, groups, args.grid)
        with torch.no_grad():
            start = psnr(target, student(heldout))
        optimiser = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=2e-4)
        generator = torch.Generator().manual_seed(7)
        for _ in tqdm(range(args.steps), desc=label, leave=False):
            tokens = smooth_tokens(2, args.grid, generator)
            with torch.no_grad():
                wanted = teacher(tokens)
            loss = F.mse_loss(student(tokens), wanted)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            end = psnr(target, student(heldout))
        with torch.device("meta"):
            shape_only = make_student(make_teacher(1.0), groups, 64)  # 64x64 tokens = 1024 px
        print(f"{label:<16} {start:>10.2f} {end:>9.2f} {layer_gflops(shape_only, flops_tokens):>20.1f}")


if __name__ == "__main__":
    main()
