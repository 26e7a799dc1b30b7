"""The distillation loop on torch.distributed: one process, or N under `torchrun` (gloo on CPU,
NCCL on GPUs). Every process holds the teacher and the data; each takes its share of the global
batch and the gradients are averaged over processes, so N processes follow one process's run
with the same global batch (up to the order of floating-point sums). The student is replicated
(DDP) or, with `shard`, split over the processes (FSDP2 `fully_shard`, one unit per transformer
block: parameters, gradients and optimizer state 1/N each, a block gathered while it runs).

Checkpoints (every K steps, rank 0, written to a staging folder and renamed into place): the
trained parameters (safetensors), the optimizer state, the step and the run's options; sharded
runs gather both to full tensors first (torch.distributed.checkpoint's full state dicts), so a
checkpoint does not depend on the number of processes that wrote it. Batches, noise and caption
dropout are functions of (seed, step, sample index), and the learning rate of the step, so a
resumed run continues exactly where the checkpoint stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from edit_mobile.distill.losses import (
    AttentionTaps,
    LossWeights,
    distillation_losses,
    parameters_to_train,
    swapped_attention_names,
)
from edit_mobile.distill.objective import sample_generator
from edit_mobile.errors import UserError

CHECKPOINT = "checkpoint"


@dataclass
class DistillOptions:
    schedule: list[tuple[int, int]] = field(default_factory=lambda: [(256, 200)])  # (pixels, steps)
    batch: int = 8  # global, over all processes
    lr: float = 2e-4
    weights: LossWeights = LossWeights()
    train: str = "attention"
    seed: int = 0
    checkpoint_every: int = 100
    caption_dropout: float = 0.1  # the student keeps the unconditional branch guidance needs
    accumulate: int = 1
    gradient_checkpointing: bool = False
    bf16: bool = False
    shard: bool = False  # FSDP2 instead of DDP

    @property
    def total_steps(self) -> int:
        return sum(steps for _, steps in self.schedule)

    def stage_at(self, step: int) -> int:
        """The schedule stage a global step belongs to."""
        for index, (_, steps) in enumerate(self.schedule):
            if step < steps:
                return index
            step -= steps
        return len(self.schedule) - 1

    def to_dict(self) -> dict:
        return {**asdict(self), "weights": asdict(self.weights)}


def parse_schedule(text: str) -> list[tuple[int, int]]:
    """"256:2000,512:1000" -> [(256, 2000), (512, 1000)]."""
    stages = []
    for part in text.split(","):
        pixels, _, steps = part.partition(":")
        if not (pixels.strip().isdigit() and steps.strip().isdigit()) or int(pixels) < 8 or int(steps) < 1:
            raise ValueError(f"{part!r} is not PIXELS:STEPS")
        stages.append((int(pixels), int(steps)))
    return stages


class Distributed:
    """Rank and world size: torchrun's environment when present, else one process. `shard`
    needs a process group even for one process (FSDP2's device mesh): an in-memory one then."""

    def __init__(self, shard: bool = False):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = torch.device("cpu")
        self.owns_group = (self.world > 1 or shard) and not dist.is_initialized()
        if self.owns_group:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            if self.world > 1:
                dist.init_process_group(backend)
            else:
                dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return values
        tensor = torch.tensor(list(values.values()), dtype=torch.float64)
        dist.all_reduce(tensor)
        return dict(zip(values, (tensor / self.world).tolist(), strict=True))

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def shard_blocks(student) -> None:
    """FSDP2: each transformer block its own unit (gathered only while it runs), the rest with
    the root. Parameters become DTensors in place; the optimizer is made afterwards."""
    from torch.distributed.fsdp import fully_shard

    for blocks in student.children():
        if isinstance(blocks, torch.nn.ModuleList):
            for block in blocks:
                fully_shard(block)
    fully_shard(student)


def learning_rate(step: int, options: DistillOptions) -> float:
    warmup = min(50, max(1, options.total_steps // 10))
    if step < warmup:
        return options.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, options.total_steps - warmup)
    return options.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class Distiller:
    def __init__(self, teacher, student, data_by_stage: list, objective, options: DistillOptions, work: Path,
                 distributed: Distributed):
        """`data_by_stage`: a DistillSet per schedule stage; `objective`: the teacher's (objective.py)."""
        from edit_mobile.models.signature import DenoiserWrapper

        self.options = options
        self.work = work
        self.env = distributed
        if options.batch % (distributed.world * options.accumulate):
            raise UserError(f"--batch {options.batch} must divide into {distributed.world} processes x "
                            f"{options.accumulate} accumulation steps")
        self.data_by_stage = data_by_stage
        self.objective = objective
        self.teacher = DenoiserWrapper(teacher.eval().requires_grad_(False)).to(distributed.device)
        self.student_model = student
        trained = set(parameters_to_train(student, options.train))
        for name, parameter in student.named_parameters():
            parameter.requires_grad_(name in trained)
        if options.gradient_checkpointing:
            student.enable_gradient_checkpointing()
        self.trained_names = sorted(trained)
        self.student = DenoiserWrapper(student.train()).to(distributed.device)
        self.input_names = self.student.input_names  # the denoiser's call order, the teacher's too
        names = swapped_attention_names(student)
        self.student_taps = AttentionTaps(student, names)
        self.teacher_taps = AttentionTaps(teacher, names)
        if options.shard:
            shard_blocks(student)
        elif distributed.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.student = DistributedDataParallel(self.student)
        self.optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=options.lr,
                                           weight_decay=0.0)
        self.step = 0

    # --- checkpoints -----------------------------------------------------------------------

    def full_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """The student's state dict and the optimizer's, as full CPU tensors on rank 0 (a
        collective when sharded: every rank calls it; the others get empty dicts)."""
        if not self.options.shard:
            return self.student_model.state_dict(), self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (get_model_state_dict(self.student_model, options=full),
                get_optimizer_state_dict(self.student_model, self.optimizer, options=full))

    def save_checkpoint(self) -> None:
        weights, optimizer = self.full_state()
        if self.env.main:
            from safetensors.torch import save_file

            staging = self.work / f"{CHECKPOINT}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            save_file({n: weights[n].detach().contiguous() for n in self.trained_names}, staging / "trained.safetensors")
            torch.save(optimizer, staging / "optimizer.pt")
            (staging / "state.json").write_text(json.dumps({"step": self.step, "world": self.env.world,
                                                            "options": self.options.to_dict()}, indent=2) + "\n")
            final = self.work / CHECKPOINT
            previous = self.work / f"{CHECKPOINT}.previous"
            if final.exists():
                final.rename(previous)
            staging.rename(final)
            shutil.rmtree(previous, ignore_errors=True)
        self.env.barrier()

    def load_checkpoint(self) -> None:
        from safetensors.torch import load_file

        folder = self.work / CHECKPOINT
        state = json.loads((folder / "state.json").read_text())
        if state["options"] != json.loads(json.dumps(self.options.to_dict())):
            raise UserError(f"{folder} was made with other options; run with the same options to resume, "
                            "or remove the checkpoint folder to start over")
        trained = load_file(folder / "trained.safetensors")
        # weights_only: the optimizer state is tensors, numbers and names; nothing pickled runs.
        optimizer = torch.load(folder / "optimizer.pt", weights_only=True)
        if self.options.shard:  # every rank reads the full tensors and keeps its shard
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            full = StateDictOptions(full_state_dict=True, strict=False)
            set_model_state_dict(self.student_model, trained, options=full)
            set_optimizer_state_dict(self.student_model, self.optimizer, optimizer, options=full)
        else:
            with torch.no_grad():
                for name, parameter in self.student_model.named_parameters():
                    if name in trained:
                        parameter.copy_(trained[name])
            self.optimizer.load_state_dict(optimizer)
        self.step = state["step"]

    # --- one step --------------------------------------------------------------------------

    def _batch(self, data, step: int):
        """This process's share of the global batch: rows, conditioning and noised latents."""
        options = self.options
        order = torch.randint(0, len(data), (options.batch,), generator=sample_generator(options.seed, step, -1))
        share = options.batch // self.env.world
        mine = list(range(self.env.rank * share, (self.env.rank + 1) * share))
        generators = [sample_generator(options.seed, step, index) for index in mine]
        rows = order[mine]
        drop = torch.tensor([torch.rand(1, generator=g).item() < options.caption_dropout for g in generators])
        inputs = {}
        for name, values in data.inputs.items():
            chosen = values[rows].clone()
            chosen[drop] = data.unconditional[name].expand_as(chosen[drop])
            inputs[name] = chosen
        noised = self.objective.noised(data.latents[rows], generators)
        return inputs, noised

    def _forward(self, wrapper, inputs, noised):
        named = {"hidden_states": noised.latents, **inputs, "timestep": noised.timestep}
        prediction = wrapper(*(named[name].to(self.env.device) for name in self.input_names))
        return prediction[:, : noised.target.shape[1]]  # learned variance, where there is one, is not trained

    def train_step(self) -> dict[str, float]:
        data = self.data_by_stage[self.options.stage_at(self.step)]
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.options)
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"task": 0.0, "output": 0.0, "feature": 0.0}
        autocast = (torch.autocast(self.env.device.type, dtype=torch.bfloat16) if self.options.bf16 else nullcontext())
        for micro in range(self.options.accumulate):
            inputs, noised = self._batch(data, self.step * self.options.accumulate + micro)
            with torch.no_grad(), autocast:
                teacher_pred = self._forward(self.teacher, inputs, noised).float()
            teacher_features = self.teacher_taps.take()
            with autocast:
                student_pred = self._forward(self.student, inputs, noised).float()
            losses = distillation_losses(student_pred, teacher_pred, noised.target.to(self.env.device),
                                         self.student_taps.take(), teacher_features)
            w = self.options.weights
            loss = w.task * losses["task"] + w.output * losses["output"] + w.feature * losses["feature"]
            (loss / self.options.accumulate).backward()
            for key in totals:
                totals[key] += losses[key].item() / self.options.accumulate
        torch.nn.utils.clip_grad_norm_([p for p in self.student_model.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.step += 1
        return self.env.mean(totals)

    def trained_student(self):
        """The student with full weights, on rank 0 (None elsewhere; a collective when sharded):
        a sharded student's parameters are DTensors, so its gathered state fills a fresh copy."""
        if not self.options.shard:
            return self.student_model if self.env.main else None
        weights, _ = self.full_state()
        if not self.env.main:
            return None
        plain = type(self.student_model).from_config(self.student_model.config)
        plain.load_state_dict(weights)
        return plain.eval()

    def run(self, log, on_step=lambda step: None) -> None:
        while self.step < self.options.total_steps:
            losses = self.train_step()
            if self.env.main:
                log.step(self.step, self.step * self.options.batch, **losses)
            if self.step % self.options.checkpoint_every == 0 or self.step == self.options.total_steps:
                self.save_checkpoint()
            on_step(self.step)
        self.student_taps.remove()
        self.teacher_taps.remove()
