"""What a mobile rewrite pass is, and the module-walking helpers the passes share.

A pass rewrites a diffusers model in place at the nn.Module level (swapping attention
processors or submodules for mobile forms) and keeps its float32 outputs unchanged;
`apply_passes` hands it a private deep copy, so the caller's model is never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import nn


class MobilePass:
    """One rewrite. `name` is what manifests and the CLI use; `serves` says which backend
    constraint the rewrite answers and what it costs, in one line."""

    name: str = ""
    serves: str = ""
    # The schemes whose exports take it by default: quantization schemes, or "fp32" / "fp16" for
    # float exports (None: every export); measured per scheme where a form pays only in some.
    default_schemes: tuple[str, ...] | None = None

    def apply(self, model: nn.Module) -> int:
        """Rewrite `model` in place; return how many modules were rewritten."""
        raise NotImplementedError

    def applies_to(self, model: nn.Module, image_tokens: int | None = None) -> bool:
        """Whether a backend's default list applies this pass to `model`, exported for at most
        `image_tokens` image tokens (None: not known): a default a model cannot take, or that
        measured slower at that size, is left out; asking for it by name applies it anyway (or
        is refused by `apply`)."""
        return True

    def __repr__(self) -> str:
        return f"<pass {self.name}>"


def attention_modules(model: nn.Module) -> Iterator[nn.Module]:
    """Every diffusers `Attention` (anything with a swappable `processor`)."""
    for module in model.modules():
        if hasattr(module, "set_processor") and hasattr(module, "processor"):
            yield module


def swap_processors(model: nn.Module, replace: Callable[[object], object | None]) -> int:
    """Set `replace(old_processor)` on every attention where it returns a new processor."""
    swapped = 0
    for attn in attention_modules(model):
        new = replace(attn.processor)
        if new is not None:
            attn.set_processor(new)
            swapped += 1
    return swapped


def swap_children(model: nn.Module, replace: Callable[[nn.Module], nn.Module | None]) -> int:
    """Replace every submodule for which `replace(child)` returns a module."""
    swapped = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            new = replace(child)
            if new is not None:
                setattr(parent, child_name, new)
                swapped += 1
    return swapped


def swap_processor_modules(model: nn.Module, attribute_names: tuple[str, ...], make) -> int:
    """Set `make(module)` in place of each processor module named in `attribute_names` (an EDiT
    processor's `conv_fusion`, `key_compressor`, ...) wherever it returns one."""
    swapped = 0
    for attn in attention_modules(model):
        for name in attribute_names:
            module = getattr(attn.processor, name, None)
            new = make(module) if module is not None else None
            if new is not None:
                setattr(attn.processor, name, new)
                swapped += 1
    return swapped
