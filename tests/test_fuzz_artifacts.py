"""Fuzz: damaged or hostile artifact and calibration files never crash, hang or leak a traceback.

One tiny real XNNPACK artifact (model.pte + model.bpte) and one tiny calibration set are made
once; then a fixed-seed set of mutations of each file kind (byte flips, truncations, length and
offset fields rewritten, inserted bytes; for JSON: type swaps, deletions, absurd numbers, deep
nesting, paths out of the folder) runs through `load` and `edit-mobile validate` in driver
subprocesses that survive segfaults and report, per mutation, its exit code and stderr.

Most binary mutations also rewrite the file's sha256 and size in the manifest, as an attacker
would: otherwise the hash check refuses them all before any parser sees them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from export_artifacts import exported

from edit_mobile.fileio import sha256_file

SEED = 20240611
MUTATIONS_PER_KIND = {  # 200 mutations, ~25 s on 2 cores once the artifact exists (suite budget)
    "manifest.json": 40, "model.pte": 50, "model.bpte": 45, "test_vectors.safetensors": 20,
    "calibration.json": 25, "calibration.safetensors": 10, "heldout.safetensors": 10,
}
# What runs each mutated copy: `load` of the role the file serves, then the whole of validate.
STEPS = {"manifest.json": ("load", "validate"), "model.pte": ("load", "validate"),
         "model.bpte": ("load-bundled", "validate"), "test_vectors.safetensors": ("validate",)}
CALIBRATION_STEPS = ("load-calibration", "validate")
REHASHED_SHARE = 0.8  # of binary mutations: the manifest is rewritten to match the damaged file
DRIVERS = 2
STEP_TIMEOUT_S = 60.0  # one load or validate of the tiny artifact takes ~1 s; more is a hang
TRIAL_TIMEOUT_S = "8"  # the runtime's trial run of a program in a child: the tiny one needs ms
STARTUP_TIMEOUT_S = 120.0

# Runs each job's steps in-process; markers go to a progress file (fd 3 is not inherited
# through everything, a file is), each step's stderr to its own file, so a crash or hang is
# attributed to the step that was running.
DRIVER = r"""
import json, os, sys, time, traceback
jobs, progress = json.load(open(sys.argv[1])), os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND)
import torch
torch.set_num_threads(1)
from edit_mobile.errors import UserError
from edit_mobile.main import main, quiet_third_party_notices
from edit_mobile.runtime import load
from edit_mobile.calibration import load_calibration
quiet_third_party_notices()

def refuse(command, call):
    try:
        call()
        return 0
    except UserError as err:
        print(f"edit-mobile {command}: error: {err}", file=sys.stderr)
        return 2

STEPS = {
    "load": lambda job: refuse("load", lambda: load(job["art"]).close()),
    "load-bundled": lambda job: refuse("load", lambda: load(job["art"], role="bundled_program").close()),
    "load-calibration": lambda job: refuse("calibrate", lambda: load_calibration(job["calib"])),
    "validate": lambda job: main(["validate", job["art"], "--samples", "1"]
                                 + (["--calibration", job["calib"]] if job.get("calib") else [])),
}
os.write(progress, b"ready\n")
for job in jobs:
    for step in job["steps"]:
        os.write(progress, f"start {job['id']} {step} {time.monotonic()}\n".encode())
        sys.stderr.flush()
        err = os.open(os.path.join(job["dir"], f"{step}.stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        saved = os.dup(2)
        os.dup2(err, 2)
        try:
            code = STEPS[step](job)
        except BaseException:
            traceback.print_exc()
            code = "traceback"
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(err)
        os.write(progress, f"end {job['id']} {step} {code} {time.monotonic()}\n".encode())
"""


@dataclass
class Mutation:
    id: int
    kind: str  # the file mutated
    how: str
    rehashed: bool
    dir: Path
    art: Path
    calib: Path | None
    steps: tuple[str, ...]


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path]:
    """The artifact (shared with the export tests) and a calibration set at its resolution."""
    from edit_mobile.calibration import CalibrationOptions, capture_calibration

    art = exported("tiny-pixart-edit", "xnnpack")
    height, width = json.loads((art / "manifest.json").read_text())["resolution"]
    calib = tmp_path_factory.mktemp("fuzz-calib") / "calib"
    options = CalibrationOptions(steps=2, samples=2, records=4, heldout_records=2, resolution=(height, width),
                                 trajectory="forward")
    capture_calibration("tiny-pixart-edit", calib, options=options, progress=False)
    return art, calib


# --- the fuzz -----------------------------------------------------------------------------------


def test_damaged_and_hostile_files_are_refused_in_one_line_never_crash_or_hang(pristine, tmp_path, capsys):
    art, calib = pristine
    rng = random.Random(SEED)
    mutations = [make_mutation(rng, index, kind, art, calib, tmp_path / f"{index:04d}")
                 for index, kind in enumerate(kind for kind, count in MUTATIONS_PER_KIND.items() for _ in range(count))]
    started = time.perf_counter()
    outcomes = run_drivers(mutations, tmp_path)
    seconds = time.perf_counter() - started
    problems, table = judge(mutations, outcomes, tmp_path / "outcomes.jsonl")
    with capsys.disabled():
        print(f"\nfuzz: {len(mutations)} mutations, {len(outcomes)} runs in {seconds:.0f} s (seed {SEED})\n{table}")
    assert not problems, "\n".join(problems[:20])


def judge(mutations: list[Mutation], outcomes: dict, record: Path) -> tuple[list[str], str]:
    """Each run's outcome (also written to `record`, one JSON line a run), and totals per file kind."""
    problems, totals, lines, slowest = [], {kind: Counter() for kind in MUTATIONS_PER_KIND}, [], []
    for mutation in mutations:
        counts = totals[mutation.kind]
        counts["mutations"] += 1
        counts["rehashed"] += mutation.rehashed
        for step in mutation.steps:
            code, seconds = outcomes.get((mutation.id, step), ("not run", 0.0))
            result, problem = classify(code, mutation.dir / f"{step}.stderr")
            counts[result] += 1
            lines.append(json.dumps({"id": mutation.id, "kind": mutation.kind, "how": mutation.how, "step": step,
                                     "rehashed": mutation.rehashed, "result": result, "code": code, "seconds": seconds}))
            slowest.append((seconds, f"{mutation.kind} #{mutation.id} {step} ({mutation.how}, {result})"))
            if problem:
                problems.append(f"{mutation.kind} #{mutation.id} ({mutation.how}) {step}: {problem}")
    record.write_text("\n".join(lines) + "\n")
    columns = ("mutations", "rehashed", "refused", "passed", "failed", "crash", "hang", "traceback", "unclear")
    lines = [f"{'file':<26}" + "".join(f"{c:>10}" for c in columns)]
    for kind, counts in totals.items():
        lines.append(f"{kind:<26}" + "".join(f"{counts[c]:>10}" for c in columns))
    every = sum(totals.values(), Counter())
    lines.append(f"{'total':<26}" + "".join(f"{every[c]:>10}" for c in columns))
    lines += [f"slow: {seconds:.1f} s {what}" for seconds, what in sorted(slowest, reverse=True)[:3]]
    return problems, "\n".join(lines)


def classify(code, stderr_path: Path) -> tuple[str, str | None]:
    """refused (exit 2, one error line), passed (0), failed (1: validation's verdict), or a problem."""
    text = stderr_path.read_text(errors="replace") if stderr_path.exists() else ""
    # ExecuTorch's C++ runtime logs to stderr and cannot be silenced: only our lines count.
    ours = [line for line in text.splitlines() if line.startswith(("edit-mobile", "Traceback"))]
    if isinstance(code, str) and code.startswith("signal"):
        return "crash", f"killed by {code}"
    if code == "hang":
        return "hang", f"no progress in {STEP_TIMEOUT_S:.0f} s"
    if code == "traceback" or "Traceback" in text:
        return "traceback", text.strip().splitlines()[-1] if text.strip() else "traceback"
    if code == 2 and len(ours) == 1 and ": error: " in ours[0]:
        return "refused", None
    if code in (0, 1) and not ours:
        return ("passed" if code == 0 else "failed"), None
    return "unclear", f"exit {code} with stderr lines {ours[:3]}"


# --- drivers ---------------------------------------------------------------------------------------


def run_drivers(mutations: list[Mutation], scratch: Path) -> dict:
    """(outcome, seconds) per (mutation id, step); an outcome is an exit code, "signal N",
    "hang" or "traceback"."""
    jobs = [{"id": m.id, "dir": str(m.dir), "art": str(m.art), "calib": m.calib and str(m.calib), "steps": list(m.steps)}
            for m in mutations]
    queues = [jobs[i::DRIVERS] for i in range(DRIVERS)]
    outcomes: dict = {}
    running = [Driver(queue, scratch / f"driver{i}") for i, queue in enumerate(queues) if queue]
    while running:
        time.sleep(0.2)
        for driver in list(running):
            if not driver.poll(outcomes):
                running.remove(driver)
    return outcomes


class Driver:
    """One driver subprocess over a queue of jobs; restarted past a job that crashed or hung."""

    def __init__(self, jobs: list[dict], folder: Path):
        self.jobs, self.folder, self.restarts = jobs, folder, 0
        folder.mkdir()
        self._start()

    def _start(self) -> None:
        self.restarts += 1
        self.progress = self.folder / f"progress{self.restarts}"
        self.progress.write_text("")
        jobs = self.folder / f"jobs{self.restarts}.json"
        jobs.write_text(json.dumps(self.jobs))
        env = dict(os.environ, OMP_NUM_THREADS="1", EDIT_MOBILE_TRIAL_TIMEOUT_S=TRIAL_TIMEOUT_S,
                   PYTHONFAULTHANDLER="1")  # a crash names its frame
        self.process = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(jobs), str(self.progress)],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / f"driver{self.restarts}.stderr", "w"),
            env=env, start_new_session=True,
        )
        self.seen, self.last_progress, self.ready = 0, time.monotonic(), False

    def poll(self, outcomes: dict) -> bool:
        """Read progress; False once every job has an outcome."""
        lines = self.progress.read_text().splitlines()
        if len(lines) > self.seen:
            self.seen, self.last_progress = len(lines), time.monotonic()
        running, started = None, 0.0
        for line in lines:
            words = line.split()
            if words[0] == "ready":
                self.ready = True
            elif words[0] == "start":
                running, started = (int(words[1]), words[2]), float(words[3])
            else:
                code = int(words[3]) if words[3].lstrip("-").isdigit() else words[3]
                outcomes[(int(words[1]), words[2])] = (code, float(words[4]) - started)
                running = None
        code = self.process.poll()
        limit = STEP_TIMEOUT_S if self.ready else STARTUP_TIMEOUT_S
        if code is None and time.monotonic() - self.last_progress < limit:
            return True
        if code is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            verdict = "hang"
        else:
            verdict = f"signal {-code}" if code < 0 else f"driver exit {code}"
        if running is None:
            if code == 0:
                return False
            raise AssertionError(f"a fuzz driver died outside any step ({verdict}): see {self.folder}")
        outcomes[running] = (verdict, time.monotonic() - self.last_progress)
        return self._restart_after(running)

    def _restart_after(self, culprit: tuple[int, str]) -> bool:
        """Start again on every step not run yet (the culprit's later steps included)."""
        ended = {(int(words[1]), words[2]) for words in map(str.split, self.progress.read_text().splitlines())
                 if words[0] == "end"} | {culprit}
        remaining = []
        for job in self.jobs:
            steps = [step for step in job["steps"] if (job["id"], step) not in ended]
            if steps:
                remaining.append({**job, "steps": steps})
        self.jobs = remaining
        if not remaining:
            return False
        self._start()
        return True


# --- mutations -------------------------------------------------------------------------------------


def make_mutation(rng: random.Random, index: int, kind: str, art: Path, calib: Path, folder: Path) -> Mutation:
    """A copy of the artifact (hard links) or calibration set with one file damaged."""
    folder.mkdir()
    if kind.startswith(("calibration", "heldout")):
        target_calib = link_copy(calib, folder / "calib")
        rehashed = kind != "calibration.json" and rng.random() < REHASHED_SHARE
        how = mutate_file(rng, target_calib / kind, target_calib, "calibration.json", rehashed)
        return Mutation(index, kind, how, rehashed, folder, art, target_calib, CALIBRATION_STEPS)
    target = link_copy(art, folder / "art")
    rehashed = kind != "manifest.json" and rng.random() < REHASHED_SHARE
    how = mutate_file(rng, target / kind, target, "manifest.json", rehashed)
    return Mutation(index, kind, how, rehashed, folder, target, None, STEPS[kind])


def link_copy(source: Path, destination: Path) -> Path:
    """The folder's tree with every file hard-linked: cheap, and no symlink leaves it."""
    for path in sorted(source.rglob("*")):
        copy = destination / path.relative_to(source)
        if path.is_dir():
            copy.mkdir(parents=True, exist_ok=True)
        else:
            copy.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, copy)
    return destination


def mutate_file(rng: random.Random, path: Path, root: Path, manifest_name: str, rehashed: bool) -> str:
    data = path.read_bytes()
    path.unlink()  # a hard link: never write through it into the pristine copy
    if path.suffix == ".json":
        mutated, how = mutate_json(rng, data)
    else:
        mutated, how = mutate_binary(rng, data, interesting_regions(path.name, data))
    path.write_bytes(mutated)
    if rehashed:
        rewrite_hash(root / manifest_name, root, path.name)
    return how


def rewrite_hash(manifest_path: Path, root: Path, name: str) -> None:
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["files"].values():
        if entry["path"] == name:
            entry.update(sha256=sha256_file(root / name), bytes=(root / name).stat().st_size)
    manifest_path.unlink()
    manifest_path.write_text(json.dumps(manifest, indent=2))


def interesting_regions(name: str, data: bytes) -> list[list[tuple[int, int]]]:
    """Byte ranges holding structure, in groups picked alike: headers, flatbuffer tables and
    the XNNPACK blobs' own headers and graphs, where damage reaches parsers, not weights."""
    if name.endswith(".safetensors"):
        return [[(0, 8 + int.from_bytes(data[:8], "little"))]]
    if name.endswith(".pte"):
        return [[(0, flatbuffer_bytes(data))], delegate_blobs(data)]
    if name.endswith(".bpte"):
        start, length = bundled_program_span(data)
        program = data[start : start + length]
        blobs = [(start + low, start + high) for low, high in delegate_blobs(program)]
        return [[(0, start), (start + length, len(data))], [(start, start + flatbuffer_bytes(program))], blobs]
    return [[(0, len(data))]]


def flatbuffer_bytes(program: bytes) -> int:
    return int.from_bytes(program[16:24], "little") if program[8:12] == b"eh00" else len(program)


def delegate_blobs(program: bytes) -> list[tuple[int, int]]:
    """Each XNNPACK segment's header and graph flatbuffer (XNNHeader: magic at 4, graph offset
    and size at 10 and 14), its constant data left out."""
    from edit_mobile.runtime.pte_format import FlatBuffer

    base = int.from_bytes(program[24:32], "little")
    segments = FlatBuffer(program, "program", size=flatbuffer_bytes(program)).root().tables(4)  # Program.segments
    blobs = []
    for segment in segments:
        start = base + segment.scalar(0, "<Q")
        if program[start + 4 : start + 8] == b"XH00":
            graph_end = int.from_bytes(program[start + 10 : start + 14], "little") + int.from_bytes(program[start + 14 : start + 18], "little")
            blobs.append((start, start + graph_end))
    return blobs


def bundled_program_span(data: bytes) -> tuple[int, int]:
    from edit_mobile.runtime.pte_format import BUNDLED_PROGRAM, FlatBuffer

    return FlatBuffer(data, "model.bpte").root().vector(BUNDLED_PROGRAM, 1)


def mutate_binary(rng: random.Random, data: bytes, groups: list[list[tuple[int, int]]]) -> tuple[bytes, str]:
    out = bytearray(data)
    groups = [regions for regions in ([r for r in group if r[1] - r[0] >= 16] for group in groups) if regions]
    low, high = rng.choice(rng.choice(groups)) if groups and rng.random() < 0.85 else (0, len(data))
    operator = rng.choice(["flip", "flip", "truncate", "length", "length", "insert"])
    if operator == "flip":
        for _ in range(rng.choice([1, 1, 2, 8])):
            out[rng.randrange(low, min(high, len(out)))] ^= 1 << rng.randrange(8)
        return bytes(out), f"flip in [{low}, {high})"
    if operator == "truncate":
        cut = rng.randrange(0, len(out))
        return bytes(out[:cut]), f"truncate to {cut}"
    if operator == "insert":
        at = rng.randrange(low, min(high, len(out)))
        return bytes(out[:at] + rng.randbytes(rng.randrange(1, 17)) + out[at:]), f"insert at {at}"
    at = rng.randrange(low, min(high, len(out)) - 4) & ~3
    old = int.from_bytes(out[at : at + 4], "little")
    new = rng.choice([0, 1, 3, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, old + 4, old + 1, old * 2 + 1,
                      len(out), rng.getrandbits(32), max(old - 4, 0)]) & 0xFFFFFFFF
    out[at : at + 4] = struct.pack("<I", new)
    return bytes(out), f"u32 at {at}: {old} -> {new}"


ABSURD = [5, -1, 0, 1.5, 1e308, -(10**30), 10**9, 2**63, "x", "../../outside", "/etc/passwd", None, True,
          [], {}, [1.5, 2], [-4, 64], [10**7, 10**7], [1e7, 1e7], "\u0000", "a" * 5000, list(range(10_000))]


def mutate_json(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    document = json.loads(data)
    operator = rng.choice(["swap", "swap", "swap", "delete", "nest", "text"])
    if operator == "text":  # damage below the JSON level: bytes flipped or cut
        out = bytearray(data)
        if rng.random() < 0.5:
            cut = rng.randrange(len(out))
            return bytes(out[:cut]), f"text truncated to {cut}"
        at = rng.randrange(len(out))
        out[at] ^= 1 << rng.randrange(8)
        return bytes(out), f"text flip at {at}"
    path = rng.choice(json_paths(document))
    parent, key = walk(document, path[:-1]), path[-1]
    if operator == "delete" and isinstance(parent, dict):
        del parent[key]
        return json.dumps(document).encode(), f"delete {path_text(path)}"
    if operator == "nest":
        depth = rng.choice([40, 5000, 200_000])
        parent[key] = "__NEST__"
        text = json.dumps(document).replace('"__NEST__"', "[" * depth + "]" * depth)
        return text.encode(), f"{path_text(path)} nested {depth} deep"
    value = rng.choice(ABSURD)
    parent[key] = value
    return json.dumps(document).encode(), f"{path_text(path)} = {str(value)[:40]}"


def json_paths(document, prefix=()) -> list[tuple]:
    """Every place in the document a value sits (objects' keys, lists' indices)."""
    paths = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            paths += json_paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document[:8]):
            paths += json_paths(value, (*prefix, index))
    return paths


def walk(document, path: tuple):
    for key in path:
        document = document[key]
    return document


def path_text(path: tuple) -> str:
    return ".".join(str(part) for part in path)
