"""How close an output is to its reference, and how close it must be: one definition for the
whole toolchain (the demo apps implement the same one; tests/test_demo_apps.py checks them).

PSNR is the convention of Apple's and Qualcomm's converters: 20 log10(max|ref| / RMSE), the
peak being the reference's largest magnitude. SQNR is 10 log10(sum ref^2 / sum err^2). Both in
float64. Exactly equal tensors (all-zero ones included) score PERFECT_DB; a zero reference with
any error scores -PERFECT_DB. A NaN or inf anywhere in either tensor makes every figure NaN, and
NaN passes no floor: `meets_floor` is the only comparison gates use.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

PERFECT_DB = 200.0
# Floors by precision (dB PSNR vs the PyTorch reference): Apple rejects float conversions
# below 35 dB, Qualcomm calls > 30 dB good; ours are stricter for float.
PSNR_FLOORS_DB = {"fp32": 60.0, "fp16": 40.0, "quantized": 30.0}
# Image floors (PSNR over [0, 1] pixels) of a whole pipeline's images against diffusers'. quantized:
# measured on the shapes PixArt teacher's int8 pipeline (--min-psnr 30): images 29.5 and 30.6 dB on
# the default prompts, 32.9 dB mean over 96 captions, prompt accuracy within 0.06 of float; with
# every layer int8 (below export's floor) 21.1 dB and 0.19 accuracy lost. 25 dB parts them.
IMAGE_FLOORS_DB = {"fp32": 40.0, "fp16": 25.0, "quantized": 25.0}


@dataclass
class Closeness:
    psnr_db: float
    sqnr_db: float
    cosine: float
    max_abs: float
    rmse: float
    peak: float
    finite: bool = True  # False: the value (or reference) holds NaN or inf

    def as_dict(self) -> dict:
        # JSON has no NaN: a non-finite figure is written as null, with finite false beside it.
        return {key: (value if not isinstance(value, float) or math.isfinite(value) else None)
                for key, value in asdict(self).items()}


def closeness(reference, value) -> Closeness:
    """Figures for `value` against `reference` (torch tensors or numpy arrays of one shape)."""
    import numpy as np

    ref = _float64(reference)
    out = _float64(value)
    if ref.shape != out.shape:
        raise ValueError(f"shapes differ: reference {list(ref.shape)}, value {list(out.shape)}")
    if not (np.isfinite(ref).all() and np.isfinite(out).all()):
        nan = math.nan
        return Closeness(nan, nan, nan, nan, nan, nan, finite=False)
    ref, out = ref.ravel(), out.ravel()
    error = out - ref
    error_power = float(np.square(error).sum())
    signal_power = float(np.square(ref).sum())
    rmse = math.sqrt(error_power / error.size) if error.size else 0.0
    peak = float(np.abs(ref).max()) if ref.size else 0.0
    norms = float(np.linalg.norm(ref) * np.linalg.norm(out))
    return Closeness(
        psnr_db=ratio_db(peak, rmse, 20.0),
        sqnr_db=ratio_db(signal_power, error_power, 10.0),
        cosine=float(ref @ out) / norms if norms > 0 else (1.0 if error_power == 0 else 0.0),
        max_abs=float(np.abs(error).max()) if error.size else 0.0,
        rmse=rmse,
        peak=peak,
    )


def psnr_db(reference, value) -> float:
    return closeness(reference, value).psnr_db


def peak_psnr_db(reference, value, peak: float) -> float:
    """PSNR against a fixed peak, the image convention (255 for 8-bit pixels, 1.0 for [0, 1]
    floats): 20 log10(peak / RMSE) in float64; identical -> PERFECT_DB; NaN if either holds a
    non-finite value (NaN meets no floor)."""
    import numpy as np

    error = np.sqrt(np.mean((_float64(reference) - _float64(value)) ** 2))
    return ratio_db(peak, float(error), 20.0) if math.isfinite(error) else math.nan


def ratio_db(signal: float, noise: float, scale: float) -> float:
    if noise == 0:
        return PERFECT_DB  # identical, zeros included
    if signal == 0:
        return -PERFECT_DB
    return max(-PERFECT_DB, min(PERFECT_DB, scale * math.log10(signal / noise)))


def meets_floor(psnr: float, floor_db: float) -> bool:
    """NaN (a non-finite output) meets no floor."""
    return not math.isnan(psnr) and psnr >= floor_db


def _float64(tensor):
    import numpy as np

    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu().to(dtype=_torch_float64()).numpy()
    return np.asarray(tensor, dtype=np.float64)


def _torch_float64():
    import torch

    return torch.float64
