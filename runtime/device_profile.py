"""`edit-mobile profile ART --device ...`: latency, memory and per-operator time measured on a phone.

The host pushes the artifact to the demo app's device folder, starts the app's benchmark mode
(launch extras below), waits for the one JSON the app writes (the results schema below), pulls
it and the ETDump it names, and reports them as host profiling does. The transports (adb for
Android, `xcrun devicectl` for iOS) live in device_android.py / device_ios.py; everything they
share, and the schema the apps write, is here.

The results schema is defined once, here (RESULTS_* tables); the Android app's RESULTS KEYS
block (ResultsKeys.java) and the iOS app's (BenchmarkResults.swift, version 1) name the same
keys, which tests/test_device_profile.py checks, and android_demo/README.md documents each one.

Version 2 adds the "pipeline" block: on a pipeline artifact (export --pipeline) the Android app
times every method of the program ("methods" holds each, as a denoiser's "forward") and one
image's cost per resolution, which the host checks against its own formula (image_estimate of
host pipeline profiling) and reports as host profiling does ("image_ms"). Version 1 results
(the iOS app, older Android apps) are still read.
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
RESULTS_SCHEMA_VERSION = 2
RESULTS_VERSIONS_READ = (1, 2)  # 1: the iOS app and Android apps before pipeline benchmarks
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
    since: int = 1  # the schema_version that added it; older results are not asked for it


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
    Key("methods", (dict,), 'per program method ("forward"; a pipeline\'s every method): the keys of RESULTS_METHOD'),
    Key("pipeline", (dict,), "pipeline artifacts (export --pipeline): the keys of RESULTS_PIPELINE", required=False,
        since=2),
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
RESULTS_PIPELINE = (
    Key("steps", (int,), "the manifest's pipeline.defaults.steps: the denoising steps of one image", since=2),
    Key("guidance", _NUMBER, "pipeline.defaults.guidance: above 1, two guidance branches", since=2),
    Key("image_ms", (dict,), 'per resolution ("HxW"): the keys of RESULTS_IMAGE', since=2),
)
RESULTS_IMAGE = (  # from the methods' medians, as host pipeline profiling (profile_pipeline.image_estimate)
    Key("encode", _NUMBER, "encode_prompt's median x the prompts encoded (2 with guidance)", since=2),
    Key("per_step", _NUMBER, "denoise_HxW's median x its calls a step (1 when its batch holds both branches)",
        since=2),
    Key("decode", _NUMBER, "decode_HxW's median", since=2),
    Key("total", _NUMBER, "encode + steps x per_step + decode", since=2),
)
RESULTS_TABLES = {"TOP": RESULTS_TOP, "DEVICE": RESULTS_DEVICE, "METHOD": RESULTS_METHOD,
                  "PIPELINE": RESULTS_PIPELINE, "IMAGE": RESULTS_IMAGE}  # the apps' key prefixes
APP_FIX = "rebuild and reinstall the demo app from android_demo/ (or ios_demo/) of this edit-mobile"

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
class PipelineResults:
    steps: int
    guidance: float
    image_ms: dict[str, dict[str, float]]  # "HxW" -> the keys of RESULTS_IMAGE


@dataclass(frozen=True)
class DeviceResults:
    device: dict
    runtime: str
    backends: list[str]
    artifact: str
    model: str
    threads: int
    methods: dict[str, MethodResults]
    pipeline: PipelineResults | None = None  # schema v2, pipeline artifacts


def read_results(path: Path) -> DeviceResults:
    """The app's results JSON, checked key by key; a failure names the key and says to update the app."""
    fix = APP_FIX
    bounds = JsonBounds(max_items=MAX_TIMED_RUNS + 1, max_depth=8)
    data = read_json(path, fix, bounds, what="a benchmark results JSON")
    if not isinstance(data, dict) or data.get("schema") != RESULTS_SCHEMA:
        raise UserError(f"{path} is not a benchmark results JSON (schema {RESULTS_SCHEMA}); {fix}")
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in RESULTS_VERSIONS_READ:
        raise UserError(f"{path} has schema_version {version!r}, this edit-mobile reads "
                        f"{' and '.join(map(str, RESULTS_VERSIONS_READ))}; {fix}")
    if data.get("status") == "error":
        raise UserError(f"the app reported: {_one_line(data.get('error'))}")
    _check_keys(path, data, RESULTS_TOP, "", fix, version)
    if data["status"] != "ok":
        raise UserError(f"{path}: status {data['status']!r} is neither 'ok' nor 'error'; {fix}")
    _check_keys(path, data["device"], RESULTS_DEVICE, "device.", fix, version)
    if not data["methods"]:
        raise UserError(f"{path} times no method (methods is empty); {fix}")
    methods = {name: _method(path, name, entry, fix) for name, entry in data["methods"].items()}
    pipeline = _pipeline(path, data["pipeline"], fix) if version >= 2 and "pipeline" in data else None
    return DeviceResults(data["device"], data["runtime"], [str(b) for b in data["backends"]], data["artifact"],
                         data["model"], data["threads"], methods, pipeline)


def _check_keys(path: Path, data, keys: tuple[Key, ...], where: str, fix: str,
                version: int = RESULTS_SCHEMA_VERSION) -> None:
    if not isinstance(data, dict):
        raise UserError(f"{path}: {where.rstrip('.') or 'the document'} is not an object; {fix}")
    for key in keys:
        if key.since > version:
            continue
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


def _pipeline(path: Path, block, fix: str) -> PipelineResults:
    _check_keys(path, block, RESULTS_PIPELINE, "pipeline.", fix)
    if block["steps"] < 1 or not math.isfinite(block["guidance"]):
        raise UserError(f"{path}: 'pipeline.steps' must be at least 1 and 'pipeline.guidance' finite; {fix}")
    if not isinstance(block["image_ms"], dict) or not block["image_ms"]:
        raise UserError(f"{path}: 'pipeline.image_ms' costs no image (it is empty); {fix}")
    images = {}
    for size, entry in block["image_ms"].items():
        if not re.fullmatch(r"[1-9][0-9]{0,5}x[1-9][0-9]{0,5}", size):
            raise UserError(f"{path}: 'pipeline.image_ms' has a key {size!r:.40}, not a size HxW; {fix}")
        where = f"pipeline.image_ms.{size}."
        _check_keys(path, entry, RESULTS_IMAGE, where, fix)
        if not all(_positive(entry[key.name]) or entry[key.name] == 0 for key in RESULTS_IMAGE):
            raise UserError(f"{path}: '{where}*' must be finite milliseconds, 0 or more; {fix}")
        images[size] = {key.name: float(entry[key.name]) for key in RESULTS_IMAGE}
    return PipelineResults(block["steps"], float(block["guidance"]), images)


def check_artifact_methods(results: DeviceResults, manifest, label: str) -> dict | None:
    """That `results` time the artifact's program: its one denoiser, or every method of its
    pipeline. For a pipeline, one image's cost per resolution as host pipeline profiling reports
    it (image_estimate on the phone's medians), after checking that the app's own figure is it."""
    spec = manifest.pipeline
    name = manifest.root.name
    if spec is None:
        if results.pipeline is not None:
            raise UserError(f"{label} times a pipeline; {name} is a denoiser artifact: pass the artifact that was "
                            "benchmarked")
        return None
    if results.pipeline is None:
        raise UserError(f"{label} times {', '.join(results.methods)} alone, not every method of the pipeline "
                        f"artifact {name} (an app older than pipeline benchmarks); {APP_FIX}")
    wanted = list(spec["methods"])
    missing = [m for m in wanted if m not in results.methods]
    extra = [m for m in results.methods if m not in spec["methods"]]
    if missing or extra:
        found = "; ".join(part for part in (missing and f"missing {', '.join(missing)}",
                                            extra and f"not in it {', '.join(extra)}") if part)
        raise UserError(f"{label}: 'methods' must time the pipeline's {', '.join(wanted)} ({found}); pass the "
                        f"artifact that was benchmarked, or {APP_FIX}")
    defaults, timed = spec["defaults"], results.pipeline
    if timed.steps != defaults["steps"] or timed.guidance != defaults["guidance"]:
        raise UserError(f"{label} costs an image at {timed.steps} steps, guidance {timed.guidance:g}; {name}'s "
                        f"defaults are {defaults['steps']} steps, guidance {defaults['guidance']:g}: pass the "
                        "artifact that was benchmarked")
    from edit_mobile.runtime.profile_pipeline import image_estimate
    from edit_mobile.runtime.profiling import latency_stats

    stats = {method: latency_stats([ms / 1000 for ms in entry.latencies_ms]) for method, entry in results.methods.items()}
    expected = image_estimate(spec, stats)
    if set(expected) != set(timed.image_ms):
        raise UserError(f"{label}: 'pipeline.image_ms' costs {', '.join(timed.image_ms)}, the artifact draws at "
                        f"{', '.join(expected)}; {APP_FIX}")
    for size, cost in expected.items():
        for key in RESULTS_IMAGE:
            app, host = timed.image_ms[size][key.name], cost[key.name]
            if not math.isclose(app, host, rel_tol=1e-6, abs_tol=1e-6):
                raise UserError(f"{label}: 'pipeline.image_ms.{size}.{key.name}' is {app:g} ms, the methods' medians "
                                f"give {host:g} ms ({key.meaning}); {APP_FIX}")
    return expected


def _positive(value) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _type_names(types: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list", _NULL: "null"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _one_line(value) -> str:
    return " ".join(str(value).split()) or "an error without a message"


# --- the report ------------------------------------------------------------------------------

def device_result(art_dir, description: str, results: DeviceResults, operators: dict | None = None,
                  where: str = "", image_ms: dict | None = None) -> dict:
    """The profile of a device run, as `--json` writes it and the printer and --compare read it;
    a pipeline's also holds image_ms as host pipeline profiling writes it."""
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
    if image_ms is not None:
        result["image_ms"] = image_ms
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
    program (a file, or a Core ML package folder), its external weights (model.ptd, Vulkan's
    shards) if any, the test vectors; not the PyTorch reference nor the ETRecord, which only the
    host reads."""
    from edit_mobile.export.manifest import MANIFEST_NAME

    files = [(manifest.root / MANIFEST_NAME, MANIFEST_NAME)]
    for role in ("program", *manifest.weight_roles(), "test_vectors"):
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
        image_ms = check_artifact_methods(results, manifest, f"the results from {device.label} ({results_path})")
        operators = _device_operators(device, manifest, results, Path(scratch))
    where = f"{device_label(results.device)}, {results.runtime}"
    result = device_result(art_dir, manifest.describe(), results, operators, where, image_ms)
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
    """Per-operator times from the ETDump the app names (the first method's that has one); none
    for a pipeline, whose one ETDump interleaves every method's runs (left on the device)."""
    named = next(((name, m.etdump) for name, m in results.methods.items() if m.etdump), None)
    if named is None or not is_executorch(manifest) or manifest.pipeline is not None:
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
        if manifest.pipeline is not None:
            raise UserError(f"--etdump: per-operator tables are for denoiser artifacts; {art_dir} is a pipeline, whose "
                            "ETDump interleaves its methods' runs (read it with ExecuTorch's devtools Inspector)")
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
    image_ms = check_artifact_methods(results, manifest, f"--results {results_file}")
    where = f"{device_label(results.device)}, {results.runtime}"
    return device_result(art_dir, manifest.describe(), results, operators, where, image_ms)
