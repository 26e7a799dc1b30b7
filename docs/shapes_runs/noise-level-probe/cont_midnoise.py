"""Diagnostic: continue the shipped PixArt shapes teacher at 256 px with most training timesteps
drawn where sdedit_probe.py finds it spoiling small shapes (t in [LOW, HIGH)): does the band
learn with more of the steps? The continuation is ../pixart-cont256's.

    python cont_midnoise.py OUT STEPS PEAK_LR BAND_SHARE     # e.g. OUT 600 2e-4 0.6
"""

import sys
from pathlib import Path

import torch

from edit_mobile.training import train_teacher

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pixart-cont256"))
from cont256 import continue_teacher  # noqa: E402

SOURCE = Path("pretrained/shapes-pixart")
LOW, HIGH = 150, 600  # sdedit_probe: started at t 399 the teacher keeps 6 / 15 small shapes, at 199 13 / 15
recipe_timesteps = train_teacher.pixart_timesteps


def main() -> None:
    out, steps, peak, share = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])

    def band_timesteps(count: int, total: int, generator: torch.Generator) -> torch.Tensor:
        """A share `share` drawn uniformly in [LOW, HIGH), the rest the recipe's own draw."""
        usual = recipe_timesteps(count, total, generator)
        band = LOW + (torch.rand(count, generator=generator) * (HIGH - LOW)).long()
        return torch.where(torch.rand(count, generator=generator) < share, band, usual)

    train_teacher.pixart_timesteps = band_timesteps
    continue_teacher(SOURCE, out, steps, peak, f"continue, {share:.0%} of t in [{LOW}, {HIGH})")
    train_teacher.write_sampling(out, train_teacher.PixArtRecipe)


if __name__ == "__main__":
    main()
