"""`edit-mobile distill` on a small PixArt pipeline folder (a 1-step teacher: the engine's
plumbing and determinism, not distillation quality, which needs trained teachers).

Runs at 64 px (4 x 4 image tokens) so that a step takes milliseconds.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from edit_mobile.pretrained import VAE_FOLDER
from edit_mobile.training import train_teacher

TINY_RUN = ["--samples", "4", "--steps", "2", "--eval-samples", "0", "--batch", "4", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("distill") / "teacher"
    folder.mkdir()
    train_teacher.train("pixart", VAE_FOLDER, folder, stages=[(256, 1)], batch=2, lr=1e-3, seed=0, images=4, text_steps=0,
                        cache=folder.parent / "cache")
    return folder


def _cli(*args, env=None, launcher=None):
    command = (launcher or [sys.executable, "-m", "edit_mobile"]) + ["distill", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")


@pytest.mark.parametrize("parallel", ["ddp", "shard"])
def test_two_processes_reach_the_weights_of_one(teacher, tmp_path, parallel):
    """torchrun with 2 gloo processes (DDP, or FSDP2 with --shard), 2 samples each, against 1 process with the global batch
    of 4: the same samples, noise and caption dropout by construction (seeded per global sample
    index), so the runs differ only in the order of floating-point sums (DDP's all-reduce adds
    two halves; one process adds all four). Adam turns gradients into near-sign updates, so a
    rounding difference on a near-zero gradient (ConvFusion's expand starts at zero) moves that
    weight by up to lr: elementwise comparison is meaningless. The distance between the two
    runs, relative to how far training moved the weights, is (measured) ~1e-2; a data or
    sharding mismatch (e.g. each process taking the whole batch) gives > 0.3."""
    port = {"ddp": "29533", "shard": "29534"}[parallel]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                "-m", "edit_mobile"]
    sharding = ["--shard", "--checkpoint-every", "2"] if parallel == "shard" else []  # gathers at a checkpoint too
    two = _cli(teacher, "-o", tmp_path / "two", "--schedule", "64:4", *TINY_RUN, *sharding, launcher=launcher,
               env={"OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-2000:]
    one = _cli(teacher, "-o", tmp_path / "one", "--schedule", "64:4", *TINY_RUN, env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-2000:]
    start = _weights_of_conversion(teacher, tmp_path)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    moved = torch.cat([(a[n] - start[n]).flatten() for n in a]).norm()
    apart = torch.cat([(a[n] - b[n]).flatten() for n in a]).norm()
    assert moved > 0
    assert apart / moved < 0.1, (apart / moved).item()


def _weights_of_conversion(teacher: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    run = subprocess.run([sys.executable, "-m", "edit_mobile", "convert", str(teacher), "-o", str(tmp_path / "converted")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return _weights(tmp_path / "converted")


def _distiller(teacher: Path, work: Path, train: str = "attention", steps: int = 4, checkpoint_every: int = 2,
               shard: bool = False):
    from edit_mobile.distill.data import DataBuilder
    from edit_mobile.distill.engine import Distiller, DistillOptions, Distributed
    from edit_mobile.distill.objective import objective_for
    from edit_mobile.models import convert, load_transformer
    from edit_mobile.models.families import get_family

    model = load_transformer(teacher)
    options = DistillOptions(schedule=[(64, steps)], batch=4, lr=1e-3, train=train, checkpoint_every=checkpoint_every,
                             shard=shard)
    builder = DataBuilder(model, teacher, work / "cache", None, 2, None, 0)
    data = builder.build((64, 64), ["a small red circle in the top left on a white background",
                                    "a large blue square in the center on a black background"], [])
    objective = objective_for(get_family("pixart").scheduler(teacher))
    return Distiller(model, convert(model), [data], objective, options, work, Distributed(shard=shard))


class _Killed(Exception):
    pass


@pytest.mark.parametrize("shard", [False, True], ids=["replicated", "fsdp2"])
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(teacher, tmp_path, shard):
    """fsdp2: one process with an in-memory process group, so the checkpoint goes through
    FSDP2's full state dicts (gathered DTensors) and back into the shards."""
    import torch.distributed as dist

    from edit_mobile.training.loop import TrainingLog

    try:
        whole = _distiller(teacher, tmp_path / "whole", shard=shard)
        whole.run(TrainingLog(tmp_path / "whole", 4, "whole"))

        killed = _distiller(teacher, tmp_path / "killed", shard=shard)

        def kill(step):
            if step == 3:  # after the checkpoint at step 2: step 3's update is lost
                raise _Killed

        with pytest.raises(_Killed):
            killed.run(TrainingLog(tmp_path / "killed", 4, "killed"), on_step=kill)
        resumed = _distiller(teacher, tmp_path / "killed", shard=shard)
        resumed.load_checkpoint()
        assert resumed.step == 2
        sharded = {type(p).__name__ for p in resumed.student_model.parameters()}
        assert sharded == ({"DTensor"} if shard else {"Parameter"}), sharded
        resumed.run(TrainingLog(tmp_path / "killed", 4, "resumed", resume_at=resumed.step))
        a, b = whole.trained_student().state_dict(), resumed.trained_student().state_dict()
        assert list(a) == list(b)
        for name in a:
            assert torch.equal(a[name], b[name]), name
        untrained = killed.trained_student().state_dict()
        assert any(not torch.equal(a[name], untrained[name]) for name in a)  # the lost step 3 shows
    finally:
        if shard and dist.is_initialized():
            dist.destroy_process_group()
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_the_distillation_losses_fall_and_the_task_loss_holds(teacher, tmp_path):
    """A 1-step teacher's attention is near uniform, where ReLU linear attention already matches
    softmax; the student's value projections are perturbed so it starts away from the teacher.
    Its output projection is still ~0 (zero-initialised), so the output the attention-only student
    can reach is ~0 too: the task loss (flow target noise - x0) cannot fall, and must not rise."""
    distiller = _distiller(teacher, tmp_path, steps=40, checkpoint_every=100)
    with torch.no_grad():
        for name in distiller.trained_names:
            if name.endswith("attn1.to_v.weight"):
                parameter = distiller.student_model.get_parameter(name)
                parameter.add_(0.5 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    # The task loss on the first three steps' batches, before and after (fresh batches vary more).
    probe = [distiller._batch(distiller.data_by_stage[0], step) for step in range(3)]

    def task_loss() -> float:
        with torch.no_grad():
            return sum(torch.nn.functional.mse_loss(distiller._forward(distiller.student, inputs, noised),
                                                    noised.target).item() for inputs, noised in probe) / len(probe)

    task_before = task_loss()
    history = [distiller.train_step() for _ in range(40)]
    first = {k: sum(h[k] for h in history[:3]) / 3 for k in history[0]}
    last = {k: sum(h[k] for h in history[-5:]) / 5 for k in history[0]}
    for key in ("output", "feature"):
        assert last[key] < 0.7 * first[key], (key, first, last)
    task_after = task_loss()
    assert abs(task_after - task_before) < 0.01 * task_before, (task_before, task_after)


@pytest.mark.parametrize("train", ["new", "attention"])
def test_only_the_parameters_train_names_change(teacher, tmp_path, train):
    from edit_mobile.distill.losses import parameters_to_train

    distiller = _distiller(teacher, tmp_path, train=train, steps=3, checkpoint_every=100)
    before = {n: p.detach().clone() for n, p in distiller.student_model.named_parameters()}
    for _ in range(3):
        distiller.train_step()
    named = set(parameters_to_train(distiller.student_model, train))
    changed = {n for n, p in distiller.student_model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= named, sorted(changed - named)[:5]
    if train == "new":
        assert all(".processor." in name for name in named)
    else:
        assert any(name.endswith("attn1.to_q.weight") for name in changed)


@pytest.mark.parametrize("preset", ["tiny-sd3-edit", "tiny-pixart-edit"])
@pytest.mark.parametrize("train", ["new", "attention", "all"])
def test_every_trained_parameter_gets_a_gradient(preset, train):
    """DDP stops a run when a trained parameter gets no gradient (found distilling SD3.5-Medium
    width under torchrun: its last block's prompt queries feed no output). One backward through
    the student must reach every parameter `--train` names."""
    from edit_mobile.distill.losses import parameters_to_train, unused_parameters
    from edit_mobile.models import build_preset
    from edit_mobile.models.signature import DenoiserWrapper, TransformerSignature

    student = build_preset(preset)
    named = set(parameters_to_train(student, train))
    for name, parameter in student.named_parameters():
        parameter.requires_grad_(name in named)
    inputs = TransformerSignature.of(student, 64, 64, batch=1).example_inputs(seed=0)
    DenoiserWrapper(student)(*inputs).pow(2).mean().backward()
    assert not [n for n, p in student.named_parameters() if p.requires_grad and p.grad is None]
    assert bool(unused_parameters(student)) == preset.startswith("tiny-sd3")  # what is left out, only where dead


def test_bad_inputs_are_one_line_and_write_nothing(teacher, tmp_path):
    no_captions = tmp_path / "images"
    no_captions.mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64)).save(no_captions / "a.png")
    (tmp_path / "cats.txt").write_text("a photo of a cat\n")
    cases = [
        (["--student", "tiny-sd3-edit"], "sd3"),
        (["--images", no_captions], "no captions"),
        (["--schedule", "256-2000"], "PIXELS:STEPS"),
        (["--tune-guidance", "2,2"], "distinct"),
        (["--tune-guidance", "2", "--prompts", tmp_path / "cats.txt"], "shapes"),
    ]
    for extra, expected in cases:
        run = _cli(teacher, "-o", tmp_path / "out", *TINY_RUN, *extra)
        assert run.returncode == 2 and expected in run.stderr, run.stderr[-1500:]
        assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.distill-work").exists()
    before = sorted(p.name for p in teacher.iterdir())
    run = _cli(teacher, "-o", teacher, *TINY_RUN)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert sorted(p.name for p in teacher.iterdir()) == before


def test_the_tuned_guidance_is_recorded_for_the_student(teacher, tmp_path):
    """--tune-guidance scores the student at each scale on seen captions and writes the chosen
    one into its sampling file, which every later command then samples with."""
    from edit_mobile.shapes import sample_training_captions

    prompts = tmp_path / "captions.txt"
    prompts.write_text("".join(c.caption + "\n" for c in sample_training_captions(4, seed=0)))
    run = _cli(teacher, "-o", tmp_path / "student", "--schedule", "64:1", *TINY_RUN, "--prompts", prompts,
               "--tune-guidance", "1,2.5", "--tune-samples", "2")
    assert run.returncode == 0, run.stderr[-2000:]
    tuning = json.loads((tmp_path / "student" / "distill.json").read_text())["guidance_tuning"]
    assert [row["guidance"] for row in tuning["sweep"]] == [1.0, 2.5] and tuning["n"] == 2
    assert all(0.0 <= row["prompt_accuracy"] <= 1.0 for row in tuning["sweep"])
    sampling = json.loads((tmp_path / "student" / "edit_mobile_sampling.json").read_text())
    assert sampling["guidance"] == tuning["guidance"] in (1.0, 2.5)
    assert sampling["steps"] == json.loads((teacher / "edit_mobile_sampling.json").read_text())["steps"]


def test_the_tuning_prefers_accuracy_then_the_teachers_scale():
    from edit_mobile.distill.guidance import parse_scales, pick

    rows = [{"guidance": g, "prompt_accuracy": p, "attribute_accuracy": a}
            for g, p, a in [(1.0, 0.5, 0.80), (1.5, 0.6, 0.80), (2.0, 0.6, 0.85), (3.0, 0.6, 0.85)]]
    assert pick(rows, reference_guidance=3.0)["guidance"] == 3.0  # tie on both scores: the teacher's
    assert pick(rows, reference_guidance=1.0)["guidance"] == 2.0  # nearest of the tied pair
    assert pick(rows[:2], reference_guidance=3.0)["guidance"] == 1.5  # accuracy first
    assert parse_scales("1.5, 2") == [1.5, 2.0]
    for bad in ("", "a", "1,1", "-1"):
        with pytest.raises(ValueError):
            parse_scales(bad)


def test_training_data_takes_the_pipelines_prompt_length(tmp_path):
    """The shipped SD3 teacher reads 32 CLIP + 32 T5 tokens; distilling on the family's 333 left
    MM-EDiT students (whose attention mixes by the prompt's token count) unable to match it."""
    from edit_mobile.distill.data import DataBuilder
    from edit_mobile.models import load_transformer, pipeline_folder_of, prompt_tokens_of

    teacher = load_transformer("shapes-sd3")
    builder = DataBuilder(teacher, pipeline_folder_of("shapes-sd3"), tmp_path, None, 2, None, 0)
    assert builder.tokens == prompt_tokens_of("shapes-sd3", teacher) == 64


@pytest.mark.parametrize("name", ["flow-match-euler", "dpm-solver-flow-sigmas", "dpm-solver-v"])
def test_the_objective_follows_the_teachers_scheduler(name):
    """SD3's Euler and SANA's DPM-Solver on flow sigmas both noise along the flow, shifted by
    their own option; DPM-Solver on betas keeps the DDPM process."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    from edit_mobile.distill.objective import (
        DiffusionObjective,
        FlowObjective,
        objective_for,
        sample_generator,
    )

    scheduler = {
        "flow-match-euler": lambda: FlowMatchEulerDiscreteScheduler(shift=3.0),
        "dpm-solver-flow-sigmas": lambda: DPMSolverMultistepScheduler(
            use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction"),
        "dpm-solver-v": lambda: DPMSolverMultistepScheduler(prediction_type="v_prediction"),
    }[name]()
    objective = objective_for(scheduler)
    x0 = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noised = objective.noised(x0, [sample_generator(0, 0, i) for i in range(3)])
    if name == "dpm-solver-v":
        assert isinstance(objective, DiffusionObjective)
        return
    assert isinstance(objective, FlowObjective) and objective.shift == 3.0
    sigma = (noised.timestep / 1000).view(-1, 1, 1, 1)
    noise = noised.target + x0  # the target is noise - x0
    torch.testing.assert_close(noised.latents, (1 - sigma) * x0 + sigma * noise)
