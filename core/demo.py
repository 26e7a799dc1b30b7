"""`make demo`: the whole flow on the shipped, trained shapes-pixart teacher, in minutes on 2 cores.

convert -> info -> calibrate (shapes captions) -> export (XNNPACK fp32 and int8, ONNX, Core ML) ->
validate -> profile -> evaluate (prompt accuracy judged by the shapes checker: teacher, EDiT
student, each artifact that runs here) -> a grid of captions with teacher | student | phone
artifact images side by side -> one summary table. Every stage is the real `edit-mobile` command;
the table is read from their JSON reports. Everything lands in demo_out/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edit_mobile.main import main as cli

# (name, backend, extra export flags); Core ML runs only on macOS: it is exported and inspected.
ARTIFACTS = (
    ("xnnpack-fp32", "xnnpack", []),
    ("xnnpack-int8", "xnnpack", ["--quantize", "int8", "--calibration", "{calib}"]),
    ("onnx-fp32", "onnx", []),
    ("coreml-fp16", "coreml", []),
)
RUNNABLE_HERE = {"xnnpack", "onnx"}
# Caption sets and count for `evaluate` (about 2 s an image at 20 steps with guidance here).
EVAL_SETS, EVAL_SAMPLES = ["seen", "heldout"], 8
GRID_COLUMNS = 8  # evaluate's grid layout, which side_by_side reads cells from


def run(argv: list[str], allowed: tuple[int, ...] = (0,)) -> int:
    print(f"\n$ edit-mobile {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    code = cli(argv)
    print(f"  ({time.perf_counter() - started:.1f} s, exit {code})", flush=True)
    if code not in allowed:
        raise SystemExit(f"demo stopped: `edit-mobile {' '.join(argv)}` exited {code}")
    return code


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def program_bytes(artifact: Path) -> int:
    entry = json.loads((artifact / "manifest.json").read_text())["files"]["program"]
    program = artifact / entry["path"]
    return folder_bytes(program) if program.is_dir() else program.stat().st_size


def summary_row(name: str, backend: str, artifact: Path, reports: Path) -> dict:
    manifest = json.loads((artifact / "manifest.json").read_text())
    row = {
        "artifact": name,
        "backend": backend,
        "precision": (manifest.get("quantization") or {}).get("scheme") or manifest["precision"],
        "size_mb": program_bytes(artifact) / 1e6,
        "median_ms": None,
        "psnr_db": None,
        "delegated": (manifest.get("delegation") or {}).get("flops_share_delegated"),
        "validation": "inspected",
        "prompt_accuracy": None,
    }
    validation, profile = reports / f"{name}-validate.json", reports / f"{name}-profile.json"
    if validation.exists():
        report = json.loads(validation.read_text())
        judged = [o["psnr_db_min"] for o in _validation_rows(report)]
        row["psnr_db"] = None if None in judged else min(judged)  # None: a non-finite output
        row["validation"] = "pass" if report["passed"] else "FAIL"
    if profile.exists():
        row["median_ms"] = json.loads(profile.read_text())["latency_ms"]["median"]
    evaluation = reports / f"{name}-evaluate.json"
    if evaluation.exists():
        row["prompt_accuracy"] = json.loads(evaluation.read_text())["prompt_accuracy"]
    return row


def _validation_rows(report: dict) -> list[dict]:
    """The per-output rows of `validate --json` that decide pass or fail."""
    return [row for row in report["outputs"] if row["gated"]]


def print_summary(rows: list[dict]) -> None:
    header = (f"{'artifact':<14} {'backend':<8} {'precision':<12} {'size MB':>8} {'median ms':>10} {'PSNR dB':>8} "
              f"{'delegated':>10} {'validate':>9} {'prompt acc':>10}")
    print("\nSummary (PSNR vs the PyTorch reference as validate gates it: the worst sample, held-out "
          "records for quantized; Core ML runs only on macOS)")
    print(header)
    print("-" * len(header))
    for row in rows:
        median = f"{row['median_ms']:.2f}" if row["median_ms"] is not None else "-"
        psnr = f"{row['psnr_db']:.1f}" if row["psnr_db"] is not None else "-"
        share = f"{row['delegated']:.1%}" if row["delegated"] is not None else "-"
        accuracy = f"{row['prompt_accuracy']:.2f}" if row.get("prompt_accuracy") is not None else "-"
        print(f"{row['artifact']:<14} {row['backend']:<8} {row['precision']:<12} {row['size_mb']:>8.2f} {median:>10} "
              f"{psnr:>8} {share:>10} {row['validation']:>9} {accuracy:>10}")


def evaluate(source: str, name: str, reports: Path, grids: Path) -> None:
    run(["evaluate", source, "--prompts", *EVAL_SETS, "--samples", str(EVAL_SAMPLES),
         "--json", str(reports / f"{name}-evaluate.json"), "--grid", str(grids / f"{name}.png")])


def side_by_side(grids: list[Path], titles: list[str], count: int, target: Path, cell: int = 128, label: int = 30) -> None:
    """One row a caption: its cell (image under its caption and verdict bar) from each model's
    evaluate grid, left to right in the order given."""
    from PIL import Image, ImageDraw

    sources = [Image.open(path).convert("RGB") for path in grids]
    header = 16
    canvas = Image.new("RGB", (len(sources) * cell, header + count * (cell + label)), "white")
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(titles):
        draw.text((column * cell + 4, 2), title, fill="black")
    for index in range(count):
        x, y = (index % GRID_COLUMNS) * cell, (index // GRID_COLUMNS) * (cell + label)
        for column, source in enumerate(sources):
            canvas.paste(source.crop((x, y, x + cell, y + cell + label)), (column * cell, header + index * (cell + label)))
    canvas.save(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edit_mobile.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-pixart", help="shapes teacher preset or pipeline folder (default shapes-pixart)")
    parser.add_argument("-o", "--output", default="demo_out", help="folder for everything made (default demo_out)")
    args = parser.parse_args(argv)
    out = Path(args.output)
    reports, grids = out / "reports", out / "grids"
    reports.mkdir(parents=True, exist_ok=True)
    grids.mkdir(exist_ok=True)
    student, calib, captions = out / "student", out / "calibration", out / "captions.txt"

    run(["convert", args.model, "-o", str(student)])
    run(["info", str(student), "--resolution", "256", "1024", "2048"])
    write_captions(captions)
    # 16 records: static int8 observers cost ~2 s a record here, and 16 cover the schedule.
    run(["calibrate", str(student), "--prompts", str(captions), "--samples", "8", "--steps", "10",
         "--records", "16", "--heldout-records", "8", "-o", str(calib)])
    evaluate(args.model, "teacher", reports, grids)
    evaluate(str(student), "student", reports, grids)
    rows = []
    for name, backend, flags in ARTIFACTS:
        artifact = out / name
        flags = [flag.replace("{calib}", str(calib)) for flag in flags]
        run(["export", str(student), "--backend", backend, *flags, "-o", str(artifact)])
        if backend in RUNNABLE_HERE:
            # A failed gate (exit 1) is a result to show, not a reason to stop.
            run(["validate", str(artifact), "--calibration", str(calib),
                 "--json", str(reports / f"{name}-validate.json")], allowed=(0, 1))
            run(["profile", str(artifact), "--iters", "20",
                 "--json", str(reports / f"{name}-profile.json")])
            evaluate(str(artifact), name, reports, grids)
        rows.append(summary_row(name, backend, artifact, reports))
    print_summary(rows)
    (reports / "summary.json").write_text(json.dumps(rows, indent=2))
    columns = ["teacher", "student", "xnnpack-fp32", "xnnpack-int8"]
    side_by_side([grids / f"{c}.png" for c in columns], columns, len(EVAL_SETS) * EVAL_SAMPLES, out / "images.png")
    for name in ("teacher", "student"):
        accuracy = json.loads((reports / f"{name}-evaluate.json").read_text())["prompt_accuracy"]
        print(f"{name:<14} prompt accuracy {accuracy:.2f} (PyTorch, diffusers pipeline)")
    print(f"\nimages (teacher | student | XNNPACK fp32 | XNNPACK int8): {out / 'images.png'}; reports: {reports}")
    return 0


def write_captions(path: Path, count: int = 24) -> None:
    """Calibration captions: training scenes of the shapes world, one and two objects."""
    from edit_mobile.shapes import sample_training_captions

    path.write_text("".join(f"{c.caption}\n" for c in sample_training_captions(count, seed=7)))


if __name__ == "__main__":
    sys.exit(main())
