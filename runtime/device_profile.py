"""`edit-mobile profile ART --device ...`: latency, memory and per-operator time measured on a phone.

The host pushes the artifact to the demo app's device folder, starts the app's benchmark mode
(launch extras below), waits for the one JSON the app writes (the results schema below), pulls
it and the ETDump it names, and reports them as host profiling does. The transports (adb for
Android, `xcrun devicectl` for iOS) live in device_android.py / device_ios.py; everything they
share, and the schema the apps write, is here.

The results schema is defined once, here (RESULTS_* tables); the Android app's RESULTS KEYS
block (DemoRun.kt) and the iOS app's (BenchmarkResults.swift) name the same keys, which
tests/test_device_profile.py checks, and android_demo/README.md documents each one.
"""

from __future__ import annotations

import math
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edit_mobile.errors import UserError
from edit_mobile.safe_read import JsonBounds, read_json

APP_ID = "org.editmobile.demo"  # Android applicationId and iOS bundle identifier
RESULTS_SCHEMA = "edit-mobile/device-benchmark"
RESULTS_SCHEMA_VERSION = 1
DEFAULT_TIMEOUT_S = 600.0  # a large model's warm-up and timed runs on a mid-range phone take minutes
POLL_SECONDS = 1.0
MAX_TIMED_RUNS = 100_000  # the host's --iters bound; a results list is never longer


@dataclass(frozen=True)
class Key:
    """One key of the results JSON: its name, the JSON types it may hold, what it means."""

    name: str
    types: tuple[type, ...]
    meaning: str
    required: bool = True  # when "status" is "ok"


_NUMBER = (int, float)
_NULL = type(None)

RESULTS_TOP = (
    Key("schema", (str,), f'always "{RESULTS_SCHEMA}"'),
    Key("schema_version", (int,), f"{RESULTS_SCHEMA_VERSION}"),
    Key("status", (str,), '"ok", or "error" (then only "error" is required besides schema and status)'),
    Key("error", (str,), 'status "error": one line saying what failed on the device and how to fix it', required=False),
    Key("device", (dict,), "the phone: the keys of RESULTS_DEVICE"),
    Key("runtime", (str,), 'what ran the program: "executorch-android", "executorch-ios", "coreml"'),
    Key("backends", (list,), "backend names the runtime has registered (e.g. XnnpackBackend); [] if it cannot say"),
    Key("artifact", (str,), "the artifact folder the app ran, as the app found it"),
    Key("model", (str,), "the manifest's model.source"),
    Key("threads", (int,), "threads asked for (0 = the runtime's default)"),
    Key("methods", (dict,), 'per program method ("forward"): the keys of RESULTS_METHOD'),
)
RESULTS_DEVICE = (
    Key("model", (str,), "Build.MODEL / the iOS machine identifier (iPhone16,1)"),
    Key("manufacturer", (str,), "Build.MANUFACTURER / Apple"),
    Key("os", (str,), '"Android 14 (API 34)" / "iOS 17.5"'),
    Key("abi", (str,), "the app's ABI: arm64-v8a, x86_64, arm64"),
)
RESULTS_METHOD = (
    Key("warmup", (int,), "untimed runs before the timed ones"),
    Key("latencies_ms", (list,), "every timed run in milliseconds, in order"),
    Key("load_ms", _NUMBER, "loading the program and the method, milliseconds"),
    Key("peak_memory_bytes", (int, _NULL), "the process's peak resident memory after the runs, or null"),
    Key("memory_source", (str,), 'how it was measured: "VmHWM" (/proc), "Debug.getPss" (current PSS), '
        '"phys_footprint_peak" (iOS task_vm_info), "none"'),
    Key("etdump", (str, _NULL), "device path of the ETDump written after the runs (event-tracer runtimes), or null"),
)

# Launch extras of the apps' benchmark mode (Android: `am start --es/--ei/--ez`; iOS: `-name value`).
EXTRA_ARTIFACT = "artifact"  # Android: a folder under DEVICE_ROOT_ANDROID; iOS: a folder name under Documents/artifacts
EXTRA_WARMUP = "warmup"
EXTRA_ITERS = "iters"
EXTRA_THREADS = "threads"
EXTRA_BENCHMARK = "benchmark"  # true: write the results JSON as well as the result line
EXTRA_RESULTS = "results"  # where the app writes it (a path the app can write, see each transport)


# --- reading what the app wrote --------------------------------------------------------------

@dataclass(frozen=True)
class MethodResults:
    warmup: int
    latencies_ms: list[float]
    load_ms: float
    peak_memory_bytes: int | None
    memory_source: str
    etdump: str | None


@dataclass(frozen=True)
class DeviceResults:
    device: dict
    runtime: str
    backends: list[str]
    artifact: str
    model: str
    threads: int
    methods: dict[str, MethodResults]


def read_results(path: Path) -> DeviceResults:
    """The app's results JSON, checked key by key; a failure names the key and says to update the app."""
    fix = "rebuild and reinstall the demo app from android_demo/ (or ios_demo/) of this edit-mobile"
    bounds = JsonBounds(max_items=MAX_TIMED_RUNS + 1, max_depth=8)
    data = read_json(path, fix, bounds, what="a benchmark results JSON")
    if not isinstance(data, dict) or data.get("schema") != RESULTS_SCHEMA:
        raise UserError(f"{path} is not a benchmark results JSON (schema {RESULTS_SCHEMA}); {fix}")
    if data.get("schema_version") != RESULTS_SCHEMA_VERSION:
        raise UserError(f"{path} has schema_version {data.get('schema_version')!r}, this edit-mobile reads "
                        f"{RESULTS_SCHEMA_VERSION}; {fix}")
    if data.get("status") == "error":
        raise UserError(f"the app reported: {_one_line(data.get('error'))}")
    _check_keys(path, data, RESULTS_TOP, "", fix)
    if data["status"] != "ok":
        raise UserError(f"{path}: status {data['status']!r} is neither 'ok' nor 'error'; {fix}")
    _check_keys(path, data["device"], RESULTS_DEVICE, "device.", fix)
    if not data["methods"]:
        raise UserError(f"{path} times no method (methods is empty); {fix}")
    methods = {name: _method(path, name, entry, fix) for name, entry in data["methods"].items()}
    return DeviceResults(data["device"], data["runtime"], [str(b) for b in data["backends"]], data["artifact"],
                         data["model"], data["threads"], methods)


def _check_keys(path: Path, data, keys: tuple[Key, ...], where: str, fix: str) -> None:
    if not isinstance(data, dict):
        raise UserError(f"{path}: {where.rstrip('.') or 'the document'} is not an object; {fix}")
    for key in keys:
        if key.name not in data:
            if key.required:
                raise UserError(f"{path} has no '{where}{key.name}' ({key.meaning}); {fix}")
            continue
        value = data[key.name]
        if isinstance(value, bool) or not isinstance(value, key.types):
            raise UserError(f"{path}: '{where}{key.name}' is {value!r:.40}, not {_type_names(key.types)}; {fix}")


def _method(path: Path, name: str, entry, fix: str) -> MethodResults:
    where = f"methods.{name}."
    _check_keys(path, entry, RESULTS_METHOD, where, fix)
    latencies = entry["latencies_ms"]
    if not latencies or not all(_positive(v) for v in latencies):
        raise UserError(f"{path}: '{where}latencies_ms' must be a non-empty list of positive finite numbers; {fix}")
    if entry["warmup"] < 0 or not (_positive(entry["load_ms"]) or entry["load_ms"] == 0):
        raise UserError(f"{path}: '{where}warmup' or '{where}load_ms' is negative or not finite; {fix}")
    peak = entry["peak_memory_bytes"]
    if peak is not None and peak < 0:
        raise UserError(f"{path}: '{where}peak_memory_bytes' is negative; {fix}")
    return MethodResults(entry["warmup"], [float(v) for v in latencies], float(entry["load_ms"]), peak,
                         entry["memory_source"], entry["etdump"])


def _positive(value) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _type_names(types: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list", _NULL: "null"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _one_line(value) -> str:
    return " ".join(str(value).split()) or "an error without a message"


# --- the report ------------------------------------------------------------------------------

def device_result(art_dir, description: str, results: DeviceResults, operators: dict | None = None,
                  where: str = "") -> dict:
    """The profile of a device run, as `--json` writes it and the printer and --compare read it."""
    from edit_mobile.runtime.profiling import latency_stats

    methods = {}
    for name, method in results.methods.items():
        methods[name] = {
            "warmup": method.warmup,
            "load_ms": method.load_ms,
            "latency_ms": latency_stats([ms / 1000 for ms in method.latencies_ms]),
            "latencies_ms": method.latencies_ms,
            "peak_memory_bytes": method.peak_memory_bytes,
            "memory_source": method.memory_source,
            "etdump": method.etdump,
        }
    result = {
        "artifact": str(art_dir), "description": description, "measured_on": "device", "where": where,
        "device": results.device, "runtime": results.runtime, "backends": results.backends,
        "device_artifact": results.artifact, "model": results.model, "threads": results.threads, "methods": methods,
    }
    if operators is not None:
        result["operators"] = operators
    return result


def device_label(device: dict) -> str:
    name = " ".join(part for part in (device.get("manufacturer"), device.get("model")) if part)
    return f"{name or 'device'}, {device.get('os', '?')}"


# --- running on a device ---------------------------------------------------------------------

@dataclass(frozen=True)
class BenchmarkSettings:
    warmup: int
    iters: int
    threads: int | None
    timeout_s: float = DEFAULT_TIMEOUT_S


class Device(Protocol):
    """What the host needs of a phone; one implementation per transport."""

    label: str  # "Android device SERIAL" / "iOS device UDID", for messages

    def check_artifact(self, manifest) -> None: ...
    def log_hint(self) -> str: ...
    def push_artifact(self, manifest, files: list[tuple[Path, str]], on_bytes) -> tuple[str, int]: ...
    def start_benchmark(self, device_artifact: str, settings: BenchmarkSettings) -> str: ...
    def results_ready(self, results_path: str) -> bool: ...
    def pull(self, device_path: str, local: Path) -> None: ...


def parse_target(text: str) -> tuple[str, str | None]:
    """'android', 'android:SERIAL', 'ios', 'ios:UDID' -> (platform, id or None)."""
    platform, _, ident = text.partition(":")
    if platform not in ("android", "ios") or (":" in text and not ident):
        raise UserError(f"--device {text!r}: use android, android:SERIAL, ios or ios:UDID (adb devices / "
                        "xcrun devicectl list devices show them)")
    if ident and not re.fullmatch(r"[A-Za-z0-9._:\-]+", ident):
        raise UserError(f"--device {text!r}: {ident!r} is not a device serial or UDID; copy it from adb devices / "
                        "xcrun devicectl list devices")
    return platform, ident or None


def connect(target: str) -> Device:
    """The device named by --device, checked: its tool, that it is attached, that the app is installed."""
    platform, ident = parse_target(target)
    if platform == "ios":
        if sys.platform != "darwin":
            raise UserError(f"--device ios needs macOS with Xcode 15+ (xcrun devicectl); this is {sys.platform}: "
                            "profile on Android here, or copy the ETDump and results JSON from the phone and use "
                            "--etdump / --results")
        from edit_mobile.runtime.device_ios import IOSDevice

        return IOSDevice.connect(ident)
    from edit_mobile.runtime.device_android import AndroidDevice

    return AndroidDevice.connect(ident)


def device_name(name: str) -> str:
    """The artifact folder's name as a device folder name (shell- and path-safe)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "artifact"


def files_to_push(manifest) -> list[tuple[Path, str]]:
    """(local path, path relative to the artifact) of what the app reads: manifest.json, the
    program (a file, or a Core ML package folder), its external weights (model.ptd) if any, the
    test vectors; not the PyTorch reference nor the ETRecord, which only the host reads."""
    from edit_mobile.export.manifest import MANIFEST_NAME

    files = [(manifest.root / MANIFEST_NAME, MANIFEST_NAME)]
    for role in ("program", "weights", "test_vectors"):
        if role == "weights" and not manifest.has(role):
            continue
        entry = manifest.file(role)
        files.append((entry.path, entry.relative))
    return files


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def profile_on_device(art_dir, target: str, settings: BenchmarkSettings, progress) -> dict:
    """Push, run the app's benchmark mode, wait, pull and report. `progress` makes the bars
    (progress(total, unit, desc) -> a tqdm-like object)."""
    from edit_mobile.runtime.manifest import read_manifest

    device = connect(target)
    manifest = read_manifest(art_dir)
    device.check_artifact(manifest)
    files = files_to_push(manifest)
    with progress(sum(size_of(path) for path, _ in files), "B", "push") as bar:
        device_artifact, skipped = device.push_artifact(manifest, files, bar.update)
    results_path = device.start_benchmark(device_artifact, settings)
    _wait_for(device, results_path, settings.timeout_s, progress)
    with tempfile.TemporaryDirectory(prefix="edit-mobile-device-") as scratch:
        local = Path(scratch) / "results.json"
        device.pull(results_path, local)
        results = read_results(local)
        operators = _device_operators(device, manifest, results, Path(scratch))
    where = f"{device_label(results.device)}, {results.runtime}"
    result = device_result(art_dir, manifest.describe(), results, operators, where)
    result["pushed"] = {"files": len(files) - skipped, "unchanged": skipped, "device_folder": device_artifact,
                        "results": results_path}
    return result


def _wait_for(device: Device, results_path: str, timeout_s: float, progress) -> None:
    started = time.monotonic()
    shown = 0
    with progress(int(timeout_s), "s", f"benchmark on {device.label}") as bar:
        while not device.results_ready(results_path):
            elapsed = time.monotonic() - started
            if elapsed >= timeout_s:
                raise UserError(f"no results from the app after {timeout_s:g} s ({results_path} never appeared); "
                                f"see what the app did with {device.log_hint()}, or raise --timeout")
            now = min(int(elapsed), int(timeout_s))
            bar.update(now - shown)
            shown = now
            time.sleep(min(POLL_SECONDS, timeout_s - elapsed))


def _device_operators(device: Device, manifest, results: DeviceResults, scratch: Path) -> dict | None:
    """Per-operator times from the ETDump the app names (the first method's that has one)."""
    named = next(((name, m.etdump) for name, m in results.methods.items() if m.etdump), None)
    if named is None or not is_executorch(manifest):
        return None
    method, device_path = named
    local = scratch / "device.etdp"
    device.pull(device_path, local)
    from edit_mobile.runtime.profile_executorch import etdump_operator_profile

    profile = etdump_operator_profile(manifest, local, "the app's runtime")
    profile.notes.append(f"ETDump of the '{method}' runs on the device, left there at {device_path}")
    return profile.as_dict()


def is_executorch(manifest) -> bool:
    role = "program" if manifest.has("program") else "bundled_program"
    return manifest.has(role) and manifest.file(role).path.suffix.lower() in (".pte", ".bpte")


# --- ETDump and results files made elsewhere ---------------------------------------------------

def profile_from_files(art_dir, etdump: Path | None, results_file: Path | None) -> dict:
    """`profile ART --etdump FILE [--results FILE]`: an ETDump from any device (or ExecuTorch's
    executor_runner --etdump_path) read against the artifact, and the app's results if given."""
    from edit_mobile.runtime.manifest import read_manifest

    if results_file is not None and not results_file.is_file():
        raise UserError(f"--results {results_file}: no such file; pass the results JSON the app wrote")
    manifest = read_manifest(art_dir)
    operators = None
    if etdump is not None:
        if not is_executorch(manifest):
            raise UserError(f"--etdump needs an ExecuTorch artifact (.pte); {art_dir} is {manifest.backend}")
        if not etdump.is_file():
            raise UserError(f"--etdump {etdump}: no such file; pass the .etdp the runtime wrote")
        from edit_mobile.runtime.profile_executorch import etdump_operator_profile

        operators = etdump_operator_profile(manifest, etdump).as_dict()
    if results_file is None:
        return {"artifact": str(art_dir), "description": manifest.describe(), "measured_on": "etdump",
                "where": f"ETDump {etdump}", "etdump": str(etdump), "operators": operators}
    results = read_results(results_file)
    source = manifest.model.get("source")
    if results.model != source:
        raise UserError(f"--results {results_file} is a run of {results.model}, {art_dir} holds {source}; pass the "
                        "artifact that was benchmarked")
    where = f"{device_label(results.device)}, {results.runtime}"
    return device_result(art_dir, manifest.describe(), results, operators, where)
