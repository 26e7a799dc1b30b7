"""Output PSNR against the float model, and calibration records regrouped to a program's batch."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from edit_mobile.closeness import psnr_db as closeness_psnr_db

Inputs = tuple[torch.Tensor, ...]


def psnr_db(reference: torch.Tensor, output: torch.Tensor) -> float:
    """20 log10(max|ref| / RMSE) as edit_mobile.closeness defines it (200 when identical, NaN
    when either side is not finite)."""
    return closeness_psnr_db(reference, output)


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
    if any(math.isnan(v) for v in values):  # a non-finite output meets no target
        return math.nan, math.nan
    return sum(values) / len(values), min(values)


def reference_outputs(run: Callable[..., torch.Tensor], inputs: Sequence[Inputs]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [run(*record) for record in inputs]
