"""Calibration sets on the tiny presets: shapes, schedule coverage, determinism, splits."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from edit_mobile.calibration import CalibrationOptions, capture_calibration, load_calibration
from edit_mobile.errors import UserError

SMALL = dict(steps=4, samples=3, records=6, heldout_records=4)


@pytest.fixture(scope="module")
def pixart_set(tmp_path_factory):
    directory = tmp_path_factory.mktemp("calib") / "pixart"
    capture_calibration("tiny-pixart-edit", directory, options=CalibrationOptions(**SMALL), progress=False)
    return directory


def signature_of(name: str, prompt_tokens=None):
    from edit_mobile.models import TransformerSignature, load_transformer

    return TransformerSignature.of(load_transformer(name), batch=1, prompt_tokens=prompt_tokens)


def test_records_match_the_denoiser_signature(pixart_set):
    calibration = load_calibration(pixart_set)
    signature = signature_of("tiny-pixart-edit")
    assert calibration.input_names == tuple(signature.input_names)
    assert len(calibration.calibration_inputs) == SMALL["records"]
    assert len(calibration.heldout_inputs) == SMALL["heldout_records"]
    for record in calibration.calibration_inputs + calibration.heldout_inputs:
        assert [tuple(t.shape) for t in record] == [tuple(s.shape) for s in signature.inputs]
        assert all(t.dtype == torch.float32 for t in record)
    calibration.check_matches(signature.inputs)
    # The records run through the real model (a denoiser call, not just shapes).
    from edit_mobile.models import DenoiserWrapper, load_transformer

    output = DenoiserWrapper(load_transformer("tiny-pixart-edit"))(*calibration.calibration_inputs[0])
    assert tuple(output.shape) == tuple(signature.outputs[0].shape)


def test_timesteps_cover_the_schedule_and_prompts_are_held_out(pixart_set):
    calibration = load_calibration(pixart_set)
    manifest = calibration.manifest
    schedule = manifest["sampler"]["schedule"]
    assert manifest["sampler"]["scheduler"] == "DPMSolverMultistepScheduler"
    assert len(schedule) == SMALL["steps"] and schedule[0] > 900 and schedule[-1] < 300
    steps = set(calibration.calibration.steps.tolist())
    assert steps == set(range(SMALL["steps"]))  # 6 records over 4 steps: every step present
    assert set(calibration.heldout.steps.tolist()) >= {0, SMALL["steps"] - 1}
    for split in (calibration.calibration, calibration.heldout):
        for step, timestep in zip(split.steps.tolist(), split.timesteps.tolist(), strict=True):
            assert timestep == pytest.approx(schedule[step])
    calibration_prompts = set(manifest["split"]["calibration"]["samples"])
    heldout_prompts = set(manifest["split"]["heldout"]["samples"])
    assert heldout_prompts and not calibration_prompts & heldout_prompts
    # Both guidance branches are recorded: the "" prompt's mask keeps a single token.
    masks = calibration.calibration.tensors["prompt_inputs.encoder_attention_mask"]
    assert masks.sum(dim=1).min() == 1 and masks.sum(dim=1).max() > 1
    assert len(manifest["model"]["sha256"]) == 64 and len(manifest["prompts"]["sha256"]) == 64


def test_held_out_prompts_replay_to_their_recorded_latents(pixart_set):
    """heldout_trajectories (the quantized pipeline's whole-sampler check) start each held-out
    prompt where calibrate started it: the float denoiser through the family's scheduler passes
    through every recorded held-out latent."""
    from edit_mobile.calibration.sampler import denoise
    from edit_mobile.models import DenoiserWrapper, load_transformer
    from edit_mobile.models.families import get_family

    calibration = load_calibration(pixart_set)
    trajectories = calibration.heldout_trajectories()
    split, manifest = calibration.heldout, calibration.manifest
    assert [t.sample for t in trajectories] == manifest["split"]["heldout"]["samples"]
    wrapper = DenoiserWrapper(load_transformer("tiny-pixart-edit")).eval()
    for trajectory in trajectories:
        records, _ = denoise(wrapper, calibration.input_names, get_family("pixart").scheduler("tiny-pixart-edit"),
                             trajectory.noise, trajectory.positive, trajectory.negative, manifest["steps"],
                             manifest["guidance"], keep=lambda step, branch: True)
        replayed = {(r.step, r.branch): r.latents for r in records}
        mine = (split.tensors["record.sample"] == trajectory.sample).nonzero().flatten().tolist()
        assert mine
        for index in mine:
            key = (int(split.steps[index]), int(split.tensors["record.branch"][index]))
            torch.testing.assert_close(replayed[key], split.record(index)[0], rtol=0, atol=0)


def test_same_seed_gives_identical_files(pixart_set, tmp_path):
    capture_calibration("tiny-pixart-edit", tmp_path / "again", options=CalibrationOptions(**SMALL), progress=False)
    for name in ("calibration.json", "calibration.safetensors", "heldout.safetensors"):
        assert (tmp_path / "again" / name).read_bytes() == (pixart_set / name).read_bytes(), name
    capture_calibration("tiny-pixart-edit", tmp_path / "other", progress=False,
                        options=CalibrationOptions(**SMALL, seed=1))
    assert (tmp_path / "other" / "heldout.safetensors").read_bytes() != (pixart_set / "heldout.safetensors").read_bytes()


def test_sd3_records_hold_pooled_embeddings_and_333_tokens(tmp_path):
    capture_calibration("tiny-sd3-edit", tmp_path / "sd3", progress=False,
                        options=CalibrationOptions(steps=2, samples=2, records=2, heldout_records=2))
    calibration = load_calibration(tmp_path / "sd3")
    signature = signature_of("tiny-sd3-edit")
    assert calibration.input_names == ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep")
    record = calibration.calibration_inputs[0]
    assert [tuple(t.shape) for t in record] == [tuple(s.shape) for s in signature.inputs]
    assert tuple(record[1].shape) == (1, 333, 32) and tuple(record[2].shape) == (1, 32)
    assert calibration.manifest["sampler"]["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    assert calibration.manifest["sampler"]["config"]["shift"] == 3.0


def test_precomputed_embeddings_are_used_as_given(tmp_path):
    from edit_mobile.models.families import get_family

    tokens = get_family("pixart").default_prompt_tokens  # 300, PixArtSigmaPipeline's
    generator = torch.Generator().manual_seed(3)
    embeddings = {
        "prompt_embeds": torch.randn(2, tokens, 32, generator=generator),
        "negative_prompt_embeds": torch.zeros(1, tokens, 32),
        "prompt_attention_mask": torch.ones(2, tokens),
        "negative_prompt_attention_mask": torch.ones(1, tokens),
    }
    save_file(embeddings, tmp_path / "embeds.safetensors")
    capture_calibration("tiny-pixart", tmp_path / "set", embeddings_path=tmp_path / "embeds.safetensors",
                        progress=False, options=CalibrationOptions(steps=2, samples=2, records=4, heldout_records=4))
    calibration = load_calibration(tmp_path / "set")
    assert calibration.manifest["prompts"]["source"] == "embeddings"
    rows = torch.cat([calibration.calibration.tensors["prompt_inputs.encoder_hidden_states"],
                      calibration.heldout.tensors["prompt_inputs.encoder_hidden_states"]])
    for row in rows:
        assert any(torch.equal(row, given) for given in [*embeddings["prompt_embeds"], embeddings["negative_prompt_embeds"][0]])

    del embeddings["negative_prompt_embeds"]
    save_file(embeddings, tmp_path / "no_negative.safetensors")
    with pytest.raises(UserError, match="negative_prompt_embeds"):
        capture_calibration("tiny-pixart", tmp_path / "bad", embeddings_path=tmp_path / "no_negative.safetensors",
                            progress=False, options=CalibrationOptions(steps=2, samples=2))
    assert not (tmp_path / "bad").exists()


def test_text_encoder_loads_from_a_local_folder(tmp_path):
    from edit_mobile.calibration.text_encoders import folder_text_encoder, random_text_encoder

    random_encoder = random_text_encoder("pixart", tokens=120, width=32)
    random_encoder.text_encoder.save_pretrained(tmp_path / "text_encoder")
    random_encoder.tokenizer.save_pretrained(tmp_path / "tokenizer")
    loaded = folder_text_encoder("pixart", tmp_path, tokens=120, width=32)
    prompts = ["a red apple", "Sunset over the sea"]
    expected = random_encoder.encode(prompts, guidance=True)
    got = loaded.encode(prompts, guidance=True)
    assert torch.equal(expected.positive.prompt_embeds, got.positive.prompt_embeds)
    assert torch.equal(expected.negative.mask, got.negative.mask)
    with pytest.raises(UserError, match="not a T5 encoder folder"):
        folder_text_encoder("pixart", tmp_path / "tokenizer", tokens=120, width=32)


def test_models_without_weights_need_an_encoder(tmp_path):
    with pytest.raises(UserError, match="--text-encoder"):
        capture_calibration("pixart-sigma-xl-512", tmp_path / "x", progress=False,
                            options=CalibrationOptions(steps=1, samples=2))


def test_forward_trajectory_keeps_latents_at_unit_scale(tmp_path):
    capture_calibration("tiny-pixart-edit", tmp_path / "fwd", progress=False,
                        options=CalibrationOptions(**SMALL, trajectory="forward"))
    calibration = load_calibration(tmp_path / "fwd")
    assert calibration.manifest["trajectory"] == "forward"
    stds = [record[0].std().item() for record in calibration.calibration_inputs]
    assert all(0.8 < std < 1.25 for std in stds)  # alpha_t x0 + sigma_t noise, both N(0, I)
    assert set(calibration.calibration.steps.tolist()) == set(range(SMALL["steps"]))
