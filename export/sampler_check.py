"""A quantized denoise method judged where errors add up: whole sampler runs.

One step's held-out PSNR (--min-psnr's measure) does not bound the image: twenty guided steps
feed each step's error into the next. So a quantized pipeline also re-runs the calibration
set's held-out prompts from their recorded noise, through the family's scheduler, with the
float and the quantized denoiser, decodes both with the VAE and compares the images, held to
the image floor `validate --pipeline` holds the artifact to (closeness.IMAGE_FLOORS_DB).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from edit_mobile.calibration.sampler import guidance_calls
from edit_mobile.closeness import IMAGE_FLOORS_DB, meets_floor, peak_psnr_db

MAX_PROMPTS = 4  # held-out prompts replayed: enough to catch a drifting one, cheap at phone sizes


@dataclass
class SamplerImageCheck:
    """Callable on a quantized denoiser module: True when every replayed image clears the floor.
    `record` holds the last measurement for the manifest."""

    reference: torch.nn.Module  # the float denoiser, positional inputs in `input_names` order
    decoder: torch.nn.Module  # unit-scale latents -> [0, 1] image
    scheduler: object
    calibration: object  # CalibrationSet
    input_names: tuple[str, ...]
    batch: int
    floor_db: float = IMAGE_FLOORS_DB["quantized"]
    record: dict = field(default_factory=dict)
    _references: list = field(default_factory=list)

    def __post_init__(self):
        self.trajectories = self.calibration.heldout_trajectories()[:MAX_PROMPTS]
        self.steps = int(self.calibration.manifest["steps"])
        self.guidance = float(self.calibration.manifest["guidance"])

    def __call__(self, module) -> bool:
        if not self.trajectories:
            self.record = {"prompts": 0, "passed": None, "why": "the calibration set has no replayable held-out prompt"}
            return True
        if not self._references:
            self._references = [self._image(self.reference, t) for t in self.trajectories]
        psnrs = [peak_psnr_db(reference, self._image(module, t), 1.0)
                 for reference, t in zip(self._references, self.trajectories, strict=True)]
        passed = all(meets_floor(value, self.floor_db) for value in psnrs)
        self.record = {"prompts": len(psnrs), "steps": self.steps, "guidance": self.guidance,
                       "image_psnr_db": psnrs, "floor_db": self.floor_db, "passed": passed}
        return passed

    @torch.no_grad()
    def _image(self, denoiser, trajectory) -> torch.Tensor:
        from edit_mobile.calibration.sampler import denoise

        _, latents = denoise(in_batches(denoiser, self.batch), self.input_names, copy.deepcopy(self.scheduler),
                             trajectory.noise, trajectory.positive, trajectory.negative, self.steps,
                             self.guidance, keep=lambda step, branch: False)
        return self.decoder(latents)


def in_batches(denoiser, batch: int):
    """The denoiser called on the sampler's guidance branches (rows) in the calls a traced
    program of `batch` takes (calibration.sampler.guidance_calls, as the runtime does)."""

    def call(*inputs: torch.Tensor) -> torch.Tensor:
        rows = inputs[0].shape[0]
        calls = guidance_calls(batch, range(rows))
        return torch.cat([denoiser(*(x[list(group)] for x in inputs)) for group in calls])[:rows]

    return call
