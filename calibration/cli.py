"""`edit-mobile calibrate`. (`sensitivity` needs the quantizers: edit_mobile.export.quantization.cli.)"""

from __future__ import annotations

from edit_mobile import cli_args

MODEL_HELP = (
    "preset name (e.g. tiny-pixart, pixart-sigma-xl-1024, sd35-medium; NAME-edit for the student) "
    "or a local diffusers folder"
)


def register(subparsers) -> None:
    calibrate = subparsers.add_parser(
        "calibrate",
        help="record the denoiser's inputs along real sampler trajectories, for quantization",
        description="Encode prompts with the family's text encoder, run the family's diffusers "
        "sampler with classifier-free guidance, and store the transformer's inputs at "
        "every step (a stratified subset across timesteps, plus a held-out split of unseen "
        "prompts) as safetensors with a manifest. Deterministic for a seed.",
    )
    calibrate.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    calibrate.add_argument("-o", "--output", required=True, metavar="CALIB_DIR",
                           help="folder to write: new, empty, or an earlier calibrate output")
    cli_args.add_output_force(calibrate)
    source = calibrate.add_argument_group("prompts (default: the shipped set of varied prompts)")
    source.add_argument("--prompts", metavar="FILE", help="UTF-8 text, one prompt a line, # comments")
    source.add_argument("--text-encoder", metavar="DIR",
                        help="local pipeline folder with the family's text encoder(s) and tokenizers "
                        "(PixArt: T5; SD3: CLIP-L, CLIP-G, T5); default for tiny presets: a small "
                        "random encoder of the right width")
    source.add_argument("--embeddings", metavar="FILE.safetensors",
                        help="precomputed prompt_embeds [+ negative_/pooled_ ones] instead of prompts")
    source.add_argument("--random-text-encoder", action="store_true",
                        help="use a seeded random encoder of the right width for any model "
                        "(pipeline tests without weights; not for real quantization)")
    sampling = calibrate.add_argument_group("sampling")
    sampling.add_argument("--steps", type=cli_args.steps, help="sampler steps (default: PixArt 20, SD3 28)")
    sampling.add_argument("--samples", type=cli_args.int_range(1, 100000, what="a trajectory count"), default=16, help="trajectories, one prompt each (default 16)")
    sampling.add_argument("--guidance", type=cli_args.guidance, help="CFG scale (default: PixArt 4.5, SD3 7.0; <= 1: none)")
    sampling.add_argument("--resolution", type=cli_args.resolution, metavar="R", help="pixels, R or HxW (default: the model's)")
    sampling.add_argument("--prompt-tokens", type=cli_args.prompt_tokens, help="prompt length (default: PixArt-Sigma 300, SD3 333)")
    sampling.add_argument("--seed", type=cli_args.seed, default=0)
    sampling.add_argument("--trajectory", default="sampler", metavar="{sampler,forward}",
                          help="sampler: the model's own denoising trajectories (default); forward: "
                          "latents of the forward process at the sampler's timesteps, for models "
                          "without trained weights, whose trajectories diverge")
    kept = calibrate.add_argument_group("records kept")
    kept.add_argument("--records", type=cli_args.int_range(1, 100000, what="a record count"), default=128, help="calibration records (default 128)")
    kept.add_argument("--heldout-records", type=cli_args.int_range(0, 100000, what="a record count"), default=32, help="held-out records (default 32)")
    kept.add_argument("--heldout-fraction", type=cli_args.fraction, default=0.25,
                      help="share of the prompts held out (default 0.25)")
    calibrate.set_defaults(handler=run_calibrate)



def run_calibrate(args) -> int:
    from edit_mobile.calibration.calibration_set import load_calibration
    from edit_mobile.calibration.capture import CalibrationOptions, capture_calibration
    from edit_mobile.errors import UserError
    from edit_mobile.fileio import check_output_dir

    if args.prompts and args.embeddings:
        raise UserError("pass either --prompts or --embeddings, not both")
    inputs = [args.model, args.prompts, args.text_encoder, args.embeddings]
    check_output_dir(args.output, "calibrate", inputs, args.force)  # before any work
    options = CalibrationOptions(
        steps=args.steps,
        samples=args.samples,
        guidance=args.guidance,
        resolution=args.resolution,
        prompt_tokens=args.prompt_tokens,
        seed=args.seed,
        records=args.records,
        heldout_records=args.heldout_records,
        heldout_fraction=args.heldout_fraction,
        trajectory=args.trajectory,
    )
    capture_calibration(
        args.model,
        args.output,
        prompts_path=args.prompts,
        text_encoder_dir=args.text_encoder,
        embeddings_path=args.embeddings,
        random_text_encoder=args.random_text_encoder,
        options=options,
        inputs=inputs,
        force=args.force,
    )
    calibration = load_calibration(args.output)
    manifest = calibration.manifest
    print(
        f"wrote {len(calibration.calibration)} calibration + {len(calibration.heldout)} held-out "
        f"records ({manifest['steps']} steps, {manifest['samples']} prompts, seed {manifest['seed']}, "
        f"{manifest['resolution'][0]}x{manifest['resolution'][1]} px) to {args.output}"
    )
    return 0
