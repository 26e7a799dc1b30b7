"""The PyTorch reference: the model the artifact was exported from, rebuilt from reference/.

reference/ is a diffusers save_pretrained folder (safetensors; never unpickled), loaded with
edit_mobile.models.load_transformer and wrapped in DenoiserWrapper, the very module every
exporter traces, so reference and artifact take the same positional inputs. It always runs in
float32: the artifact's precision is what validation measures against it.
"""

from __future__ import annotations

import time

import torch

from edit_mobile.errors import UserError
from edit_mobile.runtime.manifest import Manifest
from edit_mobile.runtime.session import Session

REFERENCE_ROLE = "reference_model"


class ReferenceSession(Session):
    runtime = "pytorch"

    def __init__(self, manifest: Manifest, threads: int | None = None):
        super().__init__(manifest)
        from edit_mobile.models import DenoiserWrapper, model_family

        entry = manifest.file(REFERENCE_ROLE)
        if threads:
            torch.set_num_threads(int(threads))
        started = time.perf_counter()
        model = _load_reference(entry)
        if model.dtype != torch.float32:
            model = model.to(torch.float32)
        family = model_family(model)
        if family != manifest.family:
            raise UserError(f"{entry.relative} holds a {family} model but the manifest says {manifest.family}; re-export the artifact")
        self.model = model.requires_grad_(False)
        self.wrapper = DenoiserWrapper(model).eval()
        self.load_seconds = time.perf_counter() - started

    def default_threads(self) -> int:
        return torch.get_num_threads()

    @torch.no_grad()
    def _run(self, inputs: tuple[torch.Tensor, ...]) -> list:
        # No autograd: with it each output kept its whole forward's activations alive (an
        # SD3.5-Medium validate at 1024 px was OOM-killed at 24 GB).
        return [self.wrapper(*inputs)]


def _load_reference(entry):
    """The model in reference/, or one line saying why not: the folder passed its hash, yet a
    hostile or damaged config or weights file would raise from deep inside diffusers."""
    from edit_mobile.models import load_transformer

    try:
        return _quietly(load_transformer, entry.path).eval()
    except UserError:
        raise
    except Exception as err:  # diffusers / safetensors / torch raise OSError, ValueError, KeyError, ...
        detail = " ".join(str(err).split())[:300] or type(err).__name__
        raise UserError(f"{entry.relative} does not load as the PyTorch reference ({detail}); re-export the artifact") from err


def _quietly(function, *args):
    """Call with diffusers' logging at errors only: from_pretrained's advice about installing
    accelerate is noise in a validation report."""
    from diffusers.utils import logging as diffusers_logging

    previous = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return function(*args)
    finally:
        diffusers_logging.set_verbosity(previous)
