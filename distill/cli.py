"""`edit-mobile distill`: a converted EDiT / MM-EDiT student learns its teacher back."""

from __future__ import annotations

import argparse

from edit_mobile import cli_args

DEFAULT_SAMPLES = 256  # teacher samples made from the prompts
WORK_SUFFIX = ".distill-work"  # beside the output: data cache, checkpoint, running log


def _weights(text: str):
    from edit_mobile.distill.losses import LossWeights

    try:
        return LossWeights.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None


def _schedule(text: str):
    from edit_mobile.distill.engine import parse_schedule

    try:
        return parse_schedule(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err}; e.g. 256:2000,512:1000") from None


def _scales(text: str):
    from edit_mobile.distill.guidance import parse_scales

    try:
        return parse_scales(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}; e.g. 1.5,2,2.5") from None


def register(subparsers) -> None:
    from edit_mobile.models.cli import MODEL_HELP, _add_edit_options

    parser = subparsers.add_parser(
        "distill",
        help="distil an EDiT / MM-EDiT student from its teacher (torchrun for several processes)",
        description="Train the EDiT student to match its teacher: task loss + output distillation + per-layer "
        "feature distillation at every swapped attention. Data: the teacher's own samples for --prompts "
        "and/or captioned --images. Runs in one process or under `torchrun --nproc_per_node N -m edit_mobile "
        "distill ...` (DDP, or FSDP2 with --shard). Checkpoints every --checkpoint-every steps in OUT" + WORK_SUFFIX + "/; --resume "
        "continues a killed run. Writes a diffusers folder every other command takes as MODEL.",
    )
    parser.add_argument("teacher", metavar="TEACHER", help=MODEL_HELP + " (the teacher)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="student folder to write")
    parser.add_argument("--student", metavar="DIR", help="an EDiT student folder to start from (default: "
                        "convert TEACHER with the EDiT options below)")
    parser.add_argument("--prompts", metavar="FILE", help="prompts the teacher makes training samples for "
                        "(default: shapes-world training captions for a shapes teacher, else the shipped prompts)")
    parser.add_argument("--samples", type=cli_args.positive_int, default=DEFAULT_SAMPLES,
                        help=f"teacher samples to make from the prompts (default {DEFAULT_SAMPLES})")
    parser.add_argument("--images", metavar="DIR", help="captioned images (metadata.jsonl or name.txt beside each)")
    parser.add_argument("--schedule", type=_schedule, default=None, metavar="PX:STEPS,...",
                        help="progressive resolution, e.g. 256:2000,512:1000 (default: the teacher's size, 300 steps)")
    parser.add_argument("--train", choices=("new", "attention", "all"), default="attention",
                        help="new EDiT parts only, + the swapped attentions' projections (default), or all")
    parser.add_argument("--loss-weights", type=_weights, default="1,0.5,0.5", metavar="T,O,F",
                        help="task, output and feature loss weights (default 1,0.5,0.5)")
    parser.add_argument("--batch", type=cli_args.positive_int, default=8, help="global batch (default 8)")
    parser.add_argument("--lr", type=cli_args.float_range(0.0, 1.0, what="a learning rate"), default=2e-4)
    parser.add_argument("--accumulate", type=cli_args.positive_int, default=1, help="gradient accumulation steps")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (where the device has it)")
    parser.add_argument("--shard", action="store_true",
                        help="FSDP2: split the student's weights, gradients and optimizer state over the processes "
                        "(one unit per transformer block) instead of a copy in each (DDP); for students that do not "
                        "fit one device")
    parser.add_argument("--checkpoint-every", type=cli_args.positive_int, default=100, metavar="K")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in OUT" + WORK_SUFFIX)
    parser.add_argument("--steps", type=cli_args.positive_int, default=None,
                        help="teacher sampler steps for its samples (default: the family's)")
    parser.add_argument("--guidance", type=cli_args.float_range(0.0, what="a guidance scale"), default=None)
    parser.add_argument("--prompt-tokens", type=cli_args.prompt_tokens, default=None)
    parser.add_argument("--eval-samples", type=cli_args.int_range(0), default=32,
                        help="held-out captions `evaluate` scores at the end (shapes teachers; 0: skip)")
    parser.add_argument("--tune-guidance", type=_scales, default=None, metavar="G,G,...",
                        help="shapes teachers: score the student at these guidance scales on --tune-samples seen "
                        "captions and record the best in its edit_mobile_sampling.json (default: keep the teacher's)")
    parser.add_argument("--tune-samples", type=cli_args.positive_int, default=64,
                        help="seen captions per scale for --tune-guidance (default 64)")
    parser.add_argument("--seed", type=cli_args.int_range(0), default=0)
    cli_args.add_output_force(parser)
    _add_edit_options(parser)
    parser.set_defaults(handler=run_distill)


def run_distill(args) -> int:
    from edit_mobile.distill.run import distill

    return distill(args)
