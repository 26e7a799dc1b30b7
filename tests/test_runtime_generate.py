"""edit-mobile generate: a PNG of the artifact's size; the same seed gives the same image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_runtime_artifacts import RESOLUTION, artifact

from edit_mobile.main import main


def _generate(path, *options) -> np.ndarray:
    assert main(["generate", str(artifact("xnnpack")), "--prompt", "a lighthouse at dusk", "--steps", "3", "-o", str(path), *options]) == 0
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (RESOLUTION, RESOLUTION) and image.mode == "RGB"
    return np.asarray(image)


def test_same_seed_same_image_other_seed_other_image(tmp_path):
    first = _generate(tmp_path / "a.png", "--seed", "7", "--size", f"{RESOLUTION}x{RESOLUTION}")
    again = _generate(tmp_path / "b.png", "--seed", "7")
    other = _generate(tmp_path / "c.png", "--seed", "8")
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.std() > 1  # decoded pixels, not a blank image


def test_the_artifact_and_the_reference_draw_the_same_picture(tmp_path):
    produced = _generate(tmp_path / "artifact.png", "--seed", "3").astype(float)
    expected = _generate(tmp_path / "reference.png", "--seed", "3", "--reference").astype(float)
    assert np.abs(produced - expected).max() <= 2  # fp32 program: at most rounding of 8-bit pixels


def test_a_size_other_than_the_exported_one_is_refused(tmp_path, capsys):
    assert main(["generate", str(artifact("xnnpack")), "--prompt", "x", "--size", "256", "-o", str(tmp_path / "x.png")]) == 2
    assert "exported for 128x128" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("steps", ["0"])
def test_bad_steps_are_refused(tmp_path, steps, capsys):
    assert main(["generate", str(artifact("xnnpack")), "--prompt", "x", "--steps", steps, "-o", str(tmp_path / "x.png")]) == 2
    assert "--steps" in capsys.readouterr().err


def test_tiny_architectures_get_seeded_random_encoder_and_vae_real_ones_must_be_given(tmp_path, capsys):
    import json

    from test_runtime_artifacts import copy_artifact

    art = copy_artifact("onnx", tmp_path / "art")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["model"]["source"] = str(tmp_path / "student")  # converted from tiny-pixart into a folder
    (art / "manifest.json").write_text(json.dumps(manifest))
    assert main(["generate", str(art), "--prompt", "x", "--steps", "1", "-o", str(tmp_path / "tiny.png")]) == 0
    manifest["model"]["config"]["caption_channels"] = 4096  # no tiny preset: a real model's encoder is needed
    (art / "manifest.json").write_text(json.dumps(manifest))
    assert main(["generate", str(art), "--prompt", "x", "--steps", "1", "-o", str(tmp_path / "real.png")]) == 2
    assert "--text-encoder" in capsys.readouterr().err
