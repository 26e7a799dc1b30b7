"""What every training script here shares: seeding, a progress bar with the losses, a JSONL
log and a loss-curve PNG written beside the weights."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainingLog:
    """Per-step losses: shown on a tqdm bar, appended to `log.jsonl`, drawn in `loss.png`."""

    def __init__(self, folder: Path, total_steps: int, title: str, resume_at: int = 0):
        """`resume_at`: the step a resumed run starts from; the log keeps the records up to it."""
        from tqdm import tqdm

        self.folder = folder
        self.title = title
        self.records: list[dict] = []
        log = folder / "log.jsonl"
        if resume_at and log.is_file():
            self.records = [r for r in map(json.loads, log.read_text().splitlines()) if r["step"] <= resume_at]
        log.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        self.start = time.perf_counter() - (self.records[-1]["seconds"] if self.records else 0.0)
        self.bar = tqdm(total=total_steps, initial=resume_at, desc=title, unit="step", dynamic_ncols=True)
        self.log_file = log.open("a")

    def step(self, step: int, samples: int, **losses: float) -> None:
        elapsed = time.perf_counter() - self.start
        record = {"step": step, "seconds": round(elapsed, 2), **{k: float(v) for k, v in losses.items()}}
        self.records.append(record)
        self.log_file.write(json.dumps(record) + "\n")
        self.log_file.flush()  # a killed run keeps its log up to its last step (resume reads it)
        self.bar.set_postfix({**{k: f"{v:.4f}" for k, v in losses.items()},
                              "samples/s": f"{samples / max(elapsed, 1e-9):.1f}"})
        self.bar.update(1)

    def close(self) -> dict:
        self.bar.close()
        self.log_file.close()
        self.write_curve()
        first, last = self.records[0], self.records[-1]
        return {"steps": last["step"], "seconds": last["seconds"], "first": first, "last": last}

    def write_curve(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [k for k in self.records[0] if k not in ("step", "seconds")]
        steps = [r["step"] for r in self.records]
        figure, axis = plt.subplots(figsize=(7, 4))
        for name in names:
            values = [r[name] for r in self.records]
            axis.plot(steps, values, alpha=0.25, linewidth=0.8)
            axis.plot(steps, smooth(values), label=name)
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.set_title(self.title)
        axis.legend()
        figure.tight_layout()
        figure.savefig(self.folder / "loss.png", dpi=110)
        plt.close(figure)


def smooth(values: list[float], window: int = 50) -> list[float]:
    """Running mean over the last `window` values (the raw curve is drawn faint beside it)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
