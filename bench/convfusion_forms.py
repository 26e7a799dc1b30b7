"""The ConvFusion question (not a test): what each query form is worth in accuracy and in latency.

Each form of EDiT's query path is distilled from the shipped shapes PixArt teacher under the same
budget (`edit-mobile distill`, same schedule, samples and seed), and scored by the held-out
prompt accuracy `distill` measures at its end (shapes captions never seen in training, the
teacher scored on the same captions and seeds). Its latency is that of the same form at
PixArt-Sigma XL width in ExecuTorch (bench/export_latency.py's JSON, passed with --latency).

  form        convert options            at XL width (export_latency model)
  full        (default: 3x3 conv to C/4)  edit
  grouped-g8  --fusion-groups 8           edit-g8
  depthwise   --fusion-groups C/4         edit-g288 (one group per reduced channel)
  none        --fusion none               edit-none

    python bench/convfusion_forms.py --latency build/convfusion-latency/export_latency_2t.json
        [--steps 500] [--samples 64] [--eval-samples 32]

Distilled students are kept under build/convfusion/FORM (a form already there is not re-run).
Writes bench/measured/convfusion_forms.json, a table and a PNG (accuracy against speed-up).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from machine import cpu_name  # bench/machine.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "convfusion"
RESULTS = Path(__file__).resolve().parent / "measured"
SHAPES_REDUCED = 128 // 4  # the shapes teacher's width over the default fusion reduction
FORMS = {  # form -> (convert options at shapes width, export_latency model at XL width)
    "full": ([], "edit"),
    "grouped-g8": (["--fusion-groups", "8"], "edit-g8"),
    "depthwise": (["--fusion-groups", str(SHAPES_REDUCED)], "edit-g288"),
    "none": (["--fusion", "none"], "edit-none"),
}


def distill(form: str, args) -> dict:
    """The form's distill.json, distilling it first if it is not there yet."""
    out = WORK / form
    record = out / "distill.json"
    if not record.is_file():
        options, _ = FORMS[form]
        command = [sys.executable, "-m", "edit_mobile", "distill", "shapes-pixart", "-o", str(out),
                   "--schedule", f"256:{args.steps}", "--samples", str(args.samples),
                   "--eval-samples", str(args.eval_samples), "--seed", "0", *options]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True)
    return json.loads(record.read_text())


def latencies(path: Path) -> dict[tuple[str, int], dict]:
    """(model, resolution) -> the fp32 row of an export_latency JSON."""
    rows = json.loads(path.read_text())["rows"]
    return {(row["model"], row["resolution"]): row for row in rows if row.get("precision", "fp32") == "fp32"}


def table(args) -> list[dict]:
    timed = latencies(args.latency)
    resolutions = sorted({resolution for _, resolution in timed})
    rows = []
    for form, (_, model) in FORMS.items():
        evaluated = distill(form, args)["evaluate"]
        row = {"form": form, "student": evaluated["student"], "teacher": evaluated["teacher"]}
        for resolution in resolutions:
            mine, teacher = timed.get((model, resolution)), timed.get(("teacher", resolution))
            if mine and teacher and mine.get("executorch_ms") and teacher.get("executorch_ms"):
                row[f"executorch_ms_{resolution}"] = mine["executorch_ms"]
                row[f"speedup_{resolution}"] = teacher["executorch_ms"] / mine["executorch_ms"]
        rows.append(row)
    return rows


def print_table(rows: list[dict], args) -> None:
    resolutions = sorted(int(k.rsplit("_", 1)[1]) for k in rows[0] if k.startswith("speedup_"))
    teacher = rows[0]["teacher"]
    print(f"\nConvFusion forms: distilled from shapes-pixart (256:{args.steps}, {args.samples} samples), held-out "
          f"prompt accuracy on {teacher['n']} captions (teacher {teacher['prompt_accuracy']:.3f}); ExecuTorch "
          f"latency at PixArt-Sigma XL width from {args.latency.name} ({cpu_name()})")
    head = "".join(f" {f'ET ms {r}':>10} {f'x {r}':>7}" for r in resolutions)
    print(f"{'form':<11} {'prompt acc':>10} {'attr acc':>8} {'PSNR dB':>8}{head}")
    for row in rows:
        student = row["student"]
        cells = "".join(f" {row.get(f'executorch_ms_{r}', float('nan')):>10.0f} {row.get(f'speedup_{r}', float('nan')):>6.2f}x"
                        for r in resolutions)
        print(f"{row['form']:<11} {student['prompt_accuracy']:>10.3f} {student['attribute_accuracy']:>8.3f} "
              f"{student.get('image_psnr_vs_teacher', float('nan')):>8.1f}{cells}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = max((k for k in rows[0] if k.startswith("speedup_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    figure, axes = plt.subplots(figsize=(6, 4))
    for row in rows:
        axes.scatter(row.get(key, float("nan")), row["student"]["prompt_accuracy"])
        axes.annotate(row["form"], (row.get(key, float("nan")), row["student"]["prompt_accuracy"]))
    axes.axhline(rows[0]["teacher"]["prompt_accuracy"], linestyle="--", color="gray", label="teacher")
    axes.set_xlabel(f"ExecuTorch speed-up over the teacher at {key.rsplit('_', 1)[1]} px (XL width)")
    axes.set_ylabel("held-out prompt accuracy (shapes, distilled)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=Path, help="bench/export_latency.py's JSON with the models teacher, "
                        "edit, edit-g8, edit-g288, edit-none (required unless --distill-only)")
    parser.add_argument("--distill-only", action="store_true", help="distil the forms not distilled yet, then stop")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=32)
    args = parser.parse_args()
    if args.distill_only:
        for form in FORMS:
            distill(form, args)
        return
    if args.latency is None:
        parser.error("--latency FILE is required (or --distill-only)")
    rows = table(args)
    print_table(rows, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "convfusion_forms.json").write_text(json.dumps(
        {"cpu": cpu_name(), "steps": args.steps, "samples": args.samples, "latency": args.latency.name,
         "rows": rows}, indent=2) + "\n")
    plot(rows, RESULTS / "convfusion_forms.png")
    print(f"wrote {RESULTS / 'convfusion_forms.json'} and .png")


if __name__ == "__main__":
    main()
