"""The family's real diffusers sampler, run with classifier-free guidance, recording the
transformer's inputs at the steps asked for.

The scheduler is the family's (edit_mobile.models.families: PixArt-Sigma DPM-Solver++ 2M,
SD3 flow-matching Euler with shift 3.0), or the `scheduler/` folder of a local pipeline folder
(or beside its transformer/), which wins. PixArt's learned-variance half is dropped before the
step, as in PixArtSigmaPipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from edit_mobile.errors import UserError

Branch = TypeVar("Branch")


@dataclass
class StepRecord:
    step: int
    branch: int  # 0 = unconditional, 1 = conditional (the only branch without guidance)
    latents: torch.Tensor  # (1, C, h, w), exactly what the transformer received
    timestep: torch.Tensor  # (1,) float32


def guidance_calls(batch: int, branches: Sequence[Branch]) -> list[list[Branch]]:
    """The denoiser calls that the guidance branches take with an export of `batch`: all in
    one call, one a call, or (a batch-2 export sampled without guidance) the one branch twice.
    The caller concatenates the calls' outputs and keeps the first len(branches) rows."""
    if batch == len(branches):
        return [list(branches)]
    if batch == 1:
        return [[branch] for branch in branches]
    if batch == 2 and len(branches) == 1:
        return [[branches[0], branches[0]]]
    raise UserError(f"the artifact takes batch {batch}; the pipeline needs 1 or {len(branches)}")


def denoise(
    denoiser: Callable[..., torch.Tensor],
    input_names: tuple[str, ...],
    scheduler,
    initial_noise: torch.Tensor,  # (1, C, h, w)
    positive: dict[str, torch.Tensor],  # prompt-level inputs by name, batch 1 each
    negative: dict[str, torch.Tensor] | None,  # the same for "", None without guidance
    steps: int,
    guidance: float,
    keep: Callable[[int, int], bool],
    on_step: Callable[[], None] = lambda: None,
) -> tuple[list[StepRecord], torch.Tensor]:
    """Denoise one sample: the records `keep(step, branch)` asks for, and the final latents."""
    scheduler.set_timesteps(steps)
    branches = [negative, positive] if negative is not None else [positive]
    # G = guidance branches (2: unconditional, conditional; or 1), run as one batch.
    prompt_inputs = {name: torch.cat([b[name] for b in branches]) for name in positive}  # (G, ...)
    latents = initial_noise * getattr(scheduler, "init_noise_sigma", 1.0)  # flow matching: none
    latent_channels = latents.shape[1]
    records = []
    for step, t in enumerate(scheduler.timesteps):
        model_input = torch.cat([latents] * len(branches))  # (G, C, h, w)
        if hasattr(scheduler, "scale_model_input"):
            model_input = scheduler.scale_model_input(model_input, t)
        timestep = t.to(torch.float32).reshape(1).expand(len(branches)).contiguous()  # (G,)
        named = {**prompt_inputs, "hidden_states": model_input, "timestep": timestep}
        with torch.no_grad():
            noise_pred = denoiser(*(named[name] for name in input_names))  # (G, Cout, h, w)
        for branch_index in range(len(branches)):
            branch = branch_index if negative is not None else 1
            if keep(step, branch):
                records.append(StepRecord(step, branch, model_input[branch_index : branch_index + 1].clone(),
                                          timestep[branch_index : branch_index + 1].clone()))
        if negative is not None:
            uncond, cond = noise_pred.chunk(2)
            noise_pred = uncond + guidance * (cond - uncond)
        if noise_pred.shape[1] == 2 * latent_channels:  # learned variance: keep the noise half
            noise_pred = noise_pred[:, :latent_channels]
        latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        on_step()
    return records, latents


def forward_trajectory(
    scheduler,
    clean: torch.Tensor,  # (1, C, h, w) x0
    noise: torch.Tensor,  # (1, C, h, w)
    steps: int,
    branches: tuple[int, ...],
    keep: Callable[[int, int], bool],
    on_step: Callable[[], None] = lambda: None,
) -> list[StepRecord]:
    """Latents of the forward process q(x_t | x_0) at the sampler's timesteps, no model run.

    What a trained denoiser's trajectory looks like at each step, for models without
    trained weights: their own trajectories diverge (a random network does not predict the
    noise, so each solver step extrapolates further), which misrepresents activation ranges.
    """
    scheduler.set_timesteps(steps)
    records = []
    for step, t in enumerate(scheduler.timesteps):
        timestep = t.reshape(1)
        if hasattr(scheduler, "add_noise"):  # DPM-Solver: alpha_t x0 + sigma_t noise
            latents = scheduler.add_noise(clean, noise, timestep)
        else:  # flow matching: (1 - sigma) x0 + sigma noise
            latents = scheduler.scale_noise(clean, timestep, noise)
        if hasattr(scheduler, "scale_model_input"):
            latents = scheduler.scale_model_input(latents, t)
        for branch in branches:
            if keep(step, branch):
                records.append(StepRecord(step, branch, latents.clone(), timestep.to(torch.float32).clone()))
        on_step()
    return records


def spread_order(count: int) -> list[int]:
    """0..count-1 ordered so any prefix is spread evenly: ends first, then midpoints."""
    order: list[int] = []
    seen: set[int] = set()
    parts = 1
    while len(order) < count:
        for i in range(parts + 1):
            index = round(i * (count - 1) / parts)
            if index not in seen:
                seen.add(index)
                order.append(index)
        parts *= 2
    return order


def stratified_choice(
    candidates: Iterable[tuple[int, int, int]], steps: int, budget: int, generator: torch.Generator
) -> set[tuple[int, int, int]]:
    """Pick `budget` (sample, step, branch) keys, the same count from every step (stratum).

    Steps are visited in spread order, so a budget below the step count still spans the
    schedule; within a step the pick is random (seeded).
    """
    strata: dict[int, list[tuple[int, int, int]]] = {step: [] for step in range(steps)}
    for key in candidates:
        strata[key[1]].append(key)
    for step, keys in strata.items():
        permutation = torch.randperm(len(keys), generator=generator).tolist()
        strata[step] = [keys[i] for i in permutation]
    chosen: set[tuple[int, int, int]] = set()
    depth, order = 0, spread_order(steps)
    while len(chosen) < budget and any(depth < len(keys) for keys in strata.values()):
        for step in order:
            if len(chosen) < budget and depth < len(strata[step]):
                chosen.add(strata[step][depth])
        depth += 1
    return chosen
