"""edit-mobile profile on a phone, as far as this machine can check it.

No phone can be attached here, so:
- ETDump ingestion runs on an ETDump the ExecuTorch runtime records here, for the tiny EDiT
  XNNPACK artifact, read back with `profile ART --etdump FILE` against the artifact's ETRecord;
- the adb flow runs against a TEST DOUBLE `adb` (a Python script first on PATH, standing in for
  a phone with the demo app) that logs its calls and serves canned results: the real ETDump
  made here and a results JSON written to the app's schema; for a pipeline artifact (a small
  one laid out as export --pipeline writes it, no model in it), a canned results JSON timing
  every method and one image, as the app's benchmark mode writes it;
- the apps' results keys (the Android app's Java block, the iOS app's Swift block, which writes
  version 1) and launch extras are compared with the Python schema, and the README documents
  every key;
- `--compare` of a host profile and a device profile writes a table and a PNG.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from export_artifacts import load_test_vectors
from PIL import Image
from test_demo_apps import write_pipeline_artifact
from test_runtime_artifacts import artifact

from edit_mobile.main import main
from edit_mobile.runtime import device_android, device_profile
from edit_mobile.runtime.device_android import DEVICE_ROOT, RESULTS_ROOT
from edit_mobile.runtime.device_profile import device_name

REPO = Path(__file__).resolve().parents[1]
KOTLIN = REPO / "android_demo" / "app" / "src" / "main" / "java" / "org" / "editmobile" / "demo"  # and its Java
SWIFT = REPO / "ios_demo" / "EDiTDemo"
SERIAL = "FAKE0123"
RECORDED_RUNS = 3


# --- an ETDump made here by the ExecuTorch runtime -------------------------------------------


@pytest.fixture(scope="module")
def art() -> Path:
    return artifact("xnnpack")


@pytest.fixture(scope="module")
def etdump(art, tmp_path_factory) -> Path:
    """RECORDED_RUNS runs of the artifact's program with ExecuTorch's event tracer, as a phone
    runtime built with it records them, written the way executor_runner --etdump_path does."""
    from executorch.runtime import Runtime

    inputs, _ = load_test_vectors(art)
    program = Runtime.get().load_program(art / "model.pte", enable_etdump=True, debug_buffer_size=0)
    method = program.load_method("forward")
    for _ in range(RECORDED_RUNS):
        method.execute(inputs)
    folder = tmp_path_factory.mktemp("etdump")
    path = folder / "device.etdp"
    program.write_etdump_result_to_file(str(path), str(folder / "debug.bin"))
    assert path.stat().st_size > 0
    return path


def test_etdump_made_elsewhere_is_broken_down_by_the_models_modules(art, etdump, tmp_path, capsys):
    report = tmp_path / "etdump.json"
    assert main(["profile", str(art), "--etdump", str(etdump), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "by block" in out and "by kind" in out
    assert "transformer_blocks.0" in out and "transformer_blocks.1" in out  # module names from the ETRecord
    operators = json.loads(report.read_text())["operators"]
    assert operators["source"] == "etdump" and operators["run_ms"] > 0
    assert {"transformer_blocks.0", "transformer_blocks.1"} <= set(operators["by_block"])
    assert {"attention", "mlp"} <= set(operators["by_kind"])
    assert 0.8 <= operators["coverage"] <= 1.2  # instructions and delegate calls add up to the run
    assert any(f"of the {RECORDED_RUNS} recorded" in note for note in operators["notes"])


def test_a_file_that_is_not_an_etdump_is_one_line(art, tmp_path, capsys):
    bogus = tmp_path / "bogus.etdp"
    bogus.write_bytes(b"not a flatbuffer" * 8)
    assert main(["profile", str(art), "--etdump", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is not an ETDump" in err and "Traceback" not in err


# --- the adb flow against a stand-in phone ---------------------------------------------------

FAKE_ADB = '''#!{python}
"""TEST DOUBLE for adb, written by tests/test_device_profile.py: a stand-in for an Android phone
with the demo app installed, which cannot be attached to this machine. It appends every call to
calls.log (a JSON list a line) and answers from scenario.json beside it; device-side shell
commands are split as the device's shell would split them."""
import json, shlex, shutil, sys
from pathlib import Path

here = Path(__file__).resolve().parent
scenario = json.loads((here / "scenario.json").read_text())
log = here / "calls.log"
earlier = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
args = sys.argv[1:]
with open(log, "a") as out:
    out.write(json.dumps(args) + "\\n")

def fail(message):
    sys.stderr.write(message + "\\n")
    sys.exit(1)

if args == ["devices"]:
    print("List of devices attached")
    for serial, state in scenario["devices"].items():
        print(serial + "\\t" + state)
    sys.exit(0)
if args[:2] != ["-s", "{serial}"]:
    fail("error: device '" + (args[1] if len(args) > 1 else "") + "' not found")
verb, rest = args[2], args[3:]
if scenario["disconnect_after_push"] and any(call[2:3] == ["push"] for call in earlier):
    fail("error: device '{serial}' not found")
if verb == "push":
    print(rest[0] + ": 1 file pushed")
elif verb == "pull":
    source = scenario["pullable"].get(rest[0])
    if source is None:
        fail("adb: error: failed to stat remote object '" + rest[0] + "': No such file or directory")
    shutil.copyfile(source, rest[1])
elif verb == "shell":
    words = shlex.split(" ".join(rest))
    if words[:3] == ["pm", "list", "packages"]:
        for package in scenario["packages"]:
            print("package:" + package)
    elif words[0] == "sha256sum":
        missing = [path for path in words[1:] if path not in scenario["device_sha256"]]
        for path in words[1:]:
            if path in scenario["device_sha256"]:
                print(scenario["device_sha256"][path] + "  " + path)
        for path in missing:
            sys.stderr.write("sha256sum: " + path + ": No such file or directory\\n")
        sys.exit(1 if missing else 0)
    elif words[:2] == ["am", "start"]:
        print("Starting: Intent { cmp=" + words[words.index("-n") + 1] + " (has extras) }")
    elif words[0] == "ls":
        started = any(call[3:4] and call[3].startswith("am start") for call in earlier)
        if not (started and scenario["app_writes_results"] and words[1] in scenario["pullable"]):
            fail("ls: " + words[1] + ": No such file or directory")
        print(words[1])
    elif words[0] not in ("mkdir", "rm"):
        fail("/system/bin/sh: " + words[0] + ": inaccessible or not found")
else:
    fail("adb: unknown command " + verb)
'''


def results_paths(art: Path) -> tuple[str, str]:
    """Where the app writes its results JSON and ETDump for this artifact (device_android's layout)."""
    folder = f"{RESULTS_ROOT}/{device_name(art.name)}"
    return f"{folder}/results.json", f"{folder}/results.etdp"


def canned_results(etdump_path: str | None, version: int = 2) -> dict:
    """A results JSON as the Android app writes it (android_demo/README.md, 'Benchmark mode');
    version 1 as the iOS app (and Android apps before pipeline benchmarks) write it."""
    return {
        "schema": "edit-mobile/device-benchmark", "schema_version": version, "status": "ok",
        "device": {"model": "Pixel Test", "manufacturer": "Google", "os": "Android 15 (API 35)", "abi": "arm64-v8a"},
        "runtime": "executorch-android", "backends": ["XnnpackBackend"],
        "artifact": f"{DEVICE_ROOT}/tiny-xnnpack", "model": "tiny-pixart-edit", "threads": 4,
        "methods": {"forward": {
            "warmup": 2, "latencies_ms": [10.0, 11.0, 12.0, 13.0, 30.0], "load_ms": 42.5,
            "peak_memory_bytes": 300 * 2**20, "memory_source": "VmHWM", "etdump": etdump_path,
        }},
    }


def install_fake_adb(tmp_path: Path, monkeypatch) -> Path:
    """The stand-in adb first (and alone) on PATH; returns its folder, where scenario.json goes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(FAKE_ADB.replace("{python}", sys.executable).replace("{serial}", SERIAL))
    adb.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(device_profile, "POLL_SECONDS", 0.05)
    return bin_dir


@pytest.fixture
def phone(art, etdump, tmp_path, monkeypatch):
    """The stand-in adb first (and alone) on PATH, and a function to set its scenario."""
    bin_dir = install_fake_adb(tmp_path, monkeypatch)
    results_path, etdump_path = results_paths(art)
    canned = tmp_path / "canned-results.json"
    canned.write_text(json.dumps(canned_results(etdump_path)))
    manifest = json.loads((art / "manifest.json").read_text())
    vectors = manifest["files"]["test_vectors"]["path"]

    def set_scenario(**changes) -> Path:
        scenario = {
            "devices": {SERIAL: "device"}, "packages": ["com.android.shell", device_profile.APP_ID],
            # The test vectors are on the phone already; the program there is an older one.
            "device_sha256": {f"{DEVICE_ROOT}/{device_name(art.name)}/{vectors}": manifest["files"]["test_vectors"]["sha256"],
                              f"{DEVICE_ROOT}/{device_name(art.name)}/model.pte": "0" * 64},
            "pullable": {results_path: str(canned), etdump_path: str(etdump)},
            "app_writes_results": True, "disconnect_after_push": False,
        }
        scenario.update(changes)
        (bin_dir / "scenario.json").write_text(json.dumps(scenario))
        return bin_dir / "calls.log"

    return set_scenario


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_android_benchmark_pushes_what_changed_runs_the_app_and_reports_the_phone(art, phone, tmp_path, capsys):
    log = phone()
    report = tmp_path / "device.json"
    assert main(["profile", str(art), "--device", "android", "--warmup", "2", "--iters", "5", "--threads", "4",
                 "--json", str(report)]) == 0
    out = capsys.readouterr().out
    made = calls(log)
    assert made[0] == ["devices"] and all(call[:2] == ["-s", SERIAL] for call in made[1:])
    folder = f"{DEVICE_ROOT}/{device_name(art.name)}"
    made = made[1:]
    pushed = sorted(call[4] for call in made if call[2] == "push")
    assert pushed == [f"{folder}/manifest.json", f"{folder}/model.pte"]  # test vectors unchanged: skipped
    start = next(call[3] for call in made if call[2] == "shell" and call[3].startswith("am start"))
    results_path, etdump_path = results_paths(art)
    for extra in ("-n org.editmobile.demo/.MainActivity", f"--es artifact {folder}", "--ei warmup 2", "--ei iters 5",
                  "--ei threads 4", "--ez benchmark true", f"--es results {results_path}"):
        assert extra in start
    assert [call[3] for call in made if call[2] == "pull"] == [results_path, etdump_path]
    # The phone's figures, then the per-operator tables of its ETDump.
    assert "Google Pixel Test" in out and "12.00" in out and "42.5" in out and "300 MB (VmHWM)" in out
    assert "by block" in out and "transformer_blocks.0" in out
    data = json.loads(report.read_text())
    forward = data["methods"]["forward"]
    assert forward["latency_ms"]["median"] == 12.0 and forward["latency_ms"]["min"] == 10.0
    assert forward["latency_ms"]["runs"] == 5 and forward["load_ms"] == 42.5
    assert forward["peak_memory_bytes"] == 300 * 2**20 and data["device"]["model"] == "Pixel Test"
    assert data["pushed"]["unchanged"] == 1 and data["pushed"]["files"] == 2
    assert "transformer_blocks.1" in data["operators"]["by_block"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_no_adb_on_path(art, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert main(["profile", str(art), "--device", "android"]) == 2
    assert "adb is not on PATH" in one_line_error(capsys)


@pytest.mark.parametrize(("scenario", "target", "expected"), [
    ({"devices": {}}, "android", "no Android device attached"),
    ({}, "android:OTHER42", "Android device OTHER42 is not attached"),
    ({"devices": {SERIAL: "unauthorized"}}, "android", "accept the USB debugging prompt"),
    ({"packages": ["com.android.shell"]}, "android", "org.editmobile.demo is not installed"),
])
def test_missing_device_or_app_is_one_line(art, phone, capsys, scenario, target, expected):
    log = phone(**scenario)
    assert main(["profile", str(art), "--device", target]) == 2
    assert expected in one_line_error(capsys)
    assert not any(call[2:3] == ["push"] for call in calls(log))


def test_a_device_that_disconnects_after_the_push(art, phone, capsys):
    log = phone(disconnect_after_push=True)
    assert main(["profile", str(art), "--device", "android"]) == 2
    assert "lost the connection to Android device" in one_line_error(capsys)
    assert any(call[2:3] == ["push"] for call in calls(log))


def test_results_that_never_appear_time_out(art, phone, capsys):
    log = phone(app_writes_results=False)
    assert main(["profile", str(art), "--device", f"android:{SERIAL}", "--timeout", "1"]) == 2
    err = one_line_error(capsys)
    assert "no results from the app after 1 s" in err and f"adb -s {SERIAL} logcat" in err
    assert sum(call[2:3] == ["shell"] and call[3].startswith("ls ") for call in calls(log)) >= 2  # it polled


def test_an_error_the_app_reports_is_one_line(art, phone, tmp_path, capsys):
    results_path, _ = results_paths(art)
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps({"schema": "edit-mobile/device-benchmark", "schema_version": 1, "status": "error",
                                  "error": "model.pte sha256 differs from the manifest; push it again"}))
    phone(pullable={results_path: str(failed)})
    assert main(["profile", str(art), "--device", "android"]) == 2
    assert "the app reported: model.pte sha256 differs" in one_line_error(capsys)


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS --device ios talks to xcrun devicectl")
def test_ios_needs_macos(art, capsys):
    assert main(["profile", str(art), "--device", "ios"]) == 2
    assert "needs macOS" in one_line_error(capsys)


@pytest.mark.parametrize(("argv", "expected"), [
    ([], "pass ART_DIR"),
    (["ART", "--png", "x.png"], "--png draws --compare's table"),
    (["ART", "--device", "android", "--etdump", "x.etdp"], "pass one or the other"),
    (["ART", "--timeout", "5"], "pass --device with it"),
    (["ART", "--device", "windows"], "use android, android:SERIAL, ios or ios:UDID"),
    (["--compare", "a.json", "--device", "android"], "--compare takes profile JSONs only; drop --device"),
])
def test_modes_that_do_not_go_together_are_one_line(tmp_path, capsys, argv, expected):
    argv = [str(tmp_path) if word == "ART" else word for word in argv]
    assert main(["profile", *argv]) == 2
    assert expected in one_line_error(capsys)


# --- --compare -----------------------------------------------------------------------------------


def test_compare_puts_host_and_device_side_by_side_with_a_png(art, tmp_path, capsys):
    host, device, canned = tmp_path / "host.json", tmp_path / "device.json", tmp_path / "results.json"
    assert main(["profile", str(art), "--iters", "3", "--warmup", "0", "--threads", "1", "--no-operators",
                 "--json", str(host)]) == 0
    canned.write_text(json.dumps(canned_results(None, version=1)))  # v1, as the iOS app writes: still read
    assert main(["profile", str(art), "--results", str(canned), "--json", str(device)]) == 0
    capsys.readouterr()
    table, png = tmp_path / "compare.json", tmp_path / "latency.png"
    assert main(["profile", "--compare", str(host), str(device), "--json", str(table), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "host.json" in out and "device.json" in out and "latency per method" in out
    rows = json.loads(table.read_text())["rows"]
    assert [(row["profile"], row["method"]) for row in rows] == [("host.json", "forward"), ("device.json", "forward")]
    assert rows[0]["where"].startswith("host: executorch") and rows[1]["where"].startswith("Google Pixel Test")
    host_median = json.loads(host.read_text())["latency_ms"]["median"]
    assert rows[0]["median_ms"] == pytest.approx(host_median) and rows[1]["median_ms"] == 12.0
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 200


def test_compare_refuses_a_file_that_is_not_a_profile(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"created_by": "someone else"}))
    assert main(["profile", "--compare", str(other)]) == 2
    assert "is not a profile JSON" in one_line_error(capsys)


# --- the apps write what the host reads ---------------------------------------------------------


def block(text: str, name: str) -> str:
    return re.search(rf"// BEGIN {name}(.*?)// END {name}", text, re.S).group(1)


def kotlin_constants(file: Path, name: str) -> dict[str, object]:
    found = re.findall(r"const val (\w+) = (\"[^\"]*\"|\d+)", block(file.read_text(), name))
    return {key: json.loads(value) for key, value in found}


def java_constants(file: Path, name: str) -> dict[str, object]:
    found = re.findall(r"static final (?:String|int) (\w+) = (\"[^\"]*\"|\d+);", block(file.read_text(), name))
    return {key: json.loads(value) for key, value in found}


def swift_results_keys() -> dict[str, object]:
    found = re.findall(r"static let (\w+) = (.+)", block((SWIFT / "BenchmarkResults.swift").read_text(), "RESULTS KEYS"))
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", key).upper(): json.loads(value) for key, value in found}  # camel -> SNAKE


def schema_keys(version: int = device_profile.RESULTS_SCHEMA_VERSION) -> dict[str, object]:
    """The Python schema of `version` in the apps' naming: PREFIX_KEY -> key."""
    keys: dict[str, object] = {"SCHEMA_NAME": device_profile.RESULTS_SCHEMA, "SCHEMA_VERSION": version}
    for prefix, table in device_profile.RESULTS_TABLES.items():
        keys.update({f"{prefix}_{key.name.upper()}": key.name for key in table if key.since <= version})
    return keys


def test_both_apps_results_keys_are_the_python_schema():
    assert 1 in device_profile.RESULTS_VERSIONS_READ
    assert java_constants(KOTLIN / "ResultsKeys.java", "RESULTS KEYS") == schema_keys()
    assert "BEGIN RESULTS KEYS" not in (KOTLIN / "DemoRun.kt").read_text()  # one block, the Java one
    assert swift_results_keys() == schema_keys(1)  # the iOS app writes version 1, which the host still reads


def test_android_launch_extras_and_folders_are_what_the_host_uses():
    extras = kotlin_constants(KOTLIN / "MainActivity.kt", "LAUNCH EXTRAS")
    python = {name: value for name, value in vars(device_profile).items() if name.startswith("EXTRA_")}
    assert extras == python
    activity = (KOTLIN / "MainActivity.kt").read_text()
    assert f'const val DEVICE_ROOT = "{device_android.DEVICE_ROOT}"' in activity
    gradle = (REPO / "android_demo" / "app" / "build.gradle.kts").read_text()
    assert f'applicationId = "{device_profile.APP_ID}"' in gradle
    assert 'android:name=".MainActivity"' in (KOTLIN.parents[3] / "AndroidManifest.xml").read_text()
    assert device_android.ACTIVITY == f"{device_profile.APP_ID}/.MainActivity"
    # The app writes results only inside its external files folder (getExternalFilesDir).
    assert RESULTS_ROOT.startswith(f"/sdcard/Android/data/{device_profile.APP_ID}/files/")


def test_the_android_readme_documents_every_results_key_and_extra():
    readme = (REPO / "android_demo" / "README.md").read_text()
    section = readme[readme.index("## Benchmark mode"):]
    for table in device_profile.RESULTS_TABLES.values():
        for key in table:
            assert f"`{key.name}`" in section, key.name
    for name, value in vars(device_profile).items():
        if name.startswith("EXTRA_"):
            assert f"`{value}`" in section, value


# --- a pipeline artifact: every method and one image ------------------------------------------------

PIPELINE_LATENCIES_MS = {  # median 5 / 21 / 41 / 31 / 61
    "encode_prompt": [4.0, 6.0, 5.0], "denoise_64x64": [20.0, 23.0, 21.0], "denoise_64x128": [40.0, 41.0, 45.0],
    "decode_64x64": [30.0, 31.0, 32.0], "decode_64x128": [62.0, 60.0, 61.0],
}
# 20 steps, guidance 4.5, batch-1 denoisers: the prompt encoded twice, two denoise calls a step.
PIPELINE_IMAGE_MS = {
    "64x64": {"encode": 10.0, "per_step": 42.0, "decode": 31.0, "total": 10.0 + 20 * 42.0 + 31.0},
    "64x128": {"encode": 10.0, "per_step": 82.0, "decode": 61.0, "total": 10.0 + 20 * 82.0 + 61.0},
}


@pytest.fixture(scope="module")
def pipeline_art(tmp_path_factory) -> Path:
    return write_pipeline_artifact(tmp_path_factory.mktemp("pipeline") / "tiny-pipeline", steps=20, guidance=4.5)


def canned_pipeline_results(etdump_path: str | None) -> dict:
    """A results JSON as the Android app's benchmark mode writes it for a pipeline artifact
    (DemoRun.runPipeline, PipelineBenchmark): every method, and one image per resolution."""
    results = canned_results(etdump_path)
    results["artifact"] = f"{DEVICE_ROOT}/tiny-pipeline"
    results["methods"] = {name: {"warmup": 2, "latencies_ms": runs, "load_ms": 3.5 + index,
                                 "peak_memory_bytes": (200 + 10 * index) * 2**20, "memory_source": "VmHWM",
                                 "etdump": etdump_path}
                          for index, (name, runs) in enumerate(PIPELINE_LATENCIES_MS.items())}
    results["pipeline"] = {"steps": 20, "guidance": 4.5, "image_ms": PIPELINE_IMAGE_MS}
    return results


@pytest.fixture
def pipeline_phone(pipeline_art, tmp_path, monkeypatch):
    """The stand-in adb (a phone with the demo app, nothing pushed yet) serving `results`."""
    bin_dir = install_fake_adb(tmp_path, monkeypatch)
    results_path, etdump_path = results_paths(pipeline_art)

    def serve(results: dict | None = None) -> Path:
        canned = tmp_path / "canned-results.json"
        canned.write_text(json.dumps(canned_pipeline_results(etdump_path) if results is None else results))
        (bin_dir / "scenario.json").write_text(json.dumps({
            "devices": {SERIAL: "device"}, "packages": [device_profile.APP_ID], "device_sha256": {},
            "pullable": {results_path: str(canned)}, "app_writes_results": True, "disconnect_after_push": False,
        }))
        return bin_dir / "calls.log"

    return serve


def test_a_pipeline_on_the_phone_times_every_method_and_one_image(pipeline_art, pipeline_phone, tmp_path, capsys):
    log = pipeline_phone()
    report = tmp_path / "device.json"
    assert main(["profile", str(pipeline_art), "--device", "android", "--warmup", "2", "--iters", "3",
                 "--json", str(report)]) == 0
    out = capsys.readouterr().out
    made = calls(log)
    folder = f"{DEVICE_ROOT}/{device_name(pipeline_art.name)}"
    pushed = sorted(call[4] for call in made if call[2:3] == ["push"])
    assert pushed == [f"{folder}/manifest.json", f"{folder}/model.pte", f"{folder}/test_vectors.safetensors"]
    results_path, _ = results_paths(pipeline_art)
    # The ETDump of a pipeline interleaves its methods' runs: named, left on the phone, not attributed.
    assert [call[3] for call in made if call[2:3] == ["pull"]] == [results_path]
    for name in PIPELINE_LATENCIES_MS:  # a row per method: load, min / median / p90, runs, memory
        assert name in out, name
    assert "Google Pixel Test" in out and "21.00" in out and "61.00" in out and "240 MB (VmHWM)" in out
    data = json.loads(report.read_text())
    assert list(data["methods"]) == list(PIPELINE_LATENCIES_MS)
    for name, runs in PIPELINE_LATENCIES_MS.items():
        latency = data["methods"][name]["latency_ms"]
        assert latency["runs"] == 3 and latency["median"] == sorted(runs)[1] and latency["min"] == min(runs)
    assert data["image_ms"] == {size: {"steps": 20, "guided": True, **cost} for size, cost in PIPELINE_IMAGE_MS.items()}
    assert "operators" not in data


def test_a_pipeline_on_the_phone_prints_one_images_cost(pipeline_art, pipeline_phone, capsys):
    pipeline_phone()
    assert main(["profile", str(pipeline_art), "--device", "android"]) == 0
    out = capsys.readouterr().out
    assert "one 64x128 image, 20 steps with guidance: 1.71 s (encode 10 ms, 82.0 ms a step, decode 61 ms)" in out


def test_pipeline_results_pulled_by_hand_are_read_too(pipeline_art, tmp_path, capsys):
    canned, report = tmp_path / "results.json", tmp_path / "device.json"
    canned.write_text(json.dumps(canned_pipeline_results(None)))
    assert main(["profile", str(pipeline_art), "--results", str(canned), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["image_ms"]["64x64"]["total"] == PIPELINE_IMAGE_MS["64x64"]["total"]
    etdump = tmp_path / "pipeline.etdp"
    etdump.write_bytes(b"\0" * 64)
    assert main(["profile", str(pipeline_art), "--etdump", str(etdump)]) == 2
    assert "per-operator tables are for denoiser artifacts" in one_line_error(capsys)


def _without(results: dict, *path: str) -> dict:
    *parents, last = path
    target = results
    for key in parents:
        target = target[key]
    del target[last]
    return results


def _with(results: dict, value, *path: str) -> dict:
    *parents, last = path
    target = results
    for key in parents:
        target = target[key]
    target[last] = value
    return results


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda r: _without(r, "methods", "decode_64x128"), "'methods' must time the pipeline's"),
    (lambda r: _with(r, {"warmup": 2}, "methods", "denoise_64x64"), "has no 'methods.denoise_64x64.latencies_ms'"),
    (lambda r: _with(r, "fast", "methods", "encode_prompt", "latencies_ms"),
     "'methods.encode_prompt.latencies_ms' is 'fast', not a list"),
    (lambda r: _with(r, [], "methods", "encode_prompt", "latencies_ms"), "must be a non-empty list of positive"),
    (lambda r: _with(r, {}, "methods"), "times no method"),
    (lambda r: _without(_with(r, 1, "schema_version"), "pipeline"), "an app older than pipeline benchmarks"),
    (lambda r: _with(r, 999.0, "pipeline", "image_ms", "64x64", "total"),
     "'pipeline.image_ms.64x64.total' is 999 ms, the methods' medians give 881 ms"),
    (lambda r: _with(r, {"big": PIPELINE_IMAGE_MS["64x64"]}, "pipeline", "image_ms"), "'big', not a size HxW"),
    (lambda r: _with(r, 7, "pipeline", "steps"), "costs an image at 7 steps"),
], ids=["a-method-missing", "no-latencies", "latencies-not-a-list", "no-runs", "no-methods", "older-app",
        "image-cost-not-the-medians", "image-size-not-HxW", "other-steps"])
def test_a_malformed_pipeline_results_json_is_one_line(pipeline_art, pipeline_phone, capsys, damage, expected):
    _, etdump_path = results_paths(pipeline_art)
    pipeline_phone(damage(canned_pipeline_results(etdump_path)))
    assert main(["profile", str(pipeline_art), "--device", "android"]) == 2
    assert expected in one_line_error(capsys)
