"""Text encoders a phone can hold: the pipeline's encode_prompt method quantized for XNNPACK
without calibration (`export --pipeline --text-encoder-quantize SCHEME`).

int8-dynamic  every Linear's weights int8 per output channel, activations quantized per call
              (XNNPACK's qd8 GEMMs): a quarter of the float32 bytes.
int4-weight   4-bit weights in groups of 32 with dynamic int8 activations: an eighth.
Embedding tables stay float32 (T5-XXL's is 0.13 B of its 4.7 B parameters).

Token ids have no calibration set to draw ranges from, so static int8 is not offered. The
record gives the embedding PSNR (closeness.psnr_db against the float encoder, each output) on
held-out prompts, the figure to judge a quantized text encoder by before its images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from edit_mobile.closeness import psnr_db
from edit_mobile.errors import UserError
from edit_mobile.export.quantization.metrics import Inputs

TEXT_ENCODER_SCHEMES = ("int8-dynamic", "int4-weight")
INT4_GROUP = 32
# scheme -> (weight dtype, weights per scale: None = one scale an output channel)
WEIGHT_FORMS = {"int8-dynamic": (torch.int8, None), "int4-weight": (torch.int4, INT4_GROUP)}


def check_text_scheme(scheme: str) -> None:
    if scheme not in TEXT_ENCODER_SCHEMES:
        raise UserError(f"--text-encoder-quantize takes {' or '.join(TEXT_ENCODER_SCHEMES)} (token ids have no "
                        f"calibration set for static ranges), not {scheme}")


def quantize_text_encoder(exported: torch.export.ExportedProgram, module: torch.nn.Module, scheme: str,
                          output_names: Sequence[str], heldout: Sequence[Inputs]) -> tuple[object, dict]:
    """(quantized program for lowering, the manifest's quantization record of encode_prompt)."""
    check_text_scheme(scheme)
    example = tuple(exported.example_inputs[0])
    program, quantized = _linear_weights(module, example, WEIGHT_FORMS[scheme])
    record = {"scheme": scheme, "heldout_records": len(heldout)}
    record.update(embedding_psnr(exported.module(), quantized, output_names, heldout))
    return program, record


def _linear_weights(module: torch.nn.Module, example: Inputs, form) -> tuple[object, torch.nn.Module]:
    """Every Linear the form's group divides, quantized on the eager encoder. Module-level, not
    PT2E: T5's relative-position buckets compute on int64 tensors that a graph quantizer's
    observers would cast to float."""
    from edit_mobile.export.quantization.xnnpack import dynamic_int_linears

    weight_dtype, group = form

    def take(layer: torch.nn.Module, name: str) -> bool:
        return isinstance(layer, torch.nn.Linear) and (group is None or layer.in_features % group == 0)

    return dynamic_int_linears(module, example, weight_dtype, group, take)


@torch.no_grad()
def embedding_psnr(reference, quantized, output_names: Sequence[str], heldout: Sequence[Inputs]) -> dict:
    """Mean and worst PSNR of each output over the held-out prompts (the first output's are
    also the record's heldout_psnr_db / _min_db, as for a quantized denoiser)."""
    values: dict[str, list[float]] = {name: [] for name in output_names}
    for record in heldout:
        expected, got = reference(*record), quantized(*record)
        for name, want, have in zip(output_names, expected, got, strict=True):
            values[name].append(psnr_db(want, have))
    per_output = {name: _mean_and_worst(v) for name, v in values.items()}
    first = per_output[output_names[0]]
    return {"heldout_psnr_db": first["mean_db"], "heldout_psnr_min_db": first["min_db"],
            "embedding_psnr_db": per_output}


def _mean_and_worst(values: list[float]) -> dict:
    if any(math.isnan(v) for v in values):  # a non-finite embedding meets no floor
        return {"mean_db": math.nan, "min_db": math.nan}
    return {"mean_db": sum(values) / len(values), "min_db": min(values)}
