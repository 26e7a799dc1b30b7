"""xcrun devicectl (Xcode 15+, macOS): the iOS transport of `edit-mobile profile ART --device ios[:UDID]`.

Not run here (no macOS, no Xcode), and written without devicectl's help output to read: the
subcommands and options below are unverified and may need adjusting on the first run on a Mac. The artifact goes to the app's data container, Documents/artifacts/
<name>/ (where the iOS demo looks for artifacts), and the app writes its results JSON to the
relative path it is given under its home folder. devicectl cannot hash files on the device,
so every file is pushed each time; each run writes a results file of its own name, so no
earlier run's file is ever read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from edit_mobile.errors import UserError
from edit_mobile.runtime.device_profile import (
    APP_ID,
    EXTRA_ARTIFACT,
    EXTRA_BENCHMARK,
    EXTRA_ITERS,
    EXTRA_RESULTS,
    EXTRA_WARMUP,
    BenchmarkSettings,
    device_name,
    size_of,
)

IOS_BACKENDS = ("xnnpack", "coreml-pte", "coreml")
CONTAINER = ["--domain-type", "appDataContainer", "--domain-identifier", APP_ID]
COMMAND_TIMEOUT_S = 120
INSTALL_FIX = "build and run it once from Xcode (ios_demo/README.md)"


class IOSDevice:
    def __init__(self, xcrun: str, identifier: str, name: str):
        self.xcrun = xcrun
        self.identifier = identifier
        self.label = f"iOS device {name}"

    @classmethod
    def connect(cls, udid: str | None) -> IOSDevice:
        xcrun = shutil.which("xcrun")
        if xcrun is None:
            raise UserError("xcrun is not on PATH: install Xcode 15+ and select it (sudo xcode-select -s /Applications/Xcode.app)")
        devices = [d for d in _devicectl_json(xcrun, ["list", "devices"]).get("devices", [])
                   if d.get("hardwareProperties", {}).get("platform") == "iOS"]
        device = cls(xcrun, *_choose(devices, udid))
        apps = device._json(["device", "info", "apps", "--device", device.identifier]).get("apps", [])
        if not any(app.get("bundleIdentifier") == APP_ID for app in apps):
            raise UserError(f"the demo app {APP_ID} is not installed on {device.label}: {INSTALL_FIX}")
        return device

    def check_artifact(self, manifest) -> None:
        if manifest.backend not in IOS_BACKENDS:
            raise UserError(f"the iOS app runs {' / '.join(IOS_BACKENDS)} artifacts and {manifest.root.name} is "
                            f"{manifest.backend}: export for one of those, or profile it with --device android")

    def log_hint(self) -> str:
        return f"xcrun devicectl device process launch --console --device {self.identifier} {APP_ID} (or Console.app)"

    def push_artifact(self, manifest, files: list[tuple[Path, str]], on_bytes) -> tuple[str, int]:
        name = device_name(manifest.root.name)
        for local, relative in files:
            self._run(["device", "copy", "to", "--device", self.identifier, *CONTAINER, "--source", str(local),
                       "--destination", f"Documents/artifacts/{name}/{relative}"], timeout=None)
            on_bytes(size_of(local))
        return name, 0

    def start_benchmark(self, device_artifact: str, settings: BenchmarkSettings) -> str:
        results = f"Documents/edit_mobile/{device_artifact}/results-{time.strftime('%Y%m%d-%H%M%S')}.json"
        self._run(["device", "process", "launch", "--device", self.identifier, "--terminate-existing", APP_ID,
                   f"-{EXTRA_ARTIFACT}", device_artifact, f"-{EXTRA_WARMUP}", str(settings.warmup),
                   f"-{EXTRA_ITERS}", str(settings.iters), f"-{EXTRA_BENCHMARK}", "YES", f"-{EXTRA_RESULTS}", results])
        return results

    def results_ready(self, results_path: str) -> bool:
        with tempfile.TemporaryDirectory(prefix="edit-mobile-ios-") as scratch:
            return self._copy_from(results_path, Path(scratch) / "results.json", check=False)

    def pull(self, device_path: str, local: Path) -> None:
        self._copy_from(device_path, local, check=True)

    def _copy_from(self, device_path: str, local: Path, check: bool) -> bool:
        done = self._run(["device", "copy", "from", "--device", self.identifier, *CONTAINER, "--source", device_path,
                          "--destination", str(local)], check=check)
        return done.returncode == 0 and local.exists()

    def _json(self, args: list[str]) -> dict:
        return _devicectl_json(self.xcrun, args)

    def _run(self, args: list[str], timeout: float | None = COMMAND_TIMEOUT_S, check: bool = True):
        return _devicectl(self.xcrun, args, timeout, check)


def _devicectl(xcrun: str, args: list[str], timeout: float | None = COMMAND_TIMEOUT_S, check: bool = True):
    try:
        done = subprocess.run([xcrun, "devicectl", *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise UserError(f"devicectl {' '.join(args[:3])} got no answer in {timeout:g} s; check the device (unlocked, "
                        "trusted) and run again") from err
    if check and done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise UserError(f"devicectl {' '.join(args[:3])} failed: {lines[-1] if lines else done.returncode}; check that "
                        "the device is connected, unlocked and trusts this Mac (xcrun devicectl list devices)")
    return done


def _devicectl_json(xcrun: str, args: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="edit-mobile-ios-") as scratch:
        output = Path(scratch) / "out.json"
        _devicectl(xcrun, [*args, "--json-output", str(output)])
        try:
            return json.loads(output.read_text()).get("result", {})
        except (OSError, ValueError) as err:
            raise UserError(f"devicectl {' '.join(args[:3])} wrote no readable JSON ({err}); update Xcode to 15 or "
                            "later") from err


def _choose(devices: list[dict], udid: str | None) -> tuple[str, str]:
    """(devicectl identifier, name) of the device asked for, or of the only one."""
    def ids(device: dict) -> set[str]:
        return {device.get("identifier"), device.get("hardwareProperties", {}).get("udid")} - {None}

    def name(device: dict) -> str:
        return device.get("deviceProperties", {}).get("name") or device.get("identifier", "?")

    if udid is not None:
        devices = [d for d in devices if udid in ids(d)]
        if not devices:
            raise UserError(f"no iOS device {udid} is known to this Mac; connect it, trust this Mac, and check "
                            "xcrun devicectl list devices")
    if not devices:
        raise UserError("no iOS device attached: connect an iPhone or iPad, unlock it and trust this Mac")
    if len(devices) > 1:
        raise UserError(f"several iOS devices ({', '.join(name(d) for d in devices)}); pick one with --device ios:UDID")
    device = devices[0]
    if device.get("connectionProperties", {}).get("tunnelState") == "unavailable":
        raise UserError(f"iOS device {name(device)} is paired but not reachable: connect it with USB or to this "
                        "Mac's network and unlock it")
    return device["identifier"], name(device)
