"""How close an output is to the reference, and how close it must be.

PSNR here is the convention of Apple's and Qualcomm's converters: 20 log10(max|ref| / RMSE),
the peak being the reference's largest magnitude. SQNR is signal over error power,
10 log10(sum ref^2 / sum err^2). Both are computed in float64.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

# Pass thresholds on PSNR by precision (dB). Quantized artifacts take theirs from the manifest.
PSNR_THRESHOLDS_DB = {"fp32": 60.0, "fp16": 40.0}
QUANTIZED_DEFAULT_DB = 30.0  # Qualcomm's "good"; TARGETS.md asks int8 >= 30 dB
QUANTIZED_MARGIN_DB = 3.0  # runtime kernels and new inputs may sit a little below export's figure
PERFECT_DB = 200.0  # reported instead of infinity when the error is exactly zero


@dataclass
class Closeness:
    psnr_db: float
    sqnr_db: float
    cosine: float
    max_abs: float
    rmse: float
    peak: float

    def as_dict(self) -> dict:
        return {key: _finite(value) for key, value in asdict(self).items()}


def closeness(reference: torch.Tensor, value: torch.Tensor) -> Closeness:
    ref = reference.detach().to(torch.float64).flatten()
    out = value.detach().to(torch.float64).flatten()
    error = out - ref
    rmse = float(error.square().mean().sqrt()) if error.numel() else 0.0
    peak = float(ref.abs().max()) if ref.numel() else 0.0
    error_power = float(error.square().sum())
    signal_power = float(ref.square().sum())
    norms = float(ref.norm() * out.norm())
    return Closeness(
        psnr_db=_ratio_db(peak, rmse, 20.0),
        sqnr_db=_ratio_db(signal_power, error_power, 10.0),
        cosine=float(ref @ out) / norms if norms > 0 else (1.0 if error_power == 0 else 0.0),
        max_abs=float(error.abs().max()) if error.numel() else 0.0,
        rmse=rmse,
        peak=peak,
    )


def _ratio_db(signal: float, noise: float, scale: float) -> float:
    if noise == 0:
        return PERFECT_DB  # identical, zeros included
    if signal == 0:
        return -PERFECT_DB
    return min(PERFECT_DB, scale * math.log10(signal / noise))


def _finite(value: float) -> float:
    return value if math.isfinite(value) else (PERFECT_DB if value > 0 else -PERFECT_DB)


@dataclass(frozen=True)
class Threshold:
    """What an output's PSNR must reach. Float artifacts: every sample (`statistic` "min").
    Quantized artifacts: like with like against export's held-out measurement: the mean over
    samples, and the worst sample against export's worst record, each less a margin."""

    db: float
    source: str
    statistic: str = "min"  # "min" | "mean": which PSNR over samples is held to `db`
    worst_db: float | None = None  # with "mean": the floor for the worst sample

    def passes(self, psnrs: list[float]) -> bool:
        worst = min(psnrs)
        if self.statistic == "min":
            return worst >= self.db
        return sum(psnrs) / len(psnrs) >= self.db and (self.worst_db is None or worst >= self.worst_db)

    def describe(self) -> str:
        statistic = "every sample" if self.statistic == "min" else "mean over samples"
        floor = f", worst >= {self.worst_db:.1f} dB" if self.worst_db is not None else ""
        return f"PSNR >= {self.db:.1f} dB ({statistic}{floor}; {self.source})"


def psnr_threshold(precision: str, quantization: dict | None) -> Threshold:
    """The bar for an artifact: by precision, or from the manifest's quantization record
    (an explicit psnr_threshold_db, else the --min-psnr target or the held-out mean export
    measured, less QUANTIZED_MARGIN_DB for the runtime's own int8 kernels)."""
    if not quantization:
        return Threshold(PSNR_THRESHOLDS_DB[precision], precision)
    scheme = quantization.get("scheme", "quantized")
    if quantization.get("psnr_threshold_db") is not None:
        return Threshold(float(quantization["psnr_threshold_db"]), f"{scheme}: manifest quantization.psnr_threshold_db", "mean")
    worst = _finite_or_none(quantization.get("heldout_psnr_min_db"))
    worst = None if worst is None else worst - QUANTIZED_MARGIN_DB
    for key, what in (("min_psnr_db", "export's --min-psnr target"), ("heldout_psnr_db", "export's held-out mean")):
        measured = _finite_or_none(quantization.get(key))
        if measured is not None:
            return Threshold(measured - QUANTIZED_MARGIN_DB, f"{scheme}: {what} {measured:.1f} dB - {QUANTIZED_MARGIN_DB:g}", "mean", worst)
    return Threshold(QUANTIZED_DEFAULT_DB, f"{scheme}: default for quantized artifacts", "mean")


def _finite_or_none(value) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None
