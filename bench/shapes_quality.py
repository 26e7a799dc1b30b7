"""Prompt accuracy of the shipped shapes models and their students and artifacts (not a test).

For each teacher (shapes-pixart, shapes-sd3): the teacher, its converted (undistilled) student,
its shipped distilled student (shapes-*-edit), the teacher's XNNPACK fp32 and int8-static programs,
its fp32 and int8 pipeline artifacts (what the apps load) and its onnxruntime int8-static
denoiser, alone and in an onnxruntime pipeline, each judged by `edit-mobile evaluate` on the same
captions and seeds (seen and held-out one-object captions, two-object captions).
Every stage is the real CLI; results land in bench/measured/shapes_quality/ (JSON per model, the
grids, and summary.json), and the table is printed.

    python bench/shapes_quality.py [--samples 32] [--families pixart sd3] [--no-teacher] [--no-student]
                                   [--artifacts xnnpack-fp32 ... onnx-pipeline-int8]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from machine import cpu_name  # bench/machine.py, beside this script

from edit_mobile.main import main as cli

# Reports and grids are committed (bench/measured/); the exported programs are scratch (build/).
RESULTS = Path(__file__).resolve().parent / "measured" / "shapes_quality"
WORK = Path(__file__).resolve().parent.parent / "build" / "bench_shapes_quality"
SETS = ["seen", "heldout", "two"]
INT8 = ["--quantize", "int8", "--calibration", "CALIB"]
XNNPACK = ["--backend", "xnnpack"]
# (name, export flags): float, int8-static with every layer it can quantize (below its 30 dB floor
# on trained weights: kept anyway to show the cost), int8 with the sensitive layers float, the
# int8 text-to-image pipeline the apps load, and onnxruntime's int8-static (QDQ) denoiser with its
# sensitive blocks float for the same 30 dB, alone and in an onnxruntime pipeline.
ARTIFACTS = (("xnnpack-fp32", XNNPACK), ("xnnpack-int8-all", [*XNNPACK, *INT8, "--allow-below-floor"]),
             ("xnnpack-int8", [*XNNPACK, *INT8, "--min-psnr", "30"]), ("pipeline-fp32", [*XNNPACK, "--pipeline"]),
             ("pipeline-int8", [*XNNPACK, "--pipeline", *INT8, "--min-psnr", "30"]),
             ("onnx-int8", ["--backend", "onnx", *INT8, "--min-psnr", "30"]),
             ("onnx-pipeline-int8", ["--backend", "onnx", "--pipeline", *INT8, "--min-psnr", "30"]))
TARGET_INT8_GAP = 0.05  # issue 10: int8 prompt accuracy within 0.05 of float


def run(argv: list[str]) -> None:
    print(f"$ edit-mobile {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    code = cli(argv)
    print(f"  ({time.perf_counter() - started:.0f} s, exit {code})", flush=True)
    if code != 0:
        raise SystemExit(f"stopped: exit {code}")


def evaluate(source: str, name: str, samples: int, teacher: str | None = None) -> dict:
    report = RESULTS / f"{name}.json"
    extra = ["--teacher", teacher] if teacher else []
    run(["evaluate", source, "--prompts", *SETS, "--samples", str(samples), *extra,
         "--json", str(report), "--grid", str(RESULTS / f"{name}.png"), "--force"])
    return json.loads(report.read_text())



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32, help="captions per set (default 32)")
    parser.add_argument("--families", nargs="+", default=["pixart", "sd3"])
    parser.add_argument("--no-artifacts", action="store_true", help="skip the exported programs")
    parser.add_argument("--no-student", action="store_true",
                        help="skip the students (converted, and the shipped distilled one)")
    parser.add_argument("--no-teacher", action="store_true", help="skip the teacher (its earlier row is kept)")
    parser.add_argument("--artifacts", nargs="+", choices=[name for name, _ in ARTIFACTS],
                        default=[name for name, _ in ARTIFACTS], help="which exported programs (default all)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for family in args.families:
        teacher = f"shapes-{family}"
        work = WORK / family
        variants = [] if args.no_teacher else [(teacher, teacher, None)]
        if not args.no_student:
            converted = work / "converted"
            work.mkdir(parents=True, exist_ok=True)
            run(["convert", teacher, "-o", str(converted), "--force"])
            variants += [(str(converted), f"{teacher}-converted", teacher), (f"{teacher}-edit", f"{teacher}-edit", teacher)]
        chosen = [] if args.no_artifacts else [(n, f) for n, f in ARTIFACTS if n in args.artifacts]
        if chosen:
            calib = work / "calibration"
            captions = work / "captions.txt"
            work.mkdir(parents=True, exist_ok=True)
            from edit_mobile.shapes import sample_training_captions

            captions.write_text("".join(f"{c.caption}\n" for c in sample_training_captions(24, seed=7)))
            if any("CALIB" in flags for _, flags in chosen):
                run(["calibrate", teacher, "--prompts", str(captions), "--samples", "16",
                     "--records", "32", "--heldout-records", "16", "-o", str(calib), "--force"])
            for name, flags in chosen:
                artifact = work / name
                flags = [str(calib) if flag == "CALIB" else flag for flag in flags]
                run(["export", teacher, *flags, "-o", str(artifact), "--force"])
                variants.append((str(artifact), f"{teacher}-{name}", teacher))
        for source, name, reference in variants:
            report = evaluate(source, name, args.samples, reference)
            rows.append({"model": name, **{s: report["sets"][s]["prompt_accuracy"] for s in SETS},
                         "all": report["prompt_accuracy"], "psnr_vs_teacher": report.get("image_psnr_vs_teacher")})
    print(f"\nshapes-world prompt accuracy, {args.samples} captions a set, family default steps and guidance ({cpu_name()})")
    print(f"{'model':<30} {'seen':>6} {'heldout':>8} {'two':>6} {'all':>6} {'PSNR vs teacher':>16}")
    for row in rows:
        psnr = f"{row['psnr_vs_teacher']:.1f} dB" if row["psnr_vs_teacher"] is not None else "-"
        print(f"{row['model']:<30} {row['seen']:>6.2f} {row['heldout']:>8.2f} {row['two']:>6.2f} {row['all']:>6.2f} {psnr:>16}")
    print_int8_gaps(write_summary(rows, args.samples))


def write_summary(rows: list[dict], samples: int) -> list[dict]:
    """summary.json: this run's rows replace earlier rows of the same models (a run of one family
    keeps the other's), each row with the CPU it was measured on."""
    path = RESULTS / "summary.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    earlier = [{"cpu": data.get("cpu"), "samples": data.get("samples"), **row} for row in data.get("rows", [])]
    fresh = {row["model"]: {**row, "cpu": cpu_name(), "samples": samples} for row in rows}
    kept = [row for row in earlier if row["model"] not in fresh]
    merged = kept + list(fresh.values())
    path.write_text(json.dumps({"rows": merged}, indent=2) + "\n")
    return merged


def print_int8_gaps(rows: list[dict]) -> None:
    """Each int8 artifact's prompt accuracy against its float teacher's, per set (this run's
    rows and the summary's earlier ones)."""
    float_rows = {row["model"]: row for row in rows}
    for row in rows:
        teacher = float_rows.get(re.split(r"-(?:xnnpack|pipeline|onnx)-", row["model"])[0])
        if "int8" not in row["model"] or teacher is None:
            continue
        gaps = {s: teacher[s] - row[s] for s in [*SETS, "all"]}
        met = all(gap <= TARGET_INT8_GAP for gap in gaps.values())
        shown = " ".join(f"{s} {gap:+.2f}" for s, gap in gaps.items())
        print(f"{row['model']}: float minus int8 {shown} -> within {TARGET_INT8_GAP}: {'met' if met else 'unmet'}")


if __name__ == "__main__":
    main()
