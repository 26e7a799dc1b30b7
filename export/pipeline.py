"""Export the whole text-to-image pipeline as one artifact: `edit-mobile export MODEL --pipeline`.

The text encoder, the denoiser and the VAE decoder become methods of one ExecuTorch program
whose weights are stored once (in model.ptd past 1 GiB: program-data separation); a phone goes from a prompt's
token ids to pixels with it, the tokenizer files and the scheduler's config beside it.

ART_DIR/
  manifest.json               schema v2: the first denoise method's v1 fields + `pipeline`
  model.pte                   methods: encode_prompt    token ids -> the denoiser's prompt inputs
                                                        (PixArt: input_ids, attention_mask; SD3:
                                                        clip_l_, clip_g_, t5_input_ids)
                                       denoise_HxW      one denoiser step at H x W pixels
                                       decode_HxW       latents -> image in [0, 1], (1, 3, H, W)
  model.ptd                   with --weights external (auto: from 1 GiB): every weight once; the
                              denoise (decode) methods of all resolutions share the same bytes,
                              as they do inside model.pte when the weights are embedded
  model.bpte                  BundledProgram: one test case a method, runs with model.ptd
  tokenizer/                  the prompt's tokenizer (transformers files); SD3 adds tokenizer_2/
                              (CLIP-G) and tokenizer_3/ (T5), each described in pipeline.text
  scheduler/                  scheduler_config.json of the diffusers scheduler to step with
  test_vectors.safetensors    <method>.input.<name> / <method>.output.<name>, PyTorch float32

Each backend's lowering, writing, self-check and bundle is its PipelineTarget
(export/pipeline_target.py; export/pipeline_xnnpack.py for the layout above).
With --backend onnx: one model a method (<method>.onnx; the first denoise method's is the
`program` role, the others `method.<name>`), every weight once in weights.onnx.data, no bundle
(export/pipeline_onnx.py). With --backend coreml: one .mlpackage a component, multifunction
across resolutions, converted and inspected here (export/pipeline_coreml.py).

With --fixed-prompts FILE (for phones that cannot hold the text encoder, such as T5-XXL's 4.7B
parameters) there is no encode_prompt method and no tokenizer: prompts.safetensors holds
encode_prompt's outputs for each of the file's prompts, row 0 the negative prompt "" (guidance's
unconditional branch), row i the file's i-th prompt, listed in pipeline.text.precomputed; the app
offers those prompts only.

With --quantize (xnnpack and onnx schemes, --calibration from `edit-mobile calibrate`) the
denoise method is quantized as `export --quantize` quantizes a denoiser (xnnpack: PT2E on the
traced program; onnx: onnxruntime's QDQ on the written model; float layers for --min-psnr); the
text encoder and decoder stay float32. The calibration set fixes the size: one resolution, the
set's. The denoise method's test vector is then a held-out calibration record (quantization is
judged where the sampler goes, not on random latents) and its floor the quantized one (30 dB).
"""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from edit_mobile.errors import UserError
from edit_mobile.export import manifest as manifest_io
from edit_mobile.export.pipeline_target import pipeline_target
from edit_mobile.fileio import atomic_output_dir, check_output_dir

PIPELINE_PRECISIONS = ("fp32", "fp16")
SCHEDULER_DIR = "scheduler"
TEST_VECTORS_FILE = "test_vectors.safetensors"
ENCODE_METHOD = "encode_prompt"
TEXT_CHECK_PROMPTS = 16
PROMPTS_FILE = "prompts.safetensors"  # --fixed-prompts: encode_prompt's outputs, row 0 the negative prompt
PROMPTS_ROLE = "prompts"  # its manifest file role
MAX_FIXED_PROMPTS = 1000
EXAMPLE_PROMPT = "a small red circle in the top left on a white background"


def denoise_method(resolution: tuple[int, int]) -> str:
    return f"denoise_{resolution[0]}x{resolution[1]}"


def decode_method(resolution: tuple[int, int]) -> str:
    return f"decode_{resolution[0]}x{resolution[1]}"


@dataclass(frozen=True)
class PipelineRequest:
    model: str  # a pipeline folder or a preset
    output: Path
    resolutions: tuple[tuple[int, int], ...] = ()  # pixels (H, W); () = the model's default
    backend: str = "xnnpack"
    precision: str = "fp32"  # of the denoiser; the text encoder and decoder stay float32
    batch: int = 1  # of the denoiser: 2 takes guidance's two branches in one call
    prompt_tokens: int | None = None
    weights: str = "auto"  # auto | embedded | external, as xnnpack's --weights
    seed: int = 0
    allow_below_floor: bool = False
    force: bool = False
    quantize: str | None = None  # an xnnpack scheme for the denoise method (int8 resolved)
    calibration: Path | None = None
    min_psnr: float | None = None
    float_layers: tuple[str, ...] = ()
    onnx_opset: int | None = None
    coreml_target: str | None = None
    text_quantize: str | None = None  # int8-dynamic | int4-weight for encode_prompt (xnnpack)
    without_t5: bool = False  # SD3: CLIP-L and CLIP-G only, zeros in T5's place as the pipeline does
    fixed_prompts: Path | None = None  # a prompts file: their embeddings instead of encode_prompt

    @property
    def inputs(self) -> list:
        return [self.model, *([self.calibration] if self.calibration else []),
                *([self.fixed_prompts] if self.fixed_prompts else [])]


@dataclass
class Method:
    """One method of the program: the module traced, example inputs, I/O names."""

    name: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    resolution: tuple[int, int] | None = None
    precision: str = "fp32"
    reference: nn.Module | None = None  # the float32 module, where `module` runs in fp16 or quantized
    outputs: tuple[torch.Tensor, ...] = field(default=())  # PyTorch float32 reference
    signature: object = None  # the denoiser's TransformerSignature (denoise methods)
    quantization: dict | None = None  # the manifest's quantization record, once quantized
    heldout: list = field(default_factory=list)  # inputs a quantized method is judged on
    # A scheme applied to the written model (onnx): quantizes the file at the path in place.
    quantize_written: Callable[[Path], None] | None = None

    @property
    def floor_db(self) -> float:
        from edit_mobile.export.self_check import floor_db

        return floor_db(self.precision, self.quantization is not None)

    @property
    def expects_host_outputs(self) -> bool:
        """fp16 and quantized methods are bundled with what the program computes here: the device
        must reproduce the host, not PyTorch's float32."""
        return self.precision != "fp32" or self.quantization is not None

    def io(self) -> dict:
        return {
            "inputs": [_spec(n, t) for n, t in zip(self.input_names, self.inputs, strict=True)],
            "outputs": [_spec(n, t) for n, t in zip(self.output_names, self.outputs, strict=True)],
            "precision": self.precision,
            **({"quantization": self.quantization["scheme"]} if self.quantization else {}),
            **({"resolution": list(self.resolution)} if self.resolution else {}),
        }


def _spec(name: str, tensor: torch.Tensor) -> dict:
    return {"name": name, "shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}


def check_request(request: PipelineRequest) -> None:
    """The cheap checks, before anything is loaded."""
    target = pipeline_target(request.backend)
    if not target.takes_weights_option and request.weights != "auto":
        raise UserError("--weights applies to xnnpack; ONNX and Core ML pipelines keep each weight once in their own way")
    if not target.takes_quantization and (request.quantize or request.text_quantize) is not None:
        raise UserError("a quantized pipeline exports to xnnpack and onnx so far; drop --quantize / --text-encoder-quantize, "
                        "or use --backend xnnpack")
    if request.fixed_prompts is not None and request.text_quantize is not None:
        raise UserError("--fixed-prompts ships embeddings instead of the text encoder: drop --text-encoder-quantize")
    if request.text_quantize is not None:
        from edit_mobile.export.quantization.text_encoder import check_text_scheme

        check_text_scheme(request.text_quantize)
    if request.precision not in PIPELINE_PRECISIONS:
        raise UserError(f"--pipeline takes precision {' or '.join(PIPELINE_PRECISIONS)}, not {request.precision}")
    if request.batch not in (1, 2):
        raise UserError(f"batch {request.batch} is not supported; choose 1 or 2")
    if len(set(request.resolutions)) != len(request.resolutions):
        raise UserError("--resolution lists a size twice; give each size once")
    check_quantization_request(request)
    target.check(request)
    check_output_dir(request.output, "export", request.inputs, request.force)


def check_quantization_request(request: PipelineRequest) -> None:
    if request.quantize is None:
        if request.min_psnr is not None or request.float_layers or request.calibration is not None:
            raise UserError("--calibration, --min-psnr and --float-layers apply only with --quantize SCHEME")
        return
    if request.precision != "fp32":
        raise UserError("a quantized pipeline starts from the float32 denoiser: drop --precision fp16")
    if request.calibration is None:
        raise UserError("--pipeline --quantize needs --calibration CALIB_DIR (edit-mobile calibrate): its records "
                        "calibrate the denoiser and fix the resolution")
    if len(request.resolutions) > 1:
        raise UserError("a quantized pipeline draws at its calibration set's one resolution; give one --resolution "
                        "or none")


def resolve_quantization(request: PipelineRequest):
    """(request with the scheme's full name and the set's resolution, calibration set or None)."""
    import dataclasses

    if request.quantize is None:
        return request, None
    from edit_mobile.calibration import load_calibration
    from edit_mobile.export.quantization import resolve_scheme

    scheme = resolve_scheme(request.backend, request.quantize)
    calibration = load_calibration(request.calibration)
    recorded = tuple(calibration.manifest.get("resolution") or ())
    if request.resolutions and tuple(request.resolutions[0]) != recorded:
        raise UserError(f"the calibration set {request.calibration} was recorded at {_size(recorded)}, not "
                        f"{_size(request.resolutions[0])}; calibrate at that size or drop --resolution")
    return dataclasses.replace(request, quantize=scheme, resolutions=(recorded,)), calibration


def _size(resolution) -> str:
    return "x".join(str(side) for side in resolution) or "an unknown size"


def build_methods(parts, request: PipelineRequest) -> list[Method]:
    """encode_prompt (unless the prompts are fixed), then denoise_HxW and decode_HxW for each
    resolution."""
    from edit_mobile.models import DenoiserWrapper, TransformerSignature
    from edit_mobile.models.vae import LatentDecoder

    methods = [] if request.fixed_prompts is not None else [encode_method(parts, request)]
    if request.text_quantize is not None:
        methods[0].heldout = text_check_inputs(parts.text)
    resolutions = request.resolutions or (None,)
    mobile = mobile_transformer(parts, request)
    decoder = LatentDecoder(parts.vae, parts.family.name).eval()
    mobile_decoder = LatentDecoder(mobile_component(parts.vae, request.backend, DECODER_PASSES), parts.family.name).eval()
    for resolution in resolutions:
        height, width = resolution or (None, None)
        signature = TransformerSignature.of(parts.transformer, height, width, batch=request.batch,
                                            prompt_tokens=parts.prompt_tokens)
        resolution = signature.resolution
        reference = DenoiserWrapper(parts.transformer).eval()
        inputs = signature.example_inputs(request.seed)
        methods.append(Method(denoise_method(resolution), mobile, inputs, signature.input_names,
                              [signature.outputs[0].name], resolution, request.precision, reference,
                              signature=signature))
        latents = inputs[0][:1].clone()  # (1, C, h, w), unit scale; its own storage for the test vectors
        methods.append(Method(decode_method(resolution), mobile_decoder, (latents,), ["latents"], ["image"], resolution,
                              reference=decoder))
    return methods


def encode_method(parts, request: PipelineRequest) -> Method:
    tokens = parts.text.tokenize([EXAMPLE_PROMPT])  # every tokenizer's inputs, in the module's order
    encoder = parts.text.prompt_module().eval()
    return Method(ENCODE_METHOD, mobile_component(encoder, request.backend, TEXT_ENCODER_PASSES),
                  tuple(tokens.values()), list(tokens), list(encoder.output_names), reference=encoder)


def read_fixed_prompts(path: Path) -> list[str]:
    from edit_mobile.calibration.prompts import read_prompts

    prompts = read_prompts(path)
    if len(set(prompts)) != len(prompts) or len(prompts) > MAX_FIXED_PROMPTS:
        raise UserError(f"--fixed-prompts {path}: give 1 to {MAX_FIXED_PROMPTS} distinct prompts, one a line")
    return prompts


@torch.no_grad()
def write_fixed_prompts(parts, prompts: list[str], path: Path) -> dict:
    """encode_prompt's outputs for "" and each prompt, by the PyTorch text encoder, one row each;
    returns pipeline.text's description of them."""
    encoder = parts.text.prompt_module().eval()
    rows = [encoder(*parts.text.tokenize([prompt]).values()) for prompt in ["", *prompts]]
    save_file({name: torch.cat([row[index] for row in rows]).contiguous()
               for index, name in enumerate(encoder.output_names)}, str(path))
    return {"file": PROMPTS_ROLE, "prompts": prompts, "negative_row": 0, "outputs": list(encoder.output_names)}


def text_check_inputs(text, count: int = TEXT_CHECK_PROMPTS) -> list[tuple[torch.Tensor, ...]]:
    """Token inputs of the default calibration prompts (varied subjects and lengths), one
    prompt a record: where a quantized text encoder's embeddings are judged."""
    from edit_mobile.calibration.prompts import read_prompts

    return [tuple(text.tokenize([prompt]).values()) for prompt in read_prompts()[:count]]


# The denoiser's rewrites that also serve the VAE decoder: its ResNet blocks' GroupNorms (21 in
# SDXL's decoder layout), its mid-block attention's safe softmax and its nearest upsamplers would
# otherwise each end an XNNPACK partition and run on portable kernels.
DECODER_PASSES = ("softmax_attention_bmm", "group_norm_pooled", "upsample_nearest_deconv")
# ... and the text encoders: T5's RMSNorms and gelu_new's x^3, and SDPA's safe softmax in every
# layer (transformers' eager attention instead) each ended one (12 XNNPACK partitions in
# tiny-pixart's T5, 22 in SD3's three encoders).
TEXT_ENCODER_PASSES = ("softmax_attention_bmm", "row_norm_matmul", "gelu_tanh_sigmoid")


def mobile_component(module, backend: str, serving: tuple[str, ...]):
    """`module` (a text encoder or VAE) with the backend's default passes among `serving`, on a
    copy that shares its weights (checked to keep the output when the references are computed),
    or the module itself."""
    from edit_mobile.export.artifact import apply_passes, resolve_passes

    names = [name for name in resolve_passes(None, backend) if name in serving]
    return apply_passes(module, names, share_weights=True) if names else module


def largest_image_tokens(parts, request: PipelineRequest) -> int:
    """The most image tokens any of the pipeline's denoise methods sees: the passes chosen for
    the one shared denoiser must serve its largest size."""
    from edit_mobile.models import TransformerSignature

    return max(TransformerSignature.of(parts.transformer, *(resolution or (None, None))).image_tokens
               for resolution in request.resolutions or (None,))


def mobile_transformer(parts, request: PipelineRequest) -> nn.Module:
    """The denoiser every denoise method traces: a copy with the backend's default rewrite passes
    (checked to keep the output when the references are computed), cast to fp16 behind float32
    I/O for --precision fp16. One module serves every resolution, so the weights are shared."""
    import copy

    from edit_mobile.export.artifact import CastedDenoiser, apply_passes, resolve_passes
    from edit_mobile.export.backends import get_backend
    from edit_mobile.models import DenoiserWrapper

    names = resolve_passes(None, request.backend, parts.transformer, largest_image_tokens(parts, request),
                           request.quantize or request.precision)
    casts = request.precision == "fp16" and get_backend(request.backend).casts_model_for_fp16
    # A float32 denoiser shares the model's weights (one copy in memory); a cast one needs its own.
    model = copy.deepcopy(parts.transformer) if casts else parts.transformer
    denoiser: nn.Module = DenoiserWrapper(apply_passes(model, names, share_weights=True)).eval()
    if casts:
        denoiser = CastedDenoiser(denoiser, torch.float16).eval()
    return denoiser


@torch.no_grad()
def compute_references(methods: list[Method]) -> None:
    """Each method's PyTorch float32 outputs on its example inputs (the fp16 denoiser's too: it is
    held to the float32 model, as every fp16 artifact is)."""
    from edit_mobile.export.artifact import check_passes_kept_outputs

    for method in methods:
        outputs = (method.reference or method.module)(*method.inputs)
        method.outputs = tuple(o.float() for o in (outputs if isinstance(outputs, tuple) else (outputs,)))
        if method.reference is not None and method.precision == "fp32":
            rewritten = method.module(*method.inputs)
            rewritten = rewritten if isinstance(rewritten, tuple) else (rewritten,)
            for reference, got in zip(method.outputs, rewritten, strict=True):
                check_passes_kept_outputs(reference, got.float(), ["the default passes"])


def write_test_vectors(methods: list[Method], path: Path) -> None:
    tensors = {}
    for method in methods:
        for name, tensor in zip(method.input_names, method.inputs, strict=True):
            tensors[f"{method.name}.input.{name}"] = tensor.contiguous()
        for name, tensor in zip(method.output_names, method.outputs, strict=True):
            tensors[f"{method.name}.output.{name}"] = tensor.contiguous()
    save_file(tensors, str(path))


def use_heldout_test_vector(methods: list[Method], calibration) -> None:
    """The quantized denoise method's test vector: the first held-out calibration record (at the
    method's batch), where its quantization is judged."""
    from edit_mobile.export.quantization import load_records

    method = next(m for m in methods if m.name.startswith("denoise_"))
    _, _, heldout = load_records(calibration, method.signature)
    if not heldout:
        raise UserError(f"the calibration set {calibration.path} has no held-out records to check the quantized "
                        "denoiser on; re-run edit-mobile calibrate with --heldout-records")
    method.inputs = tuple(tensor.clone() for tensor in heldout[0])


def trace_methods(methods: list[Method], request: PipelineRequest, calibration, scheduler=None) -> dict:
    """torch.export of each method, the denoise method quantized for a quantized request (judged
    on whole sampler runs of the held-out prompts too, through `scheduler`), each prepared as the
    target's converter takes it."""
    with torch.no_grad():
        programs = {m.name: torch.export.export(m.module, m.inputs, strict=False) for m in methods}
    if request.quantize is not None:
        from edit_mobile.export.quantization import quantize_program

        method = next(m for m in methods if m.name.startswith("denoise_"))
        check = sampler_check(methods, method, calibration, scheduler)
        programs[method.name], method.quantization = quantize_program(
            programs[method.name], backend=request.backend, scheme=request.quantize, calibration=calibration,
            signature=method.signature, denoiser=method.module, min_psnr=request.min_psnr,
            float_layers=tuple(request.float_layers), accept=check)
        if method.quantization.get("stage") == "lowered":
            method.quantize_written = written_model_quantizer(method, request, calibration, check)
        method.quantization["sampler_images"] = check.record
    if request.text_quantize is not None:
        from edit_mobile.export.quantization.text_encoder import quantize_text_encoder

        method = methods[0]  # encode_prompt
        programs[method.name], method.quantization = quantize_text_encoder(
            programs[method.name], method.module, request.text_quantize, method.output_names, method.heldout)
    target = pipeline_target(request.backend)
    return {name: target.prepare(program, name) for name, program in programs.items()}


def written_model_quantizer(method: Method, request: PipelineRequest, calibration, check) -> Callable[[Path], None]:
    """For schemes applied to the written model (onnx): quantize the file in place, float layers
    searched for --min-psnr and grown until whole sampler runs pass, as PT2E's are."""

    def quantize(path: Path) -> None:
        from edit_mobile.export.quantization import quantize_lowered

        method.quantization = quantize_lowered(
            path, backend=request.backend, scheme=request.quantize, calibration=calibration,
            signature=method.signature, record=method.quantization, min_psnr=request.min_psnr,
            float_layers=tuple(request.float_layers), accept=check)
        method.quantization["sampler_images"] = check.record

    return quantize


def sampler_check(methods: list[Method], denoise: Method, calibration, scheduler):
    """The quantized denoise method's whole-sampler image check (export/sampler_check.py)."""
    from edit_mobile.export.sampler_check import SamplerImageCheck

    decode = next(m for m in methods if m.name == decode_method(denoise.resolution))
    return SamplerImageCheck(denoise.module, decode.reference or decode.module, scheduler, calibration,
                             tuple(denoise.input_names), int(denoise.inputs[0].shape[0]))


def self_check(methods: list[Method], outputs: dict[str, list[torch.Tensor]], allow_below_floor: bool,
               runtime: str = "ExecuTorch runtime") -> dict:
    """Each method's outputs against PyTorch, held to its precision's floor."""
    from edit_mobile.closeness import closeness, meets_floor

    record, failures = {}, []
    for method in methods:
        floor = method.floor_db
        psnrs = [closeness(reference, got).psnr_db
                 for reference, got in zip(method.outputs, outputs[method.name], strict=True)]
        passed = all(meets_floor(value, floor) for value in psnrs)
        record[method.name] = {"psnr_db_min": min(psnrs), "floor_db": floor, "passed": passed}
        if not passed:
            failures.append(f"{method.name} {min(psnrs):.1f} dB (floor {floor:g})")
        images = (method.quantization or {}).get("sampler_images") or {}
        if images.get("passed") is False:
            failures.append(f"{method.name}'s held-out prompts sampled to images of "
                            f"{min(images['image_psnr_db']):.1f} dB against float (floor {images['floor_db']:g})")
    if failures and not allow_below_floor:
        remedy = ("--min-psnr 30 (keeps the most sensitive layers float)" if any(m.quantization for m in methods)
                  else "--precision fp32")
        raise UserError(f"the exported pipeline falls below its floor: {'; '.join(failures)}; nothing was written. "
                        f"Try {remedy}, or pass --allow-below-floor to keep it (recorded in the manifest)")
    return {"ran": True, "runtime": runtime, "inputs": "test vectors", "methods": record,
            "passed": not failures, **({"allowed_below_floor": True} if failures else {})}


def write_text_and_scheduler(parts, staging: Path, fixed_prompts: list[str] | None = None) -> tuple[dict, dict]:
    """The tokenizer folders (or the fixed prompts' embeddings) and scheduler/ for the app; (their
    description for the manifest, file roles). Each tokenizer's folder is named as in a diffusers
    pipeline folder (tokenizer, tokenizer_2, ...) and described with the encode_prompt inputs it fills."""
    parts.scheduler.save_config(staging / SCHEDULER_DIR)
    config = {k: v for k, v in dict(parts.scheduler.config).items() if not k.startswith("_")}
    scheduler = {"scheduler": {"class_name": type(parts.scheduler).__name__, "config": _jsonable(config)}}
    if fixed_prompts is not None:
        precomputed = write_fixed_prompts(parts, fixed_prompts, staging / PROMPTS_FILE)
        return {"text": {"precomputed": precomputed, "negative_prompt": ""}, **scheduler}, {PROMPTS_ROLE: PROMPTS_FILE}
    tokenizers = parts.text.tokenizer_inputs()
    for item in tokenizers:
        source = parts.folder / item.files if parts.folder is not None else None
        if source is not None and source.is_dir():  # the files as shipped, for the apps' readers
            shutil.copytree(source, staging / item.files)
        else:
            item.tokenizer.save_pretrained(staging / item.files)
    text = {"tokenizers": [item.describe() for item in tokenizers], "negative_prompt": "",
            **({"dropped_encoders": ["t5"]} if parts.without_t5 else {})}
    if len(tokenizers) == 1:  # schema v2.0's one-tokenizer fields, which the demo apps read
        only = tokenizers[0].describe()
        text.update(tokenizer=only["files"], tokenizer_class=only["tokenizer_class"],
                    max_length=only["max_length"], preprocessing=only["preprocessing"])
    return {"text": text, **scheduler}, {item.files: item.files for item in tokenizers}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "-inf" (DPM-Solver's lambda_min_clipped): JSON has no infinities
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def write_manifest(request: PipelineRequest, parts, methods: list[Method], text_and_scheduler: dict, files: dict,
                   records: dict, checked: dict, staging: Path) -> None:
    from edit_mobile.export.artifact import model_record

    target = pipeline_target(request.backend)
    denoise = next(m for m in methods if m.name.startswith("denoise_"))
    roles = {**files, "scheduler": SCHEDULER_DIR, "test_vectors": TEST_VECTORS_FILE}
    manifest = manifest_io.build_manifest(
        model={**model_record(request.model, parts.transformer), "pipeline_folder": str(parts.folder or "")},
        resolution=denoise.resolution, batch=request.batch, prompt_tokens=parts.prompt_tokens,
        backend=request.backend, precision=request.precision, quantization=denoise.quantization, passes=[],
        inputs=denoise.io()["inputs"], outputs=denoise.io()["outputs"],
        files={role: manifest_io.file_entry(staging, path) for role, path in sorted(roles.items())},
        delegation=target.delegation(records[denoise.name]),
        program={"format": target.program_format, "method": denoise.name,
                 "weights": "external" if "weights" in files else "embedded",
                 "methods": [m.name for m in methods]},
    )
    vae = parts.vae.config
    manifest["schema_version"] = manifest_io.PIPELINE_SCHEMA_VERSION
    manifest["pipeline"] = {
        "resolutions": [list(m.resolution) for m in methods if m.name.startswith("denoise_")],
        "methods": {m.name: {**m.io(), **target.method_record(records[m.name])} for m in methods},
        **text_and_scheduler,
        **({"text_encoder_quantization": methods[0].quantization}
           if methods[0].name == ENCODE_METHOD and methods[0].quantization else {}),
        "defaults": dict(zip(("steps", "guidance"), parts.family.sampling_defaults(parts.folder), strict=True)),
        "vae": {"scaling_factor": float(vae.scaling_factor), "shift_factor": float(parts.family.vae_shift(vae)),
                "applied_in": "decode"},
        "latent_channels": int(denoise.inputs[0].shape[1]),
    }
    manifest["self_check"] = checked
    manifest_io.write_manifest(staging, manifest)


def export_pipeline(request: PipelineRequest) -> Path:
    """Write the pipeline artifact for `request`; returns its path. Raises UserError on bad input."""
    from edit_mobile.calibration.pipeline_parts import load_pipeline_parts
    from edit_mobile.export.artifact import apply_umask
    from edit_mobile.export.backends.base import lowering_stage

    check_request(request)
    target = pipeline_target(request.backend)
    request, calibration = resolve_quantization(request)
    fixed_prompts = read_fixed_prompts(request.fixed_prompts) if request.fixed_prompts is not None else None
    parts = load_pipeline_parts(request.model, request.prompt_tokens, request.without_t5)
    methods = build_methods(parts, request)
    if calibration is not None:
        use_heldout_test_vector(methods, calibration)
    stages = tqdm(total=5, desc=f"export pipeline {request.model} -> {request.backend}", unit="stage",
                  file=sys.stderr, disable=None, leave=False)
    with atomic_output_dir(request.output, "export", request.inputs, request.force) as staging, stages:
        stages.set_postfix_str("references")
        compute_references(methods)
        write_test_vectors(methods, staging / TEST_VECTORS_FILE)
        stages.update()
        stages.set_postfix_str("torch.export and lowering")
        log_path = staging.parent / f"{Path(request.output).name}.export-error.log"
        with lowering_stage(request.backend, "lowering", log_path):
            programs = trace_methods(methods, request, calibration, parts.scheduler)
            program, files, records = target.write(programs, methods, request, staging)
        stages.update()
        stages.set_postfix_str("self-check")
        outputs = target.run(staging, files, records, methods)
        checked = (target.not_run() if outputs is None
                   else self_check(methods, outputs, request.allow_below_floor, target.runtime))
        stages.update()
        stages.set_postfix_str("bundle")
        files.update(target.bundle(program, methods, outputs, staging))
        stages.update()
        stages.set_postfix_str("manifest")
        text_and_scheduler, tokenizer_roles = write_text_and_scheduler(parts, staging, fixed_prompts)
        files.update(tokenizer_roles)
        write_manifest(request, parts, methods, text_and_scheduler, files, records, checked, staging)
        apply_umask(staging)
        stages.update()
    return Path(request.output)
