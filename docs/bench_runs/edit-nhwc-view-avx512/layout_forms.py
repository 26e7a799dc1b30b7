"""A/B of EDiT's token <-> image forms in ExecuTorch XNNPACK, same rounds (experiment).

    python docs/bench_runs/edit-nhwc-view-avx512/layout_forms.py [PIXELS] [pixart|sd3]

Builds the 2-layer bench model (bench/export_latency.py) and its EDiT / MM-EDiT student, exports
it after the default xnnpack passes once with the old transpose-and-reshape grid and once with
the channels-last view (what models/edit_attention.py does now), and times both programs in
alternating rounds."""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, "bench")
from executorch.runtime import Runtime  # noqa: E402
from export_latency import edit_of, lower_xnnpack, pixart_sigma_xl, sd35_medium  # noqa: E402

import edit_mobile.models.edit_attention as edit_attention  # noqa: E402
from edit_mobile.export.passes import apply_passes, default_passes  # noqa: E402
from edit_mobile.models import DenoiserWrapper, TransformerSignature  # noqa: E402

ROUNDS = 9


def transposed_tokens_to_image(tokens, grid):
    batch, _, channels = tokens.shape
    return tokens.transpose(1, 2).reshape(batch, channels, *grid)


def transposed_image_to_tokens(image):
    return image.flatten(2).transpose(1, 2)


FORMS = {"transpose": (transposed_tokens_to_image, transposed_image_to_tokens),
         "channels-last view": (edit_attention.tokens_to_image, edit_attention.image_to_tokens)}


def program(student, inputs, form: str, folder: Path):
    edit_attention.tokens_to_image, edit_attention.image_to_tokens = FORMS[form]
    model = DenoiserWrapper(apply_passes(student, default_passes("xnnpack"))).eval()
    with torch.no_grad():
        reference = model(*inputs)
        lowered, _ = lower_xnnpack(torch.export.export(model, inputs))
    path = folder / f"{form.replace(' ', '-')}.pte"
    path.write_bytes(lowered.buffer)
    method = Runtime.get().load_program(path).load_method("forward")
    print(form, "max difference to eager", (method.execute(list(inputs))[0] - reference).abs().max().item())
    return method


def main() -> None:
    pixels = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    family = sys.argv[2] if len(sys.argv) > 2 else "pixart"
    teacher = (sd35_medium if family == "sd3" else pixart_sigma_xl)(pixels, 2)
    student = edit_of(teacher)
    inputs = TransformerSignature.of(student, pixels, pixels).example_inputs()
    folder = Path("build/layout_forms")
    folder.mkdir(parents=True, exist_ok=True)
    methods = {form: program(student, inputs, form, folder) for form in FORMS}
    times = {form: [] for form in methods}
    for _ in range(ROUNDS):
        for form, method in methods.items():
            start = time.perf_counter()
            method.execute(list(inputs))
            times[form].append(time.perf_counter() - start)
    for form, runs in times.items():
        print(f"{form}: median {statistics.median(runs) * 1e3:.1f} ms", [round(t * 1e3) for t in runs])


if __name__ == "__main__":
    main()
