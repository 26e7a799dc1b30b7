"""How close an artifact's output must be to the reference (the figures: edit_mobile.closeness).

Every artifact is judged on its worst sample against an absolute floor: fp32 60 dB, fp16 40 dB,
quantized 30 dB by default (an option). A quantized artifact is judged on held-out calibration
records, worst record of every timestep bucket; never on what export measured of itself, so
the verdict cannot drift with the set export happened to use. NaN (a non-finite output) fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edit_mobile.closeness import PERFECT_DB, PSNR_FLOORS_DB, Closeness, closeness, meets_floor

__all__ = ["PERFECT_DB", "Closeness", "Threshold", "closeness", "psnr_threshold", "timestep_buckets"]

TIMESTEP_BUCKETS = 4  # equal shares of the diffusion time [0, 1000): noisy to clean


@dataclass(frozen=True)
class Threshold:
    """What every sample's PSNR must reach."""

    db: float
    source: str

    def passes(self, psnrs: list[float]) -> bool:
        return bool(psnrs) and all(meets_floor(value, self.db) for value in psnrs)

    def describe(self) -> str:
        return f"PSNR >= {self.db:.1f} dB on every sample ({self.source})"


def psnr_threshold(precision: str, quantization: dict | None, quantized_floor_db: float | None = None) -> Threshold:
    """The floor for an artifact: by precision, or the quantized floor (default 30 dB)."""
    if not quantization:
        return Threshold(PSNR_FLOORS_DB[precision], precision)
    floor = PSNR_FLOORS_DB["quantized"] if quantized_floor_db is None else float(quantized_floor_db)
    origin = "default" if quantized_floor_db is None else "--quantized-floor"
    return Threshold(floor, f"{quantization.get('scheme', 'quantized')}: {origin} floor for quantized artifacts")


def timestep_bucket(timestep: float) -> str:
    width = 1000 / TIMESTEP_BUCKETS
    index = min(TIMESTEP_BUCKETS - 1, max(0, int(timestep // width)))
    return f"t {index * width:.0f}-{(index + 1) * width:.0f}"


def timestep_buckets(timesteps: list[float], psnrs: list[float]) -> list[dict]:
    """Mean and worst PSNR per timestep bucket, in time order."""
    groups: dict[str, list[float]] = {}
    for timestep, value in sorted(zip(timesteps, psnrs, strict=True)):
        groups.setdefault(timestep_bucket(timestep), []).append(value)
    return [{"bucket": name, "n": len(values), "psnr_db_mean": _mean(values), "psnr_db_min": _worst(values)}
            for name, values in groups.items()]


def _mean(values: list[float]) -> float:
    return math.nan if any(math.isnan(v) for v in values) else sum(values) / len(values)


def _worst(values: list[float]) -> float:
    return math.nan if any(math.isnan(v) for v in values) else min(values)
