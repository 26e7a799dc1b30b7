"""adb: the Android transport of `edit-mobile profile ART --device android[:SERIAL]`.

Artifacts go to DEVICE_ROOT/<name>/ (/data/local/tmp, where adb may write and apps may read,
as ExecuTorch's own Android demos load their programs); the app writes its results JSON and
ETDump into its external files folder (RESULTS_ROOT), which it may write without permissions
and adb may read. Every adb call names the device (`adb -s SERIAL`), so a second phone
plugged in midway changes nothing. Device paths go through the device's shell quoted.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from edit_mobile.errors import UserError
from edit_mobile.fileio import sha256_file
from edit_mobile.runtime.device_profile import (
    APP_ID,
    EXTRA_ARTIFACT,
    EXTRA_BENCHMARK,
    EXTRA_ITERS,
    EXTRA_RESULTS,
    EXTRA_THREADS,
    EXTRA_WARMUP,
    BenchmarkSettings,
    device_name,
    size_of,
)

ANDROID_BACKENDS = ("xnnpack", "vulkan", "qnn")  # ExecuTorch .pte programs the Android app loads
DEVICE_ROOT = "/data/local/tmp/edit_mobile"
RESULTS_ROOT = f"/sdcard/Android/data/{APP_ID}/files/edit_mobile"
ACTIVITY = f"{APP_ID}/.MainActivity"
LOG_TAG = "EDiTDemo"
SHELL_TIMEOUT_S = 60  # one shell command; pushes and pulls of large programs have none
# What adb prints when the device went away mid-run (unplugged, rebooted, adb server restarted).
LOST = re.compile(r"device (?:'[^']*' )?not found|no devices/emulators found|device offline|error: closed"
                  r"|protocol fault", re.I)
INSTALL_FIX = "build and install it (android_demo/README.md: ./gradlew :app:installDebug)"


class AndroidDevice:
    def __init__(self, adb: str, serial: str):
        self.adb = adb
        self.serial = serial
        self.label = f"Android device {serial}"

    @classmethod
    def connect(cls, serial: str | None) -> AndroidDevice:
        adb = shutil.which("adb")
        if adb is None:
            raise UserError("adb is not on PATH: install Android SDK platform-tools (sdkmanager platform-tools, "
                            "or your package manager's android-tools) and put adb on PATH")
        device = cls(adb, _choose(_attached(adb), serial))
        device._check_app()
        return device

    # --- the checks -------------------------------------------------------------------------

    def _check_app(self) -> None:
        listed = self._shell("pm", "list", "packages", APP_ID).splitlines()
        if f"package:{APP_ID}" not in (line.strip() for line in listed):
            raise UserError(f"the demo app {APP_ID} is not installed on {self.label}: {INSTALL_FIX}")

    def check_artifact(self, manifest) -> None:
        if manifest.backend not in ANDROID_BACKENDS:
            raise UserError(f"the Android app runs {' / '.join(ANDROID_BACKENDS)} artifacts and {manifest.root.name} is "
                            f"{manifest.backend}: export for one of those, or profile it with --device ios")

    def log_hint(self) -> str:
        return f"adb -s {self.serial} logcat -s {LOG_TAG}"

    # --- pushing ----------------------------------------------------------------------------

    def push_artifact(self, manifest, files: list[tuple[Path, str]], on_bytes) -> tuple[str, int]:
        """Push what differs from the device's copy (sha256); returns (device folder, files skipped)."""
        folder = f"{DEVICE_ROOT}/{device_name(manifest.root.name)}"
        remote = {relative: f"{folder}/{relative}" for _, relative in files}
        self._shell("mkdir", "-p", *sorted({posixpath.dirname(path) for path in remote.values()}))
        present = self._device_hashes(list(remote.values()))
        skipped = 0
        for local, relative in files:
            if present.get(remote[relative]) == _expected_sha256(manifest, local, relative):
                skipped += 1
            else:
                self._transfer("push", str(local), remote[relative])
            on_bytes(size_of(local))
        return folder, skipped

    def _device_hashes(self, paths: list[str]) -> dict[str, str]:
        """sha256 of those of `paths` present on the device (a missing file, or a device
        without sha256sum, just means: push it)."""
        found = self._run(["shell", _command("sha256sum", *paths)])
        hashes = {}
        for line in found.stdout.splitlines():
            parts = line.split(maxsplit=1)
            if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
                hashes[parts[1].strip()] = parts[0]
        return hashes

    # --- the benchmark ----------------------------------------------------------------------

    def start_benchmark(self, device_artifact: str, settings: BenchmarkSettings) -> str:
        results = f"{RESULTS_ROOT}/{posixpath.basename(device_artifact)}/results.json"
        self._shell("rm", "-f", results, results.removesuffix(".json") + ".etdp")  # never read an earlier run's
        started = self._shell(
            "am", "start", "-S", "-n", ACTIVITY,
            "--es", EXTRA_ARTIFACT, device_artifact,
            "--ei", EXTRA_WARMUP, str(settings.warmup),
            "--ei", EXTRA_ITERS, str(settings.iters),
            "--ei", EXTRA_THREADS, str(settings.threads or 0),
            "--ez", EXTRA_BENCHMARK, "true",
            "--es", EXTRA_RESULTS, results,
        )
        refusal = next((line for line in started.splitlines() if line.startswith("Error")), None)
        if refusal is not None:  # am reports a missing activity on stdout, with exit code 0
            raise UserError(f"could not start the demo app on {self.label} ({refusal.strip()}); {INSTALL_FIX}")
        return results

    def results_ready(self, results_path: str) -> bool:
        listed = self._run(["shell", _command("ls", results_path)])
        return listed.stdout.strip() == results_path  # older adb passes no exit code: read the output

    def pull(self, device_path: str, local: Path) -> None:
        self._transfer("pull", device_path, str(local))

    # --- adb --------------------------------------------------------------------------------

    def _shell(self, *words: str) -> str:
        done = self._run(["shell", _command(*words)])
        if done.returncode != 0:
            raise UserError(f"`adb shell {words[0]}` failed on {self.label}: {_last_line(done)}; check the device "
                            "(adb devices) and run again")
        return done.stdout

    def _transfer(self, verb: str, source: str, destination: str) -> None:
        done = self._run([verb, source, destination], timeout=None)
        if done.returncode != 0:
            raise UserError(f"adb {verb} {source} failed on {self.label}: {_last_line(done)}; check the free space "
                            "and the path on the device, then run again")

    def _run(self, args: list[str], timeout: float | None = SHELL_TIMEOUT_S) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run([self.adb, "-s", self.serial, *args], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as err:
            raise UserError(f"adb {args[0]} got no answer from {self.label} in {timeout:g} s; check the connection "
                            "(adb devices) and run again") from err
        except OSError as err:
            raise UserError(f"cannot run {self.adb} ({err.strerror}); reinstall Android SDK platform-tools") from err
        if done.returncode != 0 and LOST.search(done.stderr + done.stdout):
            raise UserError(f"lost the connection to {self.label} ({_last_line(done)}); reconnect it "
                            "(adb devices must list it as 'device') and run again")
        return done


def _attached(adb: str) -> dict[str, str]:
    """serial -> state ('device', 'unauthorized', 'offline', ...) from `adb devices`."""
    try:
        done = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=SHELL_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"`adb devices` did not run ({err}); restart the adb server (adb kill-server) and try again") from err
    if done.returncode != 0:
        raise UserError(f"`adb devices` failed: {_last_line(done)}; restart the adb server (adb kill-server) and try again")
    devices = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(("List of devices", "*")):
            devices[parts[0]] = parts[1]
    return devices


def _choose(devices: dict[str, str], serial: str | None) -> str:
    if serial is None:
        if not devices:
            raise UserError("no Android device attached (adb devices lists none): connect a phone with USB debugging "
                            "on, or start an emulator")
        if len(devices) > 1:
            raise UserError(f"several Android devices attached ({', '.join(devices)}); pick one with "
                            "--device android:SERIAL")
        serial = next(iter(devices))
    if serial not in devices:
        raise UserError(f"Android device {serial} is not attached (adb devices lists {', '.join(devices) or 'none'}); "
                        "connect it with USB debugging on")
    state = devices[serial]
    if state == "unauthorized":
        raise UserError(f"Android device {serial} is unauthorized: unlock it and accept the USB debugging prompt")
    if state != "device":
        raise UserError(f"Android device {serial} is {state}: reconnect it (adb reconnect) and run again")
    return serial


def _expected_sha256(manifest, local: Path, relative: str) -> str:
    listed = next((entry.sha256 for entry in manifest.files.values() if entry.relative == relative), None)
    return listed or sha256_file(local)  # manifest.json itself is not listed in the manifest


def _command(*words: str) -> str:
    """One shell command line: adb joins its arguments and the device's shell splits them again."""
    return " ".join(shlex.quote(word) for word in words)


def _last_line(done: subprocess.CompletedProcess) -> str:
    """adb's own message: the last line of stderr, else of stdout."""
    for text in (done.stderr, done.stdout):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return f"exit code {done.returncode}"
