"""`edit-mobile validate`, `profile`, `generate` and `evaluate`: run an exported artifact.

Heavy libraries (torch, executorch, onnxruntime, diffusers) load inside the handlers, so
`edit-mobile --help` stays quick.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edit_mobile import cli_args
from edit_mobile.runtime.device_profile import DEFAULT_TIMEOUT_S  # light: no torch, no runtimes

EXIT_PASS, EXIT_FAIL = 0, 1


def register(subparsers) -> None:
    validate = subparsers.add_parser(
        "validate",
        help="compare an artifact's outputs with its PyTorch reference (exit 0 pass, 1 fail)",
        description="Run the artifact and the PyTorch reference (rebuilt from ART_DIR/reference) on the "
        "manifest's test vectors and on held-out calibration inputs (or seeded random inputs), report "
        "PSNR = 20 log10(max|ref| / RMSE), SQNR, cosine and max abs error per output, and pass if every "
        "sample's PSNR clears the precision's floor: fp32 60 dB, fp16 40 dB, quantized 30 dB (on held-out "
        "records, worst of every timestep bucket). A NaN or inf output fails.",
    )
    validate.add_argument("art_dir", metavar="ART_DIR", type=Path)
    validate.add_argument("--calibration", type=Path, metavar="DIR", help="calibration set: its held-out inputs are used")
    validate.add_argument("--samples", type=cli_args.int_range(0, 10000, what="a sample count"),
                          default=4, metavar="N", help="held-out or random inputs (default 4)")
    validate.add_argument("--quantized-floor", type=cli_args.psnr_db, default=None, metavar="DB",
                          help="PSNR floor for quantized artifacts, every held-out record (default 30)")
    validate.add_argument("--json", type=Path, metavar="FILE", help="write the full report as JSON")
    validate.add_argument("--per-layer", action="store_true",
                          help="find the first layers where the gap opens (ETDump + ETRecord; ONNX intermediates)")
    validate.add_argument("--images", nargs="?", const="", default=None, metavar="PNG",
                          help="also generate images with the artifact and with PyTorch, side by side "
                          "(default file: <ART_DIR name>-images.png)")
    validate.add_argument("--image-steps", type=cli_args.steps, default=10, metavar="S", help="denoising steps for --images (default 10)")
    validate.add_argument("--prompts", type=Path, metavar="FILE", help="prompts for --images, one a line (default: 3 shipped ones)")
    _add_pipeline_options(validate)
    validate.add_argument("--pipeline", action="store_true",
                          help="a pipeline artifact (export --pipeline; detected without the flag): generate with it and with diffusers' own "
                          "pipeline at the same seed, compare prompt embeddings, final latents and images "
                          "(pass: image PSNR >= 40 dB fp32, 25 dB fp16); --prompts, --image-steps, --images apply")
    validate.add_argument("--threads", type=cli_args.threads, metavar="T", help="runtime threads (default: the runtime's)")
    cli_args.add_output_force(validate)
    validate.set_defaults(handler=run_validate)

    profile = subparsers.add_parser(
        "profile",
        help="load time, latency, memory and per-operator time of an artifact, here or on a phone",
        description="Time loading and running the artifact (min / median / p90), report peak RSS and "
        "ExecuTorch's planned memory, and break one run down per operator (ETDump for ExecuTorch, "
        "onnxruntime's profiler for ONNX), per block and per kind (attention, MLP, conv, norm). "
        "Runs here by default. --device android[:SERIAL] (adb) or ios[:UDID] (macOS, xcrun devicectl) "
        "pushes the artifact to the demo app (android_demo/ or ios_demo/, built and installed on the phone "
        "first), runs its benchmark mode and reports the phone's figures, with per-operator times when the "
        "app's runtime records an ETDump. --etdump / --results read files made on any device; --compare puts "
        "profile JSONs (host or device) side by side.",
    )
    profile.add_argument("art_dir", metavar="ART_DIR", type=Path, nargs="?", help="the artifact (not with --compare)")
    profile.add_argument("--iters", type=cli_args.int_range(1, 100000, what="a run count"),
                         default=20, metavar="N", help="timed runs (default 20)")
    profile.add_argument("--warmup", type=cli_args.int_range(0, 10000, what="a run count"),
                         default=3, metavar="W", help="untimed runs first (default 3)")
    profile.add_argument("--threads", type=cli_args.threads, metavar="T", help="runtime threads (default: the runtime's)")
    profile.add_argument("--json", type=Path, metavar="FILE", help="write the full profile as JSON")
    profile.add_argument("--no-operators", action="store_true", help="skip the per-operator breakdown (host runs)")
    on_device = profile.add_argument_group("on a phone (needs a device with the demo app installed)")
    on_device.add_argument("--device", metavar="TARGET",
                           help="android, android:SERIAL, ios or ios:UDID: push ART_DIR to the demo app, run its "
                           "benchmark mode (--warmup, --iters, --threads) and pull its results and ETDump")
    on_device.add_argument("--timeout", type=cli_args.float_range(1.0, 86400.0, what="seconds"), metavar="SECONDS",
                           help=f"how long to wait for the app's results (default {DEFAULT_TIMEOUT_S:g})")
    offline = profile.add_argument_group("files made on a device")
    offline.add_argument("--etdump", type=Path, metavar="FILE",
                         help="per-operator times from an ETDump of ART_DIR's program made anywhere (the demo app, "
                         "ExecuTorch's executor_runner --etdump_path), attributed with the artifact's ETRecord")
    offline.add_argument("--results", type=Path, metavar="FILE",
                         help="latency and memory tables from the demo app's benchmark results JSON")
    comparing = profile.add_argument_group("comparing")
    comparing.add_argument("--compare", nargs="+", type=Path, metavar="JSON",
                           help="profile JSONs (host or device, from --json) side by side; no ART_DIR")
    comparing.add_argument("--png", type=Path, metavar="FILE", help="with --compare: latency per method as a PNG")
    cli_args.add_output_force(profile)
    profile.set_defaults(handler=run_profile)

    generate = subparsers.add_parser(
        "generate",
        help="text to image with an artifact as the denoiser",
        description="Encode the prompt, denoise with the family's scheduler and classifier-free guidance, "
        "calling the artifact at every step, decode with the VAE and write a PNG. Same seed, same image.",
    )
    generate.add_argument("art_dir", metavar="ART_DIR", type=Path)
    generate.add_argument("--prompt", required=True, help="what to draw")
    generate.add_argument("--steps", type=cli_args.steps, metavar="S", help="denoising steps (default: the family's, 20 PixArt / 28 SD3)")
    generate.add_argument("--seed", type=cli_args.seed, default=0, metavar="N")
    generate.add_argument("--guidance", type=cli_args.guidance, metavar="G", help="classifier-free guidance scale (default 4.5 PixArt / 7 SD3)")
    generate.add_argument("--size", type=cli_args.resolution, metavar="HxW", help="image size in pixels; must be the artifact's (default: it)")
    generate.add_argument("--reference", action="store_true", help="denoise with the PyTorch reference instead")
    generate.add_argument("--noise", choices=("torch", "portable"), default="torch",
                          help="pipeline artifacts: initial noise as diffusers draws it (torch, default) or as the "
                          "demo apps do (portable: the phone makes the same image from the same seed)")
    _add_pipeline_options(generate)
    generate.add_argument("--threads", type=cli_args.threads, metavar="T")
    generate.add_argument("-o", "--output", required=True, type=Path, metavar="PNG",
                          help="image to write: new, or an earlier edit-mobile PNG")
    cli_args.add_output_force(generate)
    generate.set_defaults(handler=run_generate)


    evaluate = subparsers.add_parser(
        "evaluate",
        help="prompt accuracy of a shapes-world model or artifact, judged by the shapes checker",
        description="Generate an image per caption of the shapes world and judge it: colour, shape, size and "
        "position of every object, the background and the object count. SOURCE is a shapes preset "
        "(shapes-pixart, shapes-sd3, their -edit students), a diffusers pipeline folder, or an exported "
        "artifact of one. Caption sets: seen (one object, training triples), heldout (one object, held-out "
        "triples), two (two objects), or a captions file.",
    )
    evaluate.add_argument("source", metavar="MODEL_OR_ARTIFACT")
    evaluate.add_argument("--prompts", nargs="+", default=["seen", "heldout", "two"], metavar="SET",
                          help="caption sets: seen, heldout, two, or captions files (default: all three sets)")
    evaluate.add_argument("--samples", type=cli_args.int_range(1, 10000, what="a caption count"), default=32,
                          metavar="N", help="captions per set (default 32)")
    evaluate.add_argument("--steps", type=cli_args.steps, metavar="S", help="denoising steps (default: the family's)")
    evaluate.add_argument("--guidance", type=cli_args.guidance, metavar="G", help="guidance scale (default: the family's)")
    evaluate.add_argument("--seed", type=cli_args.seed, default=0, metavar="K")
    evaluate.add_argument("--teacher", metavar="MODEL", help="also report image PSNR against this model at the same seeds")
    evaluate.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    evaluate.add_argument("--grid", type=Path, metavar="PNG", help="write the images, marked right or wrong")
    evaluate.add_argument("--threads", type=cli_args.threads, metavar="T")
    cli_args.add_output_force(evaluate)
    evaluate.set_defaults(handler=run_evaluate)


def _add_pipeline_options(parser) -> None:
    parser.add_argument("--text-encoder", type=Path, metavar="DIR", help="local pipeline or encoder folder (tiny presets: a seeded random one)")
    parser.add_argument("--embeddings", type=Path, metavar="FILE", help="precomputed prompt embeddings (.safetensors)")
    parser.add_argument("--vae", type=Path, metavar="DIR", help="diffusers AutoencoderKL folder (tiny presets: a seeded random one)")


def _console():
    """Rich console; at least 120 columns when piped, so tables stay readable in logs."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=max(120, console.width))
    return console


# --- validate --------------------------------------------------------------------------------

def _inputs(args) -> list:
    """Everything a command reads: its outputs never land on or inside these."""
    names = ("art_dir", "calibration", "text_encoder", "embeddings", "vae", "prompts", "source", "teacher",
             "etdump", "results", "compare")
    return [value for name in names for value in _as_paths(getattr(args, name, None))]


def _as_paths(value) -> list:
    """Inputs given as paths (a list for --prompts; preset names that are no path are dropped)."""
    values = value if isinstance(value, list) else [value]
    return [v for v in values if v is not None and Path(str(v)).exists()]


def _check_outputs(args, *paths) -> None:
    from edit_mobile.errors import UserError
    from edit_mobile.fileio import check_output_file

    for path, suffix in paths:
        if path is None:
            continue
        if Path(path).suffix.lower() != suffix:
            raise UserError(f"{path}: write a {suffix} file")
        check_output_file(path, _inputs(args), args.force)


def run_validate(args: argparse.Namespace) -> int:
    from edit_mobile.runtime.validate import validate

    console = _console()
    images = None
    if args.images is not None:
        images = Path(args.images) if args.images else Path(f"{args.art_dir.resolve().name}-images.png")
    _check_outputs(args, (args.json, ".json"), (images, ".png"))  # before any work
    from edit_mobile.runtime.pipeline_artifact import is_pipeline_artifact

    if args.pipeline or is_pipeline_artifact(args.art_dir):  # the flag is implied; kept for old scripts
        return run_validate_pipeline(args, console, images)
    image_options = {"steps": args.image_steps, "text_encoder": args.text_encoder, "embeddings": args.embeddings, "vae": args.vae}
    if args.prompts is not None:
        from edit_mobile.calibration import read_prompts

        image_options["prompts"] = read_prompts(args.prompts)
    image_options["write"] = lambda path, image: write_png(image, path, "validate", args)
    with console.status("validating") as status:
        report = validate(args.art_dir, args.calibration, args.samples, args.per_layer, images, image_options,
                          args.threads, progress=lambda stage: status.update(f"validating: {stage}"),
                          quantized_floor_db=args.quantized_floor)
    print_validation(console, report)
    if args.json:
        write_json(args.json, report.as_dict(), "validate", args)
    return EXIT_PASS if report.passed else EXIT_FAIL


def print_validation(console, report) -> None:
    from rich.table import Table

    console.print(f"[bold]{report.artifact}[/]: {report.description} on {report.runtime}; pass at {report.threshold.describe()}; "
                  f"verdict on {', '.join(report.verdict_inputs) or 'nothing'}")
    table = Table(show_edge=False)
    for column in ("output", "inputs", "n", "PSNR min/mean", "SQNR min", "cosine min", "max abs", "result"):
        table.add_column(column, justify="left" if column in ("output", "inputs", "result") else "right")
    for score in report.scores + report.reference_check:
        row = score.as_dict()
        label = score.source if score in report.scores else "reference/ vs stored outputs"
        table.add_row(score.output, label, str(row["samples"]), f"{_shown(row['psnr_db_min'], '.1f')} / {_shown(row['psnr_db_mean'], '.1f')}",
                      _shown(row["sqnr_db_min"], ".1f"), _shown(row["cosine_min"], ".6f"), _shown(row["max_abs"], ".3g"),
                      "[green]pass[/]" if score.passed else "[red]FAIL[/]" if score.gated else "below (info)")
    console.print(table)
    for score in report.scores:
        buckets = score.as_dict().get("per_timestep_bucket")
        if buckets and score.gated and score.source == "heldout":
            shown = ", ".join(f"{b['bucket']}: {_shown(b['psnr_db_min'], '.1f')} worst / {_shown(b['psnr_db_mean'], '.1f')} mean (n={b['n']})"
                              for b in buckets)
            console.print(f"{score.output} by timestep: {shown}")
    if report.bundled:
        matched = sum(case["passed"] for case in report.bundled)
        console.print(f"bundled program: {matched}/{len(report.bundled)} test cases verified by the ExecuTorch runtime")
    if report.per_layer is not None:
        print_per_layer(console, report.per_layer)
    if report.images is not None:
        psnrs = ", ".join(f"{image['psnr_db']:.1f}" for image in report.images["per_image"])
        console.print(f"images: {report.images['path']} (image PSNR vs PyTorch, dB: {psnrs})")
    for note in report.notes:
        console.print(f"note: {note}")
    if report.passed:
        console.print("[bold green]PASS[/]")
    else:
        for failure in report.failures:
            console.print(f"[bold red]FAIL[/] {failure}")


def _shown(value, spec: str) -> str:
    return "non-finite" if value is None else format(value, spec)


def print_per_layer(console, layers: dict) -> None:
    from rich.table import Table

    console.print(f"per-layer ({layers['runtime']}): {layers['compared']} intermediate values compared, {layers['failing']} below "
                  f"{layers['threshold_db']:g} dB")
    if layers["gap_opens_at"]:
        table = Table(title="where the gap opens", show_edge=False)
        for column in ("#", "where", "module", "op", "shape", "PSNR", "weights feeding it"):
            table.add_column(column)
        for row in layers["gap_opens_at"]:
            op = row["op"].removeprefix("aten.").removesuffix(".default")
            table.add_row(str(row["order"]), row["where"], row["module"], op, "x".join(map(str, row["shape"])),
                          f"{row['psnr_db']:.1f}", ", ".join(row["suspects"][:4]))
        console.print(table)
        first, more = layers["first_layers"][:6], len(layers["first_layers"]) - 6
        console.print(f"first layers: {', '.join(first)}" + (f" (+{more} more upstream in the same instruction)" if more > 0 else ""))
    for mismatch in layers["weight_mismatches"][:5]:
        console.print(f"exported weight differs from the reference: {mismatch['weight']} (PSNR {mismatch['psnr_db']} dB)")
    for note in layers["notes"]:
        console.print(f"note: {note}")


# --- profile ---------------------------------------------------------------------------------

def run_profile(args: argparse.Namespace) -> int:
    _check_profile_mode(args)
    if args.compare:
        return run_profile_compare(args)
    if args.device:
        return run_profile_device(args)
    if args.etdump or args.results:
        return run_profile_files(args)
    from tqdm import tqdm

    from edit_mobile.runtime.pipeline_artifact import is_pipeline_artifact
    from edit_mobile.runtime.profiling import PROFILED_RUNS, profile

    _check_outputs(args, (args.json, ".json"))
    if is_pipeline_artifact(args.art_dir):
        return run_profile_pipeline(args)
    runs = args.warmup + args.iters + (0 if args.no_operators else PROFILED_RUNS)
    with tqdm(total=runs, desc="profile", unit="run", file=sys.stderr, disable=None, leave=False) as progress:
        result = profile(args.art_dir, args.iters, args.warmup, args.threads, not args.no_operators, progress.update)
    print_profile(_console(), result)
    if args.json:
        write_json(args.json, result, "profile", args)
    return 0


def run_profile_pipeline(args: argparse.Namespace) -> int:
    from rich.table import Table
    from tqdm import tqdm

    from edit_mobile.runtime.profile_pipeline import profile_pipeline

    console = _console()
    with tqdm(desc="profile", unit="run", file=sys.stderr, disable=None, leave=False) as progress:
        result = profile_pipeline(args.art_dir, args.iters, args.warmup, args.threads, progress.update)
    console.print(f"[bold]{result['artifact']}[/]: {result['description']}; load {result['load_ms']:.0f} ms, "
                  f"peak RSS {result['memory']['peak_rss_mb']:.0f} MB (per-operator tables: denoiser-only artifacts)")
    table = Table(title="methods (ms)", show_edge=False)
    for column in ("method", "min", "median", "p90"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, stats in result["methods"].items():
        table.add_row(name, f"{stats['min']:.2f}", f"{stats['median']:.2f}", f"{stats['p90']:.2f}")
    console.print(table)
    print_image_costs(console, result["image_ms"])
    if args.json:
        write_json(args.json, result, "profile", args)
    return 0


def print_image_costs(console, image_ms: dict) -> None:
    """One image's cost per resolution, from the methods' medians (profile_pipeline.image_estimate),
    measured here or on a phone."""
    for size, image in image_ms.items():
        console.print(f"one {size} image, {image['steps']} steps{' with guidance' if image['guided'] else ''}: "
                      f"{image['total'] / 1000:.2f} s (encode {image['encode']:.0f} ms, {image['per_step']:.1f} ms a step, "
                      f"decode {image['decode']:.0f} ms)")


def _check_profile_mode(args) -> None:
    """One of: ART_DIR (here), ART_DIR --device, ART_DIR --etdump/--results, --compare JSON..."""
    from edit_mobile.errors import UserError

    if args.compare:
        extra = [flag for flag, value in (("ART_DIR", args.art_dir), ("--device", args.device), ("--etdump", args.etdump),
                                          ("--results", args.results)) if value is not None]
        if extra:
            raise UserError(f"--compare takes profile JSONs only; drop {', '.join(extra)}")
        return
    if args.art_dir is None:
        raise UserError("pass ART_DIR (an artifact folder), or --compare A.json B.json ...")
    if args.png is not None:
        raise UserError("--png draws --compare's table; pass --compare A.json B.json ... with it")
    if args.device and (args.etdump or args.results):
        raise UserError("--device runs the app and pulls its results; --etdump / --results read files you already have: "
                        "pass one or the other")
    if args.timeout is not None and not args.device:
        raise UserError("--timeout is how long --device waits for the phone; pass --device with it")


def _progress(total: int, unit: str, desc: str):
    from tqdm import tqdm

    scale = unit == "B"
    return tqdm(total=total, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000, desc=desc,
                file=sys.stderr, disable=None, leave=False)


def run_profile_device(args: argparse.Namespace) -> int:
    from edit_mobile.runtime.device_profile import BenchmarkSettings, profile_on_device

    _check_outputs(args, (args.json, ".json"))
    settings = BenchmarkSettings(args.warmup, args.iters, args.threads, args.timeout or DEFAULT_TIMEOUT_S)
    result = profile_on_device(args.art_dir, args.device, settings, _progress)
    print_device_profile(_console(), result)
    if args.json:
        write_json(args.json, result, "profile", args)
    return 0


def run_profile_files(args: argparse.Namespace) -> int:
    from edit_mobile.runtime.device_profile import profile_from_files

    _check_outputs(args, (args.json, ".json"))
    result = profile_from_files(args.art_dir, args.etdump, args.results)
    print_device_profile(_console(), result)
    if args.json:
        write_json(args.json, result, "profile", args)
    return 0


def run_profile_compare(args: argparse.Namespace) -> int:
    from edit_mobile.runtime.profile_compare import compare, latency_png

    _check_outputs(args, (args.json, ".json"), (args.png, ".png"))
    rows = compare(args.compare)
    print_comparison(_console(), rows)
    if args.json:
        write_json(args.json, {"compare": [str(path) for path in args.compare], "rows": [r.as_dict() for r in rows]},
                   "profile-compare", args)
    if args.png:
        write_png(latency_png(rows), args.png, "profile-compare", args)
        print(args.png)
    return 0


def print_profile(console, result: dict) -> None:
    from rich.table import Table

    latency, memory = result["latency_ms"], result["memory"]
    console.print(f"[bold]{result['artifact']}[/]: {result['description']} on {result['runtime']}, {result['threads']} threads")
    summary = Table(show_header=False, show_edge=False)
    summary.add_row("load", f"{result['load_ms']:.1f} ms (+ {result['verify_ms']:.1f} ms verifying file hashes)")
    summary.add_row("latency", f"min {latency['min']:.2f}  median {latency['median']:.2f}  p90 {latency['p90']:.2f} ms "
                    f"over {latency['runs']} runs")
    summary.add_row("peak RSS", f"{memory['peak_rss_mb']:.0f} MB (before load {memory['rss_before_load_mb']:.0f} MB)")
    if memory.get("planned_bytes") is not None:
        summary.add_row("planned memory", f"{memory['planned_bytes'] / 2**20:.2f} MiB activations (ExecuTorch memory plan), "
                        f"{memory['constant_and_delegate_bytes'] / 2**20:.2f} MiB weights and delegate data")
        summary.add_row("", memory["planned_note"])
    console.print(summary)
    print_operators(console, result.get("operators"))


def print_operators(console, operators: dict | None) -> None:
    from rich.table import Table

    if not operators:
        return
    coverage = operators["coverage"]
    console.print(f"per operator ({operators['source']}): {operators['ops_total_ms']:.2f} ms of ops in a {operators['run_ms']:.2f} ms run"
                  + (f" ({100 * coverage:.0f}%)" if coverage is not None else ""))
    for title, key in (("by kind", "by_kind"), ("by block", "by_block")):
        table = Table(title=title, show_edge=False)
        table.add_column(title.split()[1])
        table.add_column("ms", justify="right")
        table.add_column("share", justify="right")
        total = operators["ops_total_ms"] or 1.0
        for name, ms in list(operators[key].items())[:12]:
            table.add_row(name, f"{ms:.3f}", f"{100 * ms / total:.1f}%")
        console.print(table)
    for note in operators["notes"]:
        console.print(f"note: {note}")


def print_device_profile(console, result: dict) -> None:
    """A device run (or files from one): the latency table per method, then the per-operator tables."""
    from rich.table import Table

    console.print(f"[bold]{result['artifact']}[/]: {result['description']}")
    console.print(f"measured on {result['where']}")
    if "methods" in result:
        backends = ", ".join(result["backends"]) or "not reported"
        console.print(f"runtime backends: {backends}; threads {result['threads'] or 'default'}")
        table = Table(show_edge=False)
        for column in ("method", "load ms", "min ms", "median ms", "p90 ms", "runs", "warm-up", "peak memory"):
            table.add_column(column, justify="left" if column == "method" else "right")
        for name, method in result["methods"].items():
            latency, peak = method["latency_ms"], method["peak_memory_bytes"]
            shown_peak = "n/a" if peak is None else f"{peak / 2**20:.0f} MB ({method['memory_source']})"
            table.add_row(name, f"{method['load_ms']:.1f}", f"{latency['min']:.2f}", f"{latency['median']:.2f}",
                          f"{latency['p90']:.2f}", str(latency["runs"]), str(method["warmup"]), shown_peak)
        console.print(table)
    if result.get("image_ms"):
        print_image_costs(console, result["image_ms"])
    pushed = result.get("pushed")
    if pushed:
        console.print(f"pushed {pushed['files']} files to {pushed['device_folder']} ({pushed['unchanged']} unchanged, "
                      f"skipped); results {pushed['results']}")
    if result.get("operators"):
        print_operators(console, result["operators"])
        return
    on_device = [method["etdump"] for method in result.get("methods", {}).values() if method.get("etdump")]
    if on_device and result.get("image_ms"):
        console.print(f"note: the app wrote an ETDump of every method's runs on the device ({on_device[0]}); "
                      "per-operator tables are for denoiser artifacts")
    elif on_device:
        console.print(f"note: the app wrote an ETDump on the device ({on_device[0]}): pull it (adb pull) and pass it "
                      "with --etdump for per-operator times")
    elif "methods" in result:
        console.print("note: no ETDump from the app (its ExecuTorch runtime records one only when built with the "
                      "event tracer): no per-operator times")


def print_comparison(console, rows: list) -> None:
    from rich.table import Table

    table = Table(title="latency per method", show_edge=False)
    for column in ("profile", "measured on", "method", "runs", "min ms", "median ms", "p90 ms", "load ms", "peak MB",
                   "median vs first"):
        table.add_column(column, justify="left" if column in ("profile", "measured on", "method") else "right")
    first: dict[str, float] = {}
    for row in rows:
        base = first.setdefault(row.method, row.median_ms)
        table.add_row(row.profile, row.where, row.method, str(row.runs), f"{row.min_ms:.2f}", f"{row.median_ms:.2f}",
                      f"{row.p90_ms:.2f}", "-" if row.load_ms is None else f"{row.load_ms:.1f}",
                      "-" if row.peak_mb is None else f"{row.peak_mb:.0f}", f"{row.median_ms / base:.2f}x")
    console.print(table)


# --- generate --------------------------------------------------------------------------------

def run_validate_pipeline(args: argparse.Namespace, console, images: Path | None) -> int:
    from rich.table import Table

    from edit_mobile.runtime.validate_pipeline import validate_pipeline

    _refuse_with_pipeline(args, ("--text-encoder", args.text_encoder), ("--embeddings", args.embeddings),
                          ("--vae", args.vae), ("--calibration", args.calibration), ("--per-layer", args.per_layer))
    prompts = None
    if args.prompts is not None:
        from edit_mobile.calibration import read_prompts

        prompts = read_prompts(args.prompts)
    with console.status("validating the pipeline") as status:
        report = validate_pipeline(args.art_dir, prompts, args.image_steps, seed=0, threads=args.threads,
                                   progress=lambda prompt: status.update(f"generating: {prompt}"))
    table = Table(title=f"{args.art_dir}: pipeline vs diffusers ({report.settings['steps']} steps, "
                        f"guidance {report.settings['guidance']:g}, {report.precision})")
    for column in ("prompt", "embeddings dB", "latents dB", "image dB"):
        table.add_column(column, justify="left" if column == "prompt" else "right")
    for row in report.prompts:
        table.add_row(row["prompt"], f"{row['embeddings_psnr_db']:.1f}", f"{row['latents_psnr_db']:.1f}",
                      f"{row['image_psnr_db']:.1f}")
    console.print(table)
    console.print(f"{'PASS' if report.passed else 'FAIL'}: image PSNR floor {report.floor_db:g} dB")
    if args.json:
        write_json(args.json, report.as_dict(), "validate", args)
    if images is not None:
        from edit_mobile.runtime.images import contact_sheet

        write_png(contact_sheet(report.images, "pipeline artifact (right: diffusers)"), images, "validate", args)
    return EXIT_PASS if report.passed else EXIT_FAIL


def _refuse_with_pipeline(args, *flags) -> None:
    from edit_mobile.errors import UserError

    given = [flag for flag, value in flags if value]
    if given:
        raise UserError(f"{', '.join(given)} do not apply to a pipeline artifact (it carries its own text "
                        "encoder, decoder and tokenizer); drop them")


def run_generate_pipeline(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edit_mobile.runtime.pipeline_artifact import PipelineArtifact

    _refuse_with_pipeline(args, ("--text-encoder", args.text_encoder), ("--embeddings", args.embeddings),
                          ("--vae", args.vae), ("--reference", args.reference))
    artifact = PipelineArtifact(args.art_dir, args.threads)
    settings = artifact.default_settings(args.steps, args.guidance, args.seed)
    with tqdm(total=settings.steps, desc="denoise", unit="step", file=sys.stderr, disable=None, leave=False) as progress:
        stages = artifact.generate(args.prompt, settings, args.size, progress.update, args.noise)
    write_png(stages.image(), args.output, "generate", args)
    print(args.output)
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edit_mobile.errors import UserError
    from edit_mobile.runtime.manifest import read_manifest
    from edit_mobile.runtime.pipeline import build_pipeline
    from edit_mobile.runtime.session import load

    _check_outputs(args, (args.output, ".png"))
    manifest = read_manifest(args.art_dir)
    if manifest.pipeline is not None:
        return run_generate_pipeline(args)
    if args.noise != "torch":
        raise UserError("--noise applies to pipeline artifacts (export --pipeline); drop it")
    if args.size is not None and args.size != manifest.resolution:
        height, width = manifest.resolution
        raise UserError(f"--size {args.size[0]}x{args.size[1]}: the artifact was exported for {height}x{width} "
                        "pixels; export at the size you want, or drop --size")
    session = load(manifest, runtime="pytorch" if args.reference else None, threads=args.threads)
    pipeline = build_pipeline(session, args.text_encoder, args.embeddings, args.vae,
                              4.5 if args.guidance is None else args.guidance)
    settings = pipeline.default_settings(args.steps, args.guidance, args.seed)
    with tqdm(total=settings.steps, desc="denoise", unit="step", file=sys.stderr, disable=None, leave=False) as progress:
        image = pipeline(args.prompt, settings, progress.update)
    write_png(image, args.output, "generate", args)
    print(args.output)
    return 0


# --- evaluate --------------------------------------------------------------------------------

def run_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edit_mobile.errors import UserError
    from edit_mobile.runtime.evaluate import CAPTION_SETS, Settings, evaluate, grid_image

    _check_outputs(args, (args.json, ".json"), (args.grid, ".png"))
    for name in args.prompts:
        if name not in CAPTION_SETS and not Path(name).is_file():
            raise UserError(f"--prompts {name}: not a caption set ({', '.join(CAPTION_SETS)}) nor a captions file")
    settings = Settings(args.steps, args.guidance, args.seed)
    total = len(args.prompts) * args.samples * (2 if args.teacher else 1)
    with tqdm(total=total, desc="evaluate", unit="image", file=sys.stderr, disable=None) as bar:
        report, shown = evaluate(args.source, args.prompts, args.samples, settings, args.teacher,
                                 args.threads, bar.update)
    print_evaluation(_console(), report)
    if args.json is not None:
        write_json(args.json, report, "evaluate", args)
    if args.grid is not None:
        write_png(grid_image(shown), args.grid, "evaluate", args)
    return 0


def print_evaluation(console, report: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{report['model']}: shapes-world accuracy ({report['steps']} steps, guidance {report['guidance']:g})")
    attributes = list(report["per_attribute"])
    for column in ("captions", "n", "prompt acc", "attribute acc", *attributes):
        table.add_column(column, justify="right")
    has_psnr = "image_psnr_vs_teacher" in report
    if has_psnr:
        table.add_column("PSNR vs teacher", justify="right")
    rows = [*report["sets"].items(), ("all", report)]
    for name, entry in rows:
        cells = [name, str(entry["n"]), f"{entry['prompt_accuracy']:.3f}", f"{entry['attribute_accuracy']:.3f}",
                 *(f"{entry['per_attribute'][a]:.2f}" for a in attributes)]
        if has_psnr:
            cells.append(f"{entry['image_psnr_vs_teacher']:.1f} dB")
        table.add_row(*cells)
    console.print(table)


# --- output files ----------------------------------------------------------------------------

def write_json(path: Path, data: dict, command: str, args) -> None:
    """A JSON report stamped as ours (created_by), so a later run may replace it."""
    from edit_mobile import __version__
    from edit_mobile.fileio import atomic_write_file

    stamped = {"created_by": f"edit-mobile {__version__} {command}", **data}
    text = json.dumps(stamped, indent=2, default=_jsonable, allow_nan=False) + "\n"
    atomic_write_file(path, text.encode(), _inputs(args), args.force)


def write_png(image, path: Path, command: str, args) -> None:
    from edit_mobile.fileio import atomic_write_file, png_bytes

    atomic_write_file(path, png_bytes(image, command), _inputs(args), args.force)


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
