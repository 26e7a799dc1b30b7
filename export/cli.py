"""`edit-mobile export`: one denoiser step to an artifact folder for one backend."""

from __future__ import annotations

import argparse
from pathlib import Path

from edit_mobile import cli_args
from edit_mobile.errors import UserError
from edit_mobile.export.manifest import BACKENDS, COREML_CHUNK_MB, PRECISIONS
from edit_mobile.export.quantization import schemes_help

MODEL_HELP = "preset name (tiny-pixart, pixart-sigma-xl-1024, sd35-medium; NAME-edit for EDiT) or a local diffusers folder"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a denoiser step to ExecuTorch / Core ML / ONNX with a manifest",
        description="Trace one denoiser step, apply the mobile rewrite passes, lower it for a "
        "backend and write ART_DIR with manifest.json, the program, reference test vectors and "
        "the PyTorch reference model. The folder appears whole or not at all.",
    )
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    # Checked by the handler, not argparse `choices`, so that a bad value is one clear line.
    parser.add_argument("--backend", required=True, metavar="{" + ",".join(BACKENDS) + "}")
    parser.add_argument("--resolution", type=cli_args.resolution, nargs="+", default=None, metavar="R[xR2]",
                        help="pixels, R or HxW, a multiple of the family's VAE scale x patch (x 2 for PixArt and SD3): 32 "
                        "for every preset (default: the model's); "
                        "with --pipeline, several: a denoise and a decode method each")
    parser.add_argument("--pipeline", action="store_true",
                        help="the whole text-to-image pipeline with its tokenizer and scheduler: methods encode_prompt, "
                        "denoise_HxW, decode_HxW, weights stored once. xnnpack: one program (weights in "
                        "model.ptd per --weights; --quantize int8 quantizes the denoise method at the "
                        "calibration set's resolution); onnx: one model a method, weights in weights.onnx.data; "
                        "coreml: one .mlpackage a component, multifunction across resolutions (iOS18). "
                        "MODEL: a pipeline folder (or a tiny preset)")
    parser.add_argument("--precision", default=None, metavar="{" + ",".join(PRECISIONS) + "}",
                        help="default: fp16 for coreml, coreml-pte and qnn; fp32 otherwise")
    parser.add_argument("--batch", type=cli_args.int_range(1, 2, what="a batch"), default=1, metavar="{1,2}",
                        help="2 runs the conditional and unconditional branch in one call")
    passes = parser.add_mutually_exclusive_group()
    passes.add_argument("--passes", nargs="+", default=None, metavar="PASS",
                        help="rewrite passes to apply (default: the backend's; applied in the passes package's order)")
    passes.add_argument("--no-passes", action="store_true", help="export the model as it is")
    parser.add_argument("--prompt-tokens", type=cli_args.prompt_tokens, default=None,
                        help="prompt length (default: 300 PixArt-Sigma, 333 SD3)")
    parser.add_argument("--quantize", default=None, metavar="SCHEME",
                        help=f"quantization scheme (calibrated schemes need --calibration): {schemes_help()}")
    parser.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                        help="calibration set folder from `edit-mobile calibrate`")
    parser.add_argument("--min-psnr", type=cli_args.psnr_db, default=None, metavar="DB",
                        help="with --quantize (xnnpack or onnx int8): keep the most sensitive layers float "
                        "until the held-out PSNR reaches DB")
    parser.add_argument("--float-layers", nargs="+", default=(), metavar="LAYER",
                        help="with --quantize: layers to keep float (names from `edit-mobile sensitivity`)")
    parser.add_argument("--coreml-target", default=None, metavar="TARGET",
                        help="Core ML minimum deployment target, e.g. iOS17 (default), iOS18, macOS14")
    parser.add_argument("--coreml-chunk-mb", type=float, default=None, metavar="MB",
                        help="coreml: split a package with more than MB megabytes of weights into a Core ML "
                             "pipeline of chunks of at most MB each (coremltools' bisect_model), as Apple does for "
                             f"the Neural Engine (default {COREML_CHUNK_MB:g}; 0: never)")
    parser.add_argument("--onnx-opset", type=cli_args.int_range(18, 23, what="an ONNX opset"),
                        default=None, help="ONNX opset, 18 to 23 (default 18)")
    parser.add_argument("--ort", action="store_true", help="onnx: also write model.ort (ORT Mobile) and its required_operators.config (minimal build)")
    parser.add_argument("--qnn-soc", default=None, help="qnn: Snapdragon SoC, e.g. SM8750 (default)")
    parser.add_argument("--weights", choices=("auto", "embedded", "external"), default=None,
                        help="xnnpack, vulkan: keep the weights in model.pte, or outside it (ExecuTorch "
                        "program-data separation; needed past 2 GB): xnnpack in model.ptd, vulkan in shards of "
                        "at most 1 GiB, vulkan_constants_<digest>.ptd; auto (default): outside from 1 GiB")
    parser.add_argument("--text-encoder-quantize", default=None, metavar="SCHEME",
                        help="--pipeline, xnnpack: quantize the encode_prompt method too, int8-dynamic or int4-weight "
                        "(its embedding PSNR on held-out prompts is recorded)")
    parser.add_argument("--without-t5", action="store_true",
                        help="--pipeline, SD3: CLIP-L and CLIP-G only, zeros in T5's place (as "
                        "StableDiffusion3Pipeline without text_encoder_3)")
    parser.add_argument("--fixed-prompts", type=Path, default=None, metavar="FILE",
                        help="--pipeline: no text encoder on the phone; ship the embeddings of these prompts (one a "
                        "line) instead, and the app offers them only (for text encoders a phone cannot hold)")
    parser.add_argument("--seed", type=cli_args.seed, default=0, help="seed of the test vectors")
    parser.add_argument("--allow-below-floor", action="store_true",
                        help="write the artifact even if its outputs on the test vectors fall below its "
                        "precision's PSNR floor (fp32 60, fp16 40, quantized 30 dB); recorded in the manifest")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="ART_DIR",
                        help="folder to write: new, empty, or an earlier export output")
    cli_args.add_output_force(parser)
    parser.set_defaults(handler=run_export)


def run_pipeline_export(args: argparse.Namespace) -> int:
    from edit_mobile.export.backends import get_backend
    from edit_mobile.export.pipeline import PipelineRequest, export_pipeline

    if args.coreml_chunk_mb is not None:
        raise UserError("--coreml-chunk-mb splits a one-function package; --pipeline writes multifunction packages, "
                        "which coremltools cannot split: drop one of them")
    ignored = [flag for flag, value in (("--passes", args.passes), ("--no-passes", args.no_passes),
                                        ("--ort", args.ort)) if value]
    if ignored:
        raise UserError(f"{', '.join(ignored)} do not apply with --pipeline yet (the denoiser gets the backend's "
                        "default passes); drop them")
    request = PipelineRequest(
        model=args.model, output=args.output, resolutions=tuple(args.resolution or ()), backend=args.backend,
        precision=args.precision or get_backend(args.backend).default_precision, batch=args.batch,
        prompt_tokens=args.prompt_tokens,
        weights=args.weights or "auto", seed=args.seed,
        allow_below_floor=args.allow_below_floor, force=args.force, quantize=args.quantize,
        calibration=args.calibration, min_psnr=args.min_psnr, float_layers=tuple(args.float_layers),
        onnx_opset=args.onnx_opset, coreml_target=args.coreml_target,
        text_quantize=args.text_encoder_quantize, without_t5=args.without_t5, fixed_prompts=args.fixed_prompts,
    )
    print(export_pipeline(request))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from edit_mobile.export.backends import get_backend

    get_backend(args.backend)  # an unknown name fails before the heavy imports below
    if args.pipeline:
        return run_pipeline_export(args)
    if args.text_encoder_quantize or args.without_t5 or args.fixed_prompts:
        raise UserError("--text-encoder-quantize, --without-t5 and --fixed-prompts shape the pipeline's text encoder: "
                        "add --pipeline")
    if args.resolution is not None and len(args.resolution) > 1:
        raise UserError("several --resolution values need --pipeline; give one, or add --pipeline")
    if args.weights is not None and args.backend not in ("xnnpack", "vulkan"):
        raise UserError(f"--weights applies to --backend xnnpack or vulkan, not {args.backend}; drop it")
    if args.coreml_chunk_mb is not None and args.backend != "coreml":
        raise UserError(f"--coreml-chunk-mb applies to --backend coreml, not {args.backend}; drop it")
    if args.coreml_chunk_mb is not None and args.coreml_chunk_mb < 0:
        raise UserError(f"--coreml-chunk-mb {args.coreml_chunk_mb:g} is negative; give megabytes, or 0 for no chunks")
    if args.quantize is None and args.calibration is not None:
        raise UserError("--calibration is used only with --quantize SCHEME")

    from edit_mobile.export.artifact import ExportRequest, export_artifact

    options = {
        "coreml_target": args.coreml_target,
        "coreml_chunk_mb": args.coreml_chunk_mb,  # None: the backend's default
        "onnx_opset": args.onnx_opset,
        "ort_format": args.ort,
        "qnn_soc": args.qnn_soc,
        "weights": args.weights,
    }
    request = ExportRequest(
        model=args.model,
        backend=args.backend,
        output=args.output,
        resolution=args.resolution[0] if args.resolution else None,
        precision=args.precision,
        batch=args.batch,
        passes=[] if args.no_passes else args.passes,
        quantize=args.quantize,
        calibration=args.calibration,
        min_psnr=args.min_psnr,
        float_layers=tuple(args.float_layers),
        prompt_tokens=args.prompt_tokens,
        seed=args.seed,
        allow_below_floor=args.allow_below_floor,
        force=args.force,
        backend_options={key: value for key, value in options.items() if value},
    )
    path = export_artifact(request)
    print(path)
    return 0
