"""Output PSNR against the float model, and calibration records regrouped to a program's batch."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

Inputs = tuple[torch.Tensor, ...]


def psnr_db(reference: torch.Tensor, output: torch.Tensor) -> float:
    """20 log10(max|ref| / RMSE); inf when identical."""
    reference, output = reference.detach().double(), output.detach().double()
    rmse = (reference - output).pow(2).mean().sqrt().item()
    peak = reference.abs().max().item()
    if rmse == 0.0:
        return math.inf
    return 20.0 * math.log10(peak / rmse) if peak > 0 else -math.inf


def batched(records: Sequence[Inputs], batch: int) -> list[Inputs]:
    """Batch-1 records concatenated `batch` at a time (a batch-2 program runs both CFG branches)."""
    if batch == 1:
        return list(records)
    groups = [records[i : i + batch] for i in range(0, len(records) - batch + 1, batch)]
    return [tuple(torch.cat(parts) for parts in zip(*group, strict=True)) for group in groups]


def mean_psnr(run: Callable[..., torch.Tensor], references: Sequence[torch.Tensor],
              inputs: Sequence[Inputs]) -> tuple[float, float]:
    """(mean, min) over records of the output PSNR of `run` against `references`."""
    values = []
    with torch.no_grad():
        for reference, record in zip(references, inputs, strict=True):
            values.append(psnr_db(reference, run(*record)))
    finite = [min(v, 200.0) for v in values]  # an exact layer must not make the mean inf
    return sum(finite) / len(finite), min(values)


def reference_outputs(run: Callable[..., torch.Tensor], inputs: Sequence[Inputs]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [run(*record) for record in inputs]
