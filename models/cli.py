"""`edit-mobile convert` and `edit-mobile info`."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from edit_mobile import cli_args
from edit_mobile.models.config import EDiTConfig

MODEL_HELP = "preset name (e.g. tiny-pixart, pixart-sigma-xl-1024, sd35-medium; NAME-edit for the student) or a local diffusers folder"


def register(subparsers) -> None:
    convert = subparsers.add_parser(
        "convert",
        help="turn a PixArt / SD3 teacher into its EDiT / MM-EDiT student folder",
        description="Swap the teacher's image attention for EDiT (PixArt) or MM-EDiT (SD3) attention, "
        "reusing its weights, and write a diffusers folder that records the EDiT options: a whole pipeline "
        "folder (the teacher's text encoders, VAE and scheduler, the student in transformer/) when MODEL "
        "is a pipeline folder or a shapes preset, else a transformer folder.",
    )
    convert.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    convert.add_argument("-o", "--output", required=True, metavar="DIR",
                         help="folder to write: new, empty, or an earlier convert output")
    cli_args.add_output_force(convert)
    _add_edit_options(convert)
    convert.set_defaults(handler=run_convert)

    info = subparsers.add_parser(
        "info",
        help="parameters and FLOPs per step of teacher vs EDiT",
        description="Print parameters and attention / total FLOPs per denoising step of the model's "
        "teacher and EDiT forms at the given resolutions (counted on shapes only, no weights).",
    )
    info.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    info.add_argument(
        "--resolution", nargs="+", type=cli_args.resolution, default=None, metavar="R",
        help="pixels, R or HxW; several allowed (default: the model's sample size x its VAE scale)",
    )
    info.add_argument("--prompt-tokens", type=cli_args.prompt_tokens, default=None, help="prompt length (default: 300 PixArt-Sigma, 333 SD3)")
    info.set_defaults(handler=run_info)


# Numbers are finite and positive where EDiTConfig needs them; it checks the relations.
ARG_TYPES = {int: cli_args.positive_int, float: cli_args.float_range(0.0, what="a number")}


def _add_edit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("EDiT options (uncertain details of the paper; defaults and formulas: docs/edit.md)")
    hints = typing.get_type_hints(EDiTConfig)
    for field in dataclasses.fields(EDiTConfig):
        hint = hints[field.name]
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=None if choices else ARG_TYPES[hint],
            choices=choices,
            default=field.default,
            help=f"default: {field.default}",
        )


def run_convert(args) -> int:
    from edit_mobile.fileio import atomic_output_dir, check_output_dir
    from edit_mobile.models.conversion import convert
    from edit_mobile.models.presets import load_transformer, pipeline_folder_of

    options = EDiTConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(EDiTConfig)})
    check_output_dir(args.output, "convert", [args.model], args.force)  # before the model loads
    teacher = load_transformer(args.model)
    student = convert(teacher, options)
    pipeline = pipeline_folder_of(args.model)
    with atomic_output_dir(args.output, "convert", [args.model], args.force) as staging:
        if pipeline is None:
            student.save_pretrained(staging, safe_serialization=True)
        else:  # a pipeline in, a pipeline out: the student with the teacher's encoders, VAE, scheduler
            from edit_mobile.models.pipeline_folder import write_student_pipeline

            write_student_pipeline(pipeline, student, staging)
    parameters = sum(p.numel() for p in student.parameters())
    print(f"wrote {type(student).__name__} ({parameters / 1e6:.2f} M parameters) to {args.output}")
    return 0


def run_info(args) -> int:
    from edit_mobile.models.conversion import convert, is_edit, to_teacher
    from edit_mobile.models.flops import count_step_flops
    from edit_mobile.models.presets import load_architecture
    from edit_mobile.models.signature import (
        TransformerSignature,
        default_resolution,
    )

    model = load_architecture(args.model)
    teacher, student = (to_teacher(model), model) if is_edit(model) else (model, convert(model))
    resolutions = args.resolution or [default_resolution(model)]
    signatures = [
        TransformerSignature.of(student, height, width, prompt_tokens=args.prompt_tokens)
        for height, width in resolutions
    ]
    header = f"{'resolution':>11} {'tokens':>7} {'model':<8} {'params M':>9} {'attn GFLOP':>11} {'total GFLOP':>12} {'speed-up':>9}"
    print(f"{args.model}: FLOPs per denoising step (batch 1; attention = every attn/attn1/attn2 module)")
    print(header)
    print("-" * len(header))
    for signature in signatures:
        height, width = signature.resolution
        rows = [("teacher", count_step_flops(teacher, signature)), ("EDiT", count_step_flops(student, signature))]
        tokens = signature.latent_hw[0] * signature.latent_hw[1] // teacher.config.patch_size**2
        for label, flops in rows:
            speedup = rows[0][1].total / flops.total
            print(
                f"{f'{height}x{width}':>11} {tokens:>7} {label:<8} {flops.parameters / 1e6:>9.1f} "
                f"{flops.attention / 1e9:>11.4g} {flops.total / 1e9:>12.4g} {speedup:>8.2f}x"
            )
    return 0
