"""EDiT Mobile: Efficient Diffusion Transformers on phones.

The namespace is assembled from the repository's top-level folders:
`edit_mobile.models` (models/), `edit_mobile.calibration` (calibration/),
`edit_mobile.export` (export/) and `edit_mobile.runtime` (runtime/). Data flows in
that order and imports follow it. This package itself (core/) holds only what all
of them share: errors, atomic file output and the command line.
"""

__version__ = "0.1.0"


def _quiet_import_noise() -> None:
    """torchao and diffusers warn at import about GPU kernels and checkpoint formats this
    CPU toolchain never uses; those lines would bury our own one-line errors."""
    import logging

    for name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Off macOS coremltools says at import that each native Core ML proxy is missing; we say
    # once, where it matters, that Core ML models run only on macOS.
    logging.getLogger("coremltools").addFilter(
        lambda record: not record.getMessage().startswith("Failed to load _ML")
    )


_quiet_import_noise()
