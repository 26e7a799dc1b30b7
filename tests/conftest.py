import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from edit_mobile.main import THIRD_PARTY_NOTICES


def pytest_configure(config):
    """Third-party deprecation notices we cannot act on; our own warnings still show. Under
    several xdist workers, one intra-op thread each (and for the processes they start): two
    workers of two OpenMP threads on two cores spin-wait on each other (one training test: 13 s
    alone, 115 s beside another worker)."""
    for message in THIRD_PARTY_NOTICES:
        config.addinivalue_line("filterwarnings", f"ignore:{message}")
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


ANDROID_JAVA = Path(__file__).resolve().parents[1] / "android_demo"


@pytest.fixture(scope="session")
def java_classes(tmp_path_factory) -> Path:
    """The Android app's plain-Java logic and its desktop drivers (android_demo/jvm_check/),
    compiled once for every test that runs them."""
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("javac/java not on PATH: the Android app's Java logic cannot be compiled here")
    classes = tmp_path_factory.mktemp("classes")
    app = ANDROID_JAVA / "app" / "src" / "main" / "java" / "org" / "editmobile" / "demo"
    sources = [str(p) for p in sorted(app.glob("*.java")) + sorted((ANDROID_JAVA / "jvm_check").glob("*.java"))]
    # --release 8: only APIs every Android version the app targets has.
    subprocess.run(["javac", "--release", "8", "-Xlint:all", "-Werror", "-d", str(classes), *sources],
                   check=True, capture_output=True, text=True, timeout=120)
    return classes
