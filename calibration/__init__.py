"""Calibration sets: prompts, text encoders, trajectories through the family's diffusers
sampler, stored as safetensors for quantizers (edit_mobile.export.quantization) and checks.

    from edit_mobile.calibration import load_calibration
    calib = load_calibration("calib/")
    calib.calibration_inputs   # list of input tuples, batch 1, in the denoiser's signature order
    calib.heldout_inputs       # the same for prompts never used to calibrate
"""

# Loaded on first use: `edit-mobile --help` imports this package's cli module and must not pull
# in torch for a usage line.
from edit_mobile.safe_read import lazy_exports

_LAZY = {
    "CalibrationSet": "edit_mobile.calibration.calibration_set",
    "CalibrationSplit": "edit_mobile.calibration.calibration_set",
    "load_calibration": "edit_mobile.calibration.calibration_set",
    "CalibrationOptions": "edit_mobile.calibration.capture",
    "capture_calibration": "edit_mobile.calibration.capture",
    "model_sha256": "edit_mobile.calibration.capture",
    "default_prompts_path": "edit_mobile.calibration.prompts",
    "read_prompts": "edit_mobile.calibration.prompts",
}


__getattr__ = lazy_exports(__name__, _LAZY)


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
