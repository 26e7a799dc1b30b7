"""The noising process and the task target a teacher was trained with, read from its scheduler.

DDPM-family schedulers (DPM-Solver, DDIM, Euler...): x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise,
t uniform over the training timesteps, target noise (epsilon) or v per `prediction_type`.
Flow matching (SD3's FlowMatchEulerDiscreteScheduler, or DPM-Solver on flow sigmas as SANA
samples): x_s = (1 - s) x0 + s noise, s logit-normal shifted by the scheduler's shift (`shift`,
or `flow_shift` on flow sigmas), target noise - x0, timestep 1000 s.

Each sample draws its noise and time from its own generator, seeded by (seed, step, sample's
index in the global batch), so a run gives the same batches whatever the number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def sample_generator(seed: int, step: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 65_537 + index)


@dataclass
class Noised:
    latents: torch.Tensor  # (B, C, h, w) what the denoiser sees
    timestep: torch.Tensor  # (B,) float, in the model's timestep units
    target: torch.Tensor  # (B, C, h, w) the task loss's target


class DiffusionObjective:
    """DDPM-family schedulers: alphas_cumprod and prediction_type from the config."""

    def __init__(self, scheduler):
        self.alphas = scheduler.alphas_cumprod.float()
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type {self.prediction_type!r} is not supported for distillation")

    def noised(self, x0: torch.Tensor, generators: list[torch.Generator]) -> Noised:
        t = torch.cat([torch.randint(0, len(self.alphas), (1,), generator=g) for g in generators])
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in generators])
        a = self.alphas[t].view(-1, 1, 1, 1)
        latents = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = noise if self.prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
        return Noised(latents, t.float(), target)


class FlowObjective:
    """Rectified flow as SD3 trains it (logit-normal times, shifted like the sampler)."""

    def __init__(self, scheduler):
        config = scheduler.config
        self.shift = float(config.get("flow_shift", 1.0) if config.get("use_flow_sigmas") else config.get("shift", 1.0))

    def noised(self, x0: torch.Tensor, generators: list[torch.Generator]) -> Noised:
        u = torch.sigmoid(torch.cat([torch.randn(1, generator=g) for g in generators]))
        sigma = self.shift * u / (1 + (self.shift - 1) * u)
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in generators])
        s = sigma.view(-1, 1, 1, 1)
        return Noised((1 - s) * x0 + s * noise, sigma * 1000, noise - x0)


def objective_for(scheduler):
    if hasattr(scheduler, "alphas_cumprod") and not scheduler.config.get("use_flow_sigmas", False):
        return DiffusionObjective(scheduler)
    return FlowObjective(scheduler)
