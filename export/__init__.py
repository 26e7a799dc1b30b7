"""Export: mobile rewrite passes, backends, quantization, delegation coverage and the artifact
folder (manifest.json + program + test vectors + reference model) the runtime and apps read.

Kept light on import (the CLI imports it for `--help`): the names below load on first use.

Contracts with the sibling subpackages:
- edit_mobile.export.passes: `default_passes(backend[, family]) -> list[str]` (given the model
  family, "pixart" / "sd3", when it accepts a `family` argument), `check_pass_names(names)`,
  `PASSES` (application order) and `apply_passes(model, names) -> model`, module rewrites that
  keep float32 outputs equal.
- edit_mobile.export.quantization: `check_scheme(backend, scheme)`, `quantize_program(exported,
  *, backend, scheme, calibration, signature, denoiser, min_psnr, float_layers) ->
  (ExportedProgram, record)` before lowering and, when record["stage"] == "lowered",
  `quantize_lowered(program_path, ...) -> record` on the written file; record is
  manifest["quantization"].
"""

from __future__ import annotations

from edit_mobile.safe_read import lazy_exports

_LAZY = {
    "ExportRequest": "edit_mobile.export.artifact",
    "export_artifact": "edit_mobile.export.artifact",
    "delegation_coverage": "edit_mobile.export.coverage",
    "DelegationCoverage": "edit_mobile.export.coverage",
    "get_backend": "edit_mobile.export.backends",
    "backend_names": "edit_mobile.export.backends",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_exports(__name__, _LAZY)
