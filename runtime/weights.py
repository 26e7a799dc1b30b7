"""Finding a reference weight under the name an exported graph gave it."""

from __future__ import annotations

import torch


def lookup_reference(name: str, reference_state: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The reference tensor for exported weight `name`, trying it without leading wrapper
    components ('denoiser.model.x.weight' -> 'model.x.weight' -> 'x.weight')."""
    parts = name.split(".")
    for start in range(len(parts)):
        candidate = ".".join(parts[start:])
        if candidate in reference_state:
            return reference_state[candidate]
    return None
