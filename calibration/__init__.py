"""Calibration sets: prompts, text encoders, trajectories through the family's diffusers
sampler, stored as safetensors for quantizers (edit_mobile.export.quantization) and checks.

    from edit_mobile.calibration import load_calibration
    calib = load_calibration("calib/")
    calib.calibration_inputs   # list of input tuples, batch 1, in the denoiser's signature order
    calib.heldout_inputs       # the same for prompts never used to calibrate
"""

from edit_mobile.calibration.calibration_set import (
    CalibrationSet,
    CalibrationSplit,
    load_calibration,
)
from edit_mobile.calibration.capture import CalibrationOptions, capture_calibration, model_sha256
from edit_mobile.calibration.prompts import default_prompts_path, read_prompts

__all__ = [
    "CalibrationOptions",
    "CalibrationSet",
    "CalibrationSplit",
    "capture_calibration",
    "default_prompts_path",
    "load_calibration",
    "model_sha256",
    "read_prompts",
]
