"""`edit-mobile sensitivity`: which layers int8 hurts, as a table and a PNG."""

from __future__ import annotations

from edit_mobile import cli_args

MODEL_HELP = "preset name (NAME-edit for EDiT) or a local diffusers folder"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sensitivity",
        help="output PSNR each layer costs when quantized alone (table + PNG)",
        description="Quantize one layer (transformer block, or Linear / Conv) at a time with the "
        "XNNPACK int8 recipe calibrated on CALIB_DIR, and report the held-out output PSNR "
        "against the float model. With --min-psnr, also name the fewest most sensitive layers "
        "to keep float for that target (export --min-psnr applies it).",
    )
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("--calibration", required=True, metavar="CALIB_DIR",
                        help="calibration set from edit-mobile calibrate (its resolution is used)")
    parser.add_argument("--scheme", default="int8-static", metavar="{int8-static,int8-dynamic}")
    parser.add_argument("--granularity", default="block", metavar="{block,linear}",
                        help="a layer is a transformer block / top-level module, or one Linear / Conv")
    parser.add_argument("--passes", nargs="+", default=[], metavar="PASS",
                        help="rewrite passes to apply first, as export would (default: none)")
    parser.add_argument("--min-psnr", type=cli_args.psnr_db, default=None, metavar="DB",
                        help="also choose float layers for this held-out PSNR")
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="folder for sensitivity.txt / .json / .png: new, empty, or an earlier sensitivity output")
    cli_args.add_output_force(parser)
    parser.set_defaults(handler=run_sensitivity)


def run_sensitivity(args) -> int:
    import torch

    from edit_mobile.calibration import load_calibration, model_sha256
    from edit_mobile.errors import UserError
    from edit_mobile.export.quantization.sensitivity import (
        SensitivityAnalysis,
        format_table,
        write_report,
    )
    from edit_mobile.fileio import atomic_output_dir, check_output_dir
    from edit_mobile.models import DenoiserWrapper, TransformerSignature, load_transformer

    if args.scheme not in ("int8-static", "int8-dynamic"):
        raise UserError(f"--scheme {args.scheme!r}: sensitivity covers int8-static and int8-dynamic")
    if args.granularity not in ("block", "linear"):
        raise UserError(f"--granularity {args.granularity!r}: choose block or linear")
    inputs = [args.model, args.calibration]
    check_output_dir(args.output, "sensitivity", inputs, args.force)  # before any work
    calibration = load_calibration(args.calibration)
    model = load_transformer(args.model)
    if model_sha256(model) != calibration.manifest["model"]["sha256"]:
        print(f"note: {args.calibration} was recorded with another model "
              f"({calibration.manifest['model']['source']}); its inputs are used as they are")
    height, width = calibration.manifest["resolution"]
    tokens = calibration.calibration.record(0)[1].shape[1]
    signature = TransformerSignature.of(model, height, width, prompt_tokens=tokens)
    calibration.check_matches(signature.inputs)
    if args.passes:
        from edit_mobile.export.passes import apply_passes

        model = apply_passes(model, args.passes)
    denoiser = DenoiserWrapper(model).eval()
    with torch.no_grad():
        exported = torch.export.export(denoiser, calibration.calibration_inputs[0], strict=False)
    analysis = SensitivityAnalysis(exported, calibration.calibration_inputs, calibration.heldout_inputs,
                                   dynamic=args.scheme == "int8-dynamic", granularity=args.granularity)
    report = analysis.report(args.scheme)
    choice = analysis.choose_float_layers(args.min_psnr, report) if args.min_psnr is not None else None
    with atomic_output_dir(args.output, "sensitivity", inputs, args.force) as staging:
        write_report(report, staging, args.min_psnr, choice)
    print(format_table(report, choice))
    print(f"wrote {args.output}/sensitivity.txt, .json, .png")
    if choice is not None and not choice.target_met:
        raise UserError(
            f"{args.scheme} cannot reach {args.min_psnr:g} dB held-out PSNR unless every layer stays float; "
            "lower --min-psnr or use int8-dynamic"
        )
    return 0
