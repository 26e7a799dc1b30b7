"""Real-size exports on this machine (not a test): the first full-model figures.

For each case (a preset at a resolution, float32 or quantized) it runs the real CLI in child
processes, one after another:
  0. once a preset, its random weights saved as a diffusers folder (build/bench_real_size/models/):
     the export then reads a checkpoint from disk, as a user's does (building a preset in memory
     holds the teacher and its conversion at once, which is the builder's peak, not the export's);
  1. `edit-mobile export` of that folder under /usr/bin/time -v: wall time and the export's peak resident memory,
     against the bytes of weights it wrote (target: peak at most 3x the weights, aim 2x);
  2. `edit-mobile profile`: load time and the latency of one full denoising step (every layer)
     in the ExecuTorch runtime, and the runtime's peak resident memory;
  3. `edit-mobile validate`: the artifact against the PyTorch model at its precision's floor.
Sizes: what the phone loads (model.pte + model.ptd) and the whole folder, which also keeps the
PyTorch reference (`reference/`, for validate) and the BundledProgram, per file role.
Cases run one at a time (an XL export takes most of this machine's memory); a failing case is
recorded with its last error line and the next one runs. Results: bench/measured/real_size/
results.json (merged by case), and a table naming the CPU.

    python bench/real_size.py [--cases pixart-sigma-xl-1024-edit@512:fp32 ...] [--keep]

A case is MODEL@PIXELS:PRECISION[/BACKEND]: PRECISION one of fp32, fp16 or a scheme that needs no
calibration set (xnnpack: int8-dynamic, int4-weight; coreml: int8-weight, palettize-6bit,
palettize-4bit); BACKEND xnnpack (default) or coreml. A Core ML package is converted, chunked
(at most 1 GB of weights a chunk) and inspected here; it runs on a Mac, so its case has no
step latency and no validation.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_name  # bench/machine.py, beside this script

RESULTS = Path(__file__).resolve().parent / "measured" / "real_size"
WORK = Path(__file__).resolve().parent.parent / "build" / "bench_real_size"
CLI = [sys.executable, "-m", "edit_mobile"]
DEFAULT_CASES = ("pixart-sigma-xl-1024-edit@512:fp32", "pixart-sigma-xl-1024@512:fp32",
                 "pixart-sigma-xl-1024-edit@512:int8-dynamic", "pixart-sigma-xl-1024-edit@1024:int8-dynamic",
                 "sd35-medium-edit@1024:int8-dynamic")
PEAK_TARGET, PEAK_AIM = 3.0, 2.0


def parse_case(text: str) -> dict:
    match = re.fullmatch(r"([\w.-]+)@(\d+):([\w-]+)(?:/(xnnpack|coreml))?", text)
    if not match:
        raise SystemExit(f"case {text!r}: write MODEL@PIXELS:PRECISION[/coreml], e.g. pixart-sigma-xl-1024-edit@512:fp32")
    model, pixels, precision, backend = match.groups()
    return {"case": text, "model": model, "pixels": int(pixels), "precision": precision, "backend": backend or "xnnpack"}


def export_flags(case: dict) -> list[str]:
    if case["precision"] in ("fp32", "fp16"):
        return ["--precision", case["precision"]]
    return ["--quantize", case["precision"]]


def model_folder(name: str) -> Path:
    """The preset's random weights as a diffusers folder, written once (a child process)."""
    folder = WORK / "models" / name
    if not (folder / "config.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([sys.executable, "-c", "import sys; from edit_mobile.models.presets import build_preset; "
                        "build_preset(sys.argv[1]).save_pretrained(sys.argv[2], safe_serialization=True)",
                        name, str(folder)], check=True)
    return folder


def timed_export(case: dict, out: Path) -> dict:
    """Wall time and peak RSS (KiB from /usr/bin/time -v) of one export in a child process."""
    argv = ["/usr/bin/time", "-v", *CLI, "export", str(model_folder(case["model"])), "--backend", case["backend"],
            "--resolution", str(case["pixels"]), *export_flags(case), "-o", str(out), "--force"]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        anonymous = peak_anonymous_kib(child)
        stderr.seek(0)
        log = stderr.read()
    seconds = time.perf_counter() - started
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log)
    record = {"export_s": round(seconds, 1), "export_peak_rss_gb": int(peak.group(1)) / 2**20 if peak else None,
              "export_peak_anonymous_gb": anonymous / 2**20 if anonymous else None}
    if child.returncode != 0:
        record["error"] = last_line(log)
    return record


def peak_anonymous_kib(child: subprocess.Popen, every_s: float = 0.2) -> int:
    """The export's peak anonymous resident memory, sampled until `child` (/usr/bin/time) exits.
    /usr/bin/time's maximum RSS also counts the clean pages of the memory-mapped checkpoint,
    which the kernel reclaims under pressure; anonymous memory is what the export must have."""
    peak = 0
    while child.poll() is None:
        for pid in _children(child.pid):
            peak = max(peak, _status_kib(pid, "RssAnon"))
        time.sleep(every_s)
    return peak


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _status_kib(pid: int, key: str) -> int:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(key + ":")), 0)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(("\t", "Command"))]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1][:300]


def artifact_sizes(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    files = manifest["files"]
    weights = files.get("weights", files["program"])["bytes"]
    sizes = {role: entry["bytes"] / 2**30 for role, entry in files.items() if isinstance(entry, dict) and "bytes" in entry}
    phone = sum(sizes.get(role, 0.0) for role in ("program", "weights"))  # what the app loads
    program = manifest.get("program", {})
    chunks = {"chunks": program["chunks"], "chunk_weight_gb": [b / 2**30 for b in program.get("chunk_weight_bytes", [])]} \
        if "chunks" in program else {}
    return {"weights_gb": program.get("weight_bytes", weights) / 2**30, "phone_gb": phone, "artifact_gb": sum(sizes.values()),
            "files_gb": sizes, "weights_place": program.get("weights", "embedded"), **chunks}


def profile(out: Path) -> dict:
    report = out.parent / f"{out.name}.profile.json"
    completed = subprocess.run([*CLI, "profile", str(out), "--iters", "3", "--warmup", "1", "--no-operators",
                                "--json", str(report)], capture_output=True, text=True)
    if completed.returncode != 0:
        return {"profile_error": last_line(completed.stderr)}
    data = json.loads(report.read_text())
    latency = data.get("latency_ms") or {}
    return {"step_ms_median": latency.get("median"), "step_ms_min": latency.get("min"),
            "load_ms": data.get("load_ms"), "runtime_peak_rss_gb": (data.get("memory") or {}).get("peak_rss_mb", 0) / 1024}


def validate(out: Path) -> dict:
    report = out.parent / f"{out.name}.validate.json"
    completed = subprocess.run([*CLI, "validate", str(out), "--json", str(report)], capture_output=True, text=True)
    if not report.is_file():
        return {"validate_error": last_line(completed.stderr)}
    data = json.loads(report.read_text())
    return {"validate_passed": data.get("passed"), "validate_failures": data.get("failures")}



def run_case(case: dict, keep: bool) -> dict:
    out = WORK / re.sub(r"[@:/]", "-", case["case"])
    print(f"$ {case['case']}", flush=True)
    record = {**case, **timed_export(case, out)}
    if "error" not in record:
        record.update(artifact_sizes(out))
        if record["export_peak_rss_gb"]:
            record["peak_over_weights"] = record["export_peak_rss_gb"] / record["weights_gb"]
        if record["export_peak_anonymous_gb"]:
            record["anonymous_over_weights"] = record["export_peak_anonymous_gb"] / record["weights_gb"]
        if case["backend"] == "xnnpack":  # a Core ML package runs on a Mac only
            record.update(profile(out))
            record.update(validate(out))
    if not keep and out.exists():
        shutil.rmtree(out)
    print(f"  {json.dumps(record)}", flush=True)
    return record


def print_table(rows: list[dict]) -> None:
    print(f"\nreal-size exports ({cpu_name()}); peak/weights target <= {PEAK_TARGET:g}x, aim {PEAK_AIM:g}x")
    print("peak: maximum resident set (with the mapped checkpoint's clean pages); anon: anonymous memory only")
    print(f"{'case':<46} {'export':>8} {'peak GB':>8} {'anon GB':>8} {'weights GB':>10} {'peak/w':>7} {'anon/w':>7} "
          f"{'step ms':>9} {'valid':>6} {'chunks':>6}")
    for row in rows:
        if "error" in row:
            print(f"{row['case']:<46} failed after {row['export_s']:.0f} s: {row['error']}")
            continue
        ratio = f"{row.get('peak_over_weights', float('nan')):.1f}x"
        anonymous = f"{row.get('anonymous_over_weights', float('nan')):.1f}x"
        step = row.get("step_ms_median")
        print(f"{row['case']:<46} {row['export_s']:>7.0f}s {row['export_peak_rss_gb'] or 0:>8.1f} "
              f"{row.get('export_peak_anonymous_gb') or 0:>8.1f} {row['weights_gb']:>10.2f} {ratio:>7} {anonymous:>7} "
              f"{'-' if step is None else round(step):>9} "
              f"{str(row.get('validate_passed')):>6} {row.get('chunks', '-'):>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="MODEL@PIXELS:PRECISION[/coreml] ...")
    parser.add_argument("--keep", action="store_true", help="keep the artifacts under build/bench_real_size")
    args = parser.parse_args()
    cases = [parse_case(text) for text in args.cases]
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = [run_case(case, args.keep) for case in cases]
    merge_results(rows)
    print_table(rows)


def merge_results(rows: list[dict]) -> None:
    """Into bench/measured/real_size/results.json, by case (a case run again replaces its row)."""
    path = RESULTS / "results.json"
    earlier = json.loads(path.read_text()).get("rows", []) if path.is_file() else []
    fresh = {row["case"]: {**row, "cpu": cpu_name()} for row in rows}
    merged = [row for row in earlier if row["case"] not in fresh] + list(fresh.values())
    path.write_text(json.dumps({"rows": merged}, indent=2) + "\n")


if __name__ == "__main__":
    main()
