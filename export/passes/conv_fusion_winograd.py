"""Pass `conv_fusion_winograd`: ConvFusion's 3x3 as Winograd F(2x2, 3x3) GEMMs over tokens.

Serves CPU delegates (XNNPACK). ConvFusion's 3x3 (C -> C/r, r = 4 by default) is EDiT's one
convolution with real FLOPs: at 512 px on PixArt-XL width it costs more than the softmax it
replaces (6.1 against 4.8 GFLOP a layer), which is why EDiT's program only reaches parity with
the teacher's there. XNNPACK already runs it near its GEMM rate, so the way to go faster is fewer
multiplications: Winograd's minimal filtering computes each 2 x 2 block of outputs from a 4 x 4
input tile with 16 products instead of 36, so the 3x3 becomes 16 (C -> C/r) GEMMs over a
quarter of the tokens, 2.25x fewer FLOPs (Lavin & Gray 2016, "Fast Algorithms for Convolutional
Neural Networks").

Everything stays in the token layout (B, h, w, C): the input transform is adds of strided views
of the zero-padded tokens, the stride taken by (rows / 2, 2, ...) views as in `compressor_tokens`
(only contiguous slices, which XNNPACK takes); the output transform is adds, and the 2 x 2 blocks
are put back in place by two concatenations, so no transpose is left. Its cost: the 16 transformed
planes, 4x the input's size. float32 error against the convolution ~1e-6 relative (the transform
matrices hold only 0, +-1 and +-1/2). Grouped 3x3s (fusion_groups > 1) are left as convolutions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edit_mobile.export.passes.base import MobilePass, swap_processor_modules
from edit_mobile.export.passes.token_convs import TokenConvFusion, padded_in_pairs
from edit_mobile.models.edit_attention import ConvFusion

# Measured in float32 (docs/bench_runs/conv-fusion-winograd, PixArt-XL width, 2 layers): EDiT
# 3.5% faster at 1024 tokens, 3% at 4096, 2.5% slower at 16384 (2048 px), where the 4x-input tile
# planes (300 MB a layer) leave the cache and the run's memory grows by 360 MiB; int8-dynamic
# was not timed at 2048 px, so its default stops here too.
MAX_DEFAULT_IMAGE_TOKENS = 4096

# F(2, 3): outputs = A^T [(G g) * (B^T d)] for a 3-tap filter g and a 4-sample tile d.
FILTER_TRANSFORM = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def input_transform(d: list[torch.Tensor]) -> list[torch.Tensor]:
    """B^T d over a tile's four samples (B^T = [[1,0,-1,0], [0,1,1,0], [0,-1,1,0], [0,1,0,-1]])."""
    return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def output_transform(m: list[torch.Tensor]) -> list[torch.Tensor]:
    """A^T m over four transformed products (A^T = [[1,1,1,0], [0,1,-1,-1]])."""
    return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


class WinogradConvFusion(TokenConvFusion):
    """ConvFusion on tokens with its 3x3 as Winograd F(2x2, 3x3): 16 GEMMs (C -> C/r) over the
    transformed 4 x 4 tiles, one tile per 2 x 2 block of outputs."""

    def __init__(self, fusion: ConvFusion):
        super().__init__(fusion)
        weight = fusion.local.weight.detach().double()  # (C/r, C, 3, 3)
        transform = FILTER_TRANSFORM.double()
        transformed = torch.einsum("ka,oiab,lb->kloi", transform, weight, transform)  # G g G^T per (o, i)
        # One Linear weight (C/r, C) per transformed position (row, col), row-major; separate
        # parameters, not an indexed stack: an indexed constant leaves select_copy ops outside
        # XNNPACK.
        self.tile_weights = nn.ParameterList(
            nn.Parameter(transformed[row, col].float().contiguous()) for row in range(4) for col in range(4)
        )

    def transformed_planes(self, tokens: torch.Tensor, grid: tuple[int, int]) -> list[torch.Tensor]:
        """B^T d B for every tile: 16 planes (B, h/2, w/2, C), row-major over (k, l)."""
        batch, _, channels = tokens.shape
        padded, rows, cols = padded_in_pairs(tokens, grid)  # one 4 x 4 tile per 2 x 2 output block
        # Tile row i of tile-row t is padded row 2t + i = (row block t + i // 2, phase i % 2).
        row_blocks = padded.view(batch, rows + 1, 2, 2 * cols + 2, channels)
        tile_rows = [row_blocks[:, i // 2 : i // 2 + rows, i % 2 : i % 2 + 1] for i in range(4)]
        planes = []
        for row in input_transform(tile_rows):
            # Columns alike, the column phase folded into the channel axis.
            col_blocks = row.reshape(batch, rows, cols + 1, 2 * channels)
            tile_cols = [col_blocks[:, :, j // 2 : j // 2 + cols, (j % 2) * channels : (j % 2 + 1) * channels]
                         for j in range(4)]
            planes += input_transform(tile_cols)
        return planes

    def local(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        height, width = grid
        batch = tokens.shape[0]
        products = [F.linear(plane, weight) for plane, weight in
                    zip(self.transformed_planes(tokens, grid), self.tile_weights, strict=True)]
        # A^T down each column of the 4 x 4 products, then along the rows: blocks[a][b], the
        # output at offset (a, b) of every 2 x 2 block, (B, h/2, w/2, C/r).
        down = [output_transform(products[col::4]) for col in range(4)]  # down[col][a]
        blocks = [output_transform([down[col][a] for col in range(4)]) for a in range(2)]
        rows, cols = blocks[0][0].shape[1:3]
        # out[2t + a, 2u + b] = blocks[a][b][t, u]: b interleaves columns through the channel
        # axis, a interleaves rows through a size-2 axis; two concatenations, no transpose.
        out_rows = [torch.cat(blocks[a], dim=-1).reshape(batch, rows, 1, 2 * cols, self.reduced) for a in range(2)]
        out = torch.cat(out_rows, dim=2).reshape(batch, 2 * rows, 2 * cols, self.reduced)
        if (2 * rows, 2 * cols) != (height, width):
            out = out[:, :height, :width]
        out = out.reshape(batch, height * width, self.reduced)
        return out if self.local_bias is None else out + self.local_bias


def _is_plain_fusion(module) -> bool:
    local = getattr(module, "local", None)
    return (type(module) is ConvFusion and local.kernel_size == (3, 3) and local.padding == (1, 1)
            and local.stride == (1, 1) and local.groups == 1)


class ConvFusionWinograd(MobilePass):
    name = "conv_fusion_winograd"
    serves = (
        "CPU delegates: ConvFusion's 3x3 as Winograd F(2x2,3x3), 16 token GEMMs with 2.25x fewer "
        "FLOPs, transforms as adds of strided views, no transposes; costs 4x-input tile planes"
    )

    # By measurement (EDiT over the teacher, same rounds, with / without the pass): int8-dynamic
    # 1.22x / 0.99x at 512 px, 2.19x / 1.85x at 1024 px (XNNPACK's dynamic quantizer leaves the
    # 3x3 conv in float32, the tile GEMMs quantize like Linears); float32 1.03x / 0.99x and
    # 1.46x / 1.42x on 2 layers, 1.02x at 28 layers and 512 px (2970 vs 3037 ms, 12 rounds),
    # for 16/9 of the conv's weights (a 28-layer PixArt-XL EDiT's program 2.63 -> 2.87 GB).
    # int8-static: XNNPACK refuses the quantized tiles' zero padding (StaticConstantPad:
    # xnn_status_invalid_parameter), and its conv is int8 already. fp16: not measured.
    default_schemes = ("fp32", "int8-dynamic")

    def applies_to(self, model: nn.Module, image_tokens: int | None = None) -> bool:
        return image_tokens is None or image_tokens <= MAX_DEFAULT_IMAGE_TOKENS

    def apply(self, model: nn.Module) -> int:
        make = lambda m: WinogradConvFusion(m) if _is_plain_fusion(m) else None  # noqa: E731
        return swap_processor_modules(model, ("conv_fusion",), make)
