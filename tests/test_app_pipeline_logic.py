"""The Android app's prompt-to-pixels logic (plain Java in android_demo/app/src/main/java/
org/editmobile/demo/) against transformers and diffusers, run on the JVM.

No Android SDK here: the Java is compiled with `javac --release 8` and driven by
android_demo/jvm_check/PipelineCheck.java, one JSON answer per run. Checked:
- tokenizers (TextTokenizer: UnigramTokenizer for T5, BpeTokenizer for CLIP): ids and attention
  masks identical to AutoTokenizer(padding="max_length", max_length, truncation=True) on the shapes
  world's T5 and CLIP tokenizers (built by training/shapes_text.py; the shipped teachers' own
  tokenizer folders among them) and on a T5 tokenizer with SentencePiece's NFKC charsmap trained here: calibration
  prompts, shapes captions, case, punctuation, unknown words, Unicode, empty and over-long prompts;
- schedulers (DpmSolverMultistep, FlowMatchEuler): timesteps and sigmas as diffusers' set_timesteps
  makes them, and every sample of 20- and 7-step sampling loops;
- classifier-free guidance, both layouts; the seeded latent noise against its numpy twin; VAE output
  to pixels, byte-identical to VaeImageProcessor.postprocess(output_type="pil");
- refusals: unimplemented options and damaged files end in one DemoException line (exit 3).
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from edit_mobile.runtime.portable_noise import portable_gaussians

REPO = Path(__file__).resolve().parents[1]
JAVA_SOURCES = REPO / "android_demo" / "app" / "src" / "main" / "java" / "org" / "editmobile" / "demo"
SHIPPED = REPO / "pretrained"  # the shipped shapes pipeline folders



def run_java(classes: Path, *args) -> tuple[int, dict]:
    completed = subprocess.run(["java", "-cp", str(classes), "PipelineCheck", *map(str, args)],
                               capture_output=True, text=True, timeout=60)
    lines = completed.stdout.splitlines()
    if len(lines) != 1:  # a crash: a stack trace instead of one JSON line
        pytest.fail(f"not one JSON line (exit {completed.returncode}):\n{completed.stdout}{completed.stderr}")
    return completed.returncode, json.loads(lines[0])


def java_ok(classes: Path, *args) -> dict:
    code, answer = run_java(classes, *args)
    assert code == 0, answer
    return answer


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


# ---------------------------------------------------------------- tokenizers

def shapes_captions() -> list[str]:
    from edit_mobile.shapes import all_captions, sample_heldout_captions, sample_training_captions

    captions = [c.caption for c in sample_training_captions(260, seed=5)]
    captions += [c.caption for c in sample_heldout_captions(40, seed=5)]
    two_objects = next(c.scene for c in sample_training_captions(40, seed=6) if len(c.scene.objects) == 2)
    return captions + all_captions(two_objects)


EDGE_TEXTS = [
    "",
    " ",
    "A SMALL Red CIRCLE in the Top-Left, on a WHITE background.",
    "a red circle!!! (big) -- top; left? [yes] {no} <maybe> @#$%^&*_+=|~`",
    "zebra quokka xylophone floccinaucinihilipilification",  # out of the shapes vocabulary
    "a small red circle in the top left on a white background " * 12,  # over-long: truncated
    "  leading and   inner\twhite\nspace  and trailing  ",
    "it's the circle's edge, they'll see, we'd go, I'm here, you're there, we've done, don't",
    "IT'S LOUD'S 'quoted' ''",
    "ÀÉÎõü café naïve résumé",
    "ＦＵＬＬ　ｗｉｄｔｈ ＡＢＣ １２３",
    "ﬁne ﬂow ㍿ ① Ⅻ ½ ² ｶﾀｶﾅ",
    "e\u0301cole, cafe\u0301",  # combining accents
    "日本語のテキスト 한국어 中文",
    "emoji 🙂 and 👍🏽 and 🇫🇷",
    "non\u00a0breaking\u2003em\u3000ideographic\u0085next\u2028line spaces",
    "numbers 1234567890 and 3.14 and -7",
    "<|startoftext|>a red circle<|endoftext|> and <|ENDOFTEXT|>",
    "</s> <pad> <unk> x</s>y",
    "ΣΑΣ σας İstanbul ǅ",
    "▁already▁marked ▁ ▁▁",
]


def all_texts() -> list[str]:
    from edit_mobile.calibration.prompts import read_prompts

    return read_prompts() + shapes_captions() + EDGE_TEXTS


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return all_texts()


@pytest.fixture(scope="module")
def tokenizer_folders(tmp_path_factory) -> dict[str, Path]:
    """Tokenizer folders as pipelines hold them (save_pretrained of transformers' classes)."""
    from edit_mobile.training.shapes_text import clip_tokenizer, t5_tokenizer

    root = tmp_path_factory.mktemp("tokenizers")
    folders = {"shapes-t5": root / "t5", "shapes-clip": root / "clip"}
    t5_tokenizer().save_pretrained(folders["shapes-t5"])
    clip_tokenizer().save_pretrained(folders["shapes-clip"])
    # SD3's CLIP-G pads with a token of its own ("!" there): the config's pad token wins.
    folders["clip-own-pad"] = root / "clip-own-pad"
    shutil.copytree(folders["shapes-clip"], folders["clip-own-pad"])
    config = json.loads((folders["clip-own-pad"] / "tokenizer_config.json").read_text())
    (folders["clip-own-pad"] / "tokenizer_config.json").write_text(json.dumps(config | {"pad_token": ","}))
    # A token declared in tokenizer_config.json only (transformers 4 configs list them there).
    folders["clip-declared-token"] = root / "clip-declared-token"
    shutil.copytree(folders["shapes-clip"], folders["clip-declared-token"])
    declared = {"5": {"content": ",", "lstrip": False, "rstrip": False, "normalized": False,
                      "single_word": False, "special": False}}
    (folders["clip-declared-token"] / "tokenizer_config.json").write_text(
        json.dumps(config | {"pad_token": "<|endoftext|>", "added_tokens_decoder": declared}))
    if importlib.util.find_spec("sentencepiece") is not None:  # installed with executorch
        folders["spm-t5"] = spm_t5_folder(root)
    for name, sub in [("shipped-pixart", "shapes-pixart/tokenizer"),
                      ("shipped-sd3-clip-g", "shapes-sd3/tokenizer_2"),
                      ("shipped-sd3-t5", "shapes-sd3/tokenizer_3")]:
        folders[name] = SHIPPED / sub
    return folders


def spm_t5_folder(root: Path) -> Path:
    """A T5 tokenizer as transformers converts a SentencePiece model: Unigram pieces of all
    lengths, and the Precompiled normalizer holding SentencePiece's NFKC charsmap, as real T5
    tokenizers have (the shapes one has whole words and no normalizer)."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    corpus = all_texts()[:200] + ["Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ café naïve ﬁne e\u0301cole"] * 3
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, vocab_size=400,
                                   model_type="unigram", character_coverage=1.0, num_threads=1,
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    source = root / "spm-source"
    source.mkdir()
    (source / "spiece.model").write_bytes(model.getvalue())
    (source / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "model_max_length": 48, "extra_ids": 0}))
    AutoTokenizer.from_pretrained(source).save_pretrained(root / "spm-t5")
    normalizer = json.loads((root / "spm-t5" / "tokenizer.json").read_text())["normalizer"]
    assert normalizer["type"] == "Precompiled"
    return root / "spm-t5"


def folder_or_skip(folders: dict[str, Path], name: str) -> Path:
    if name not in folders:
        pytest.skip(f"{name}: no sentencepiece to build it with")
    return folders[name]


TOKENIZER_CASES = ["shapes-t5", "shapes-clip", "clip-own-pad", "clip-declared-token", "spm-t5", "shipped-pixart",
                   "shipped-sd3-clip-g", "shipped-sd3-t5"]


@pytest.mark.parametrize("name", TOKENIZER_CASES)
def test_tokenizer_ids_and_masks_are_transformers(name, tokenizer_folders, texts, java_classes, tmp_path):
    from transformers import AutoTokenizer

    folder = folder_or_skip(tokenizer_folders, name)
    reference = AutoTokenizer.from_pretrained(folder)
    request = write_json(tmp_path / "texts.json", texts)
    for max_length in (reference.model_max_length, 9):  # 9: most prompts truncated
        expected = reference(texts, padding="max_length", max_length=max_length, truncation=True)
        java = java_ok(java_classes, "tokenize", folder, request, max_length)
        mismatched = [t for t, ids, ref in zip(texts, java["ids"], expected["input_ids"], strict=True) if ids != ref]
        assert mismatched == [], f"{len(mismatched)} of {len(texts)} prompts differ, e.g. {mismatched[:3]}"
        assert java["mask"] == expected["attention_mask"]
    # Real work, not all-unknown: the shapes captions' words are in every vocabulary here.
    ids = reference(shapes_captions()[:50], add_special_tokens=False)["input_ids"]
    assert sum(i != reference.unk_token_id for row in ids for i in row) > 0.95 * sum(map(len, ids))


def spm_normalizers(spec: dict) -> None:
    """transformers' SentencePiece converter's normalizers, NFKC in place of a charsmap."""
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "NFKC"}, {"type": "Strip", "strip_left": False, "strip_right": True},
        {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": "\u2581"}]}


def legacy_metaspace(spec: dict) -> None:
    """Older T5 tokenizer.json files: Metaspace alone, add_prefix_space instead of a scheme."""
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}


def clip_variant(spec: dict) -> None:
    """A literal Replace, ByteLevel without its regex, post-processing as a Sequence, merges
    skipped for whole-word tokens, unknown characters fused, an added token matched after
    normalization ("<|ENDOFTEXT|>" lowercased)."""
    spec["model"].update(ignore_merges=True, fuse_unk=True)
    spec["added_tokens"][1]["normalized"] = True
    spec["normalizer"]["normalizers"].append({"type": "Replace", "pattern": {"String": "colour"}, "content": "color"})
    spec["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = False
    spec["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        {"type": "BertProcessing", "sep": ["<|endoftext|>", 1], "cls": ["<|startoftext|>", 0]}]}


# tokenizer.json features the shapes and T5 files above do not use, each against the tokenizers
# library itself (transformers 5 rebuilds T5 / CLIP pipelines from its classes, whatever the file).
TOKENIZER_JSON_VARIANTS = {
    "t5-spm-normalizers": ("shapes-t5", spm_normalizers),
    "t5-legacy-metaspace": ("shapes-t5", legacy_metaspace),
    "clip-variant": ("shapes-clip", clip_variant),
}


@pytest.mark.parametrize("case", TOKENIZER_JSON_VARIANTS)
def test_tokenizer_json_variants_are_the_tokenizers_librarys(case, tokenizer_folders, texts, java_classes, tmp_path):
    from tokenizers import Tokenizer

    base, change = TOKENIZER_JSON_VARIANTS[case]
    folder = damaged_tokenizer(tokenizer_folders[base], tmp_path / "tok", change)
    reference = Tokenizer.from_file(str(folder / "tokenizer.json"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    reference.enable_truncation(20)
    reference.enable_padding(length=20, pad_id=reference.token_to_id(config["pad_token"]))
    expected = reference.encode_batch(texts)
    java = java_ok(java_classes, "tokenize", folder, write_json(tmp_path / "texts.json", texts), 20)
    mismatched = [t for t, ids, ref in zip(texts, java["ids"], expected, strict=True) if ids != ref.ids]
    assert mismatched == [], f"{len(mismatched)} of {len(texts)} prompts differ, e.g. {mismatched[:3]}"
    assert java["mask"] == [e.attention_mask for e in expected]


def test_tokenizer_default_length_is_the_configs(tokenizer_folders, java_classes, tmp_path):
    request = write_json(tmp_path / "texts.json", ["a red circle"])
    answer = java_ok(java_classes, "tokenize", tokenizer_folders["shapes-clip"], request)
    assert answer["max_length"] == 32 and len(answer["ids"][0]) == 32
    assert answer["ids"][0][0] == 0 and answer["mask"][0][:3] == [1, 1, 1] and answer["mask"][0][-1] == 0


def test_t5_charsmap_normalizes_like_nfkc(tokenizer_folders, java_classes, tmp_path):
    """The Precompiled normalizer is really applied: full-width letters, ligatures and combining
    accents give the ids of their NFKC forms (a Java ignoring the charsmap would give unknowns)."""
    pairs = [("ＦＵＬＬ　ｗｉｄｔｈ ＡＢＣ １２３", "FULL width ABC 123"), ("ﬁne ﬂow", "fine flow"),
             ("e\u0301cole cafe\u0301", "\u00e9cole caf\u00e9")]
    request = write_json(tmp_path / "texts.json", [text for pair in pairs for text in pair])
    ids = java_ok(java_classes, "tokenize", folder_or_skip(tokenizer_folders, "spm-t5"), request)["ids"]
    for i, (odd, plain) in enumerate(pairs):
        assert ids[2 * i] == ids[2 * i + 1], (odd, plain)


# ---------------------------------------------------------------- tokenizer refusals

def damaged_tokenizer(base: Path, folder: Path, change) -> Path:
    shutil.copytree(base, folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    change(spec)
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    return folder


def truncated_file(folder: Path) -> None:
    text = (folder / "tokenizer.json").read_text()
    (folder / "tokenizer.json").write_text(text[: len(text) // 2])


TOKENIZER_REFUSALS = {
    "truncated-json": ("shapes-t5", None, "tokenizer.json is not valid JSON: bad JSON at character"),
    "bert-normalizer": ("shapes-t5", lambda s: s.update(normalizer={"type": "BertNormalizer"}),
                        "normalizer type BertNormalizer is not implemented by this app"),
    "other-split-regex": ("shapes-clip", lambda s: s["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(
        Regex=r"\w+"), r"pattern \w+ is not implemented by this app"),
    "wordpiece-model": ("shapes-t5", lambda s: s["model"].update(type="WordPiece"),
                        "model type 'WordPiece' is not implemented by this app"),
    "byte-fallback": ("shapes-t5", lambda s: s["model"].update(byte_fallback=True),
                      "byte_fallback = true, which this app does not implement"),
    "vocab-not-pairs": ("shapes-t5", lambda s: s["model"]["vocab"].__setitem__(5, "oops"),
                        "vocab[5] must be [piece, score], got oops"),
    "merge-unknown-token": ("shapes-clip", lambda s: s["model"]["merges"].append(["zz", "qq"]),
                            "names a token not in the vocabulary"),
    "lstrip-added-token": ("shapes-t5", lambda s: s["added_tokens"][1].update(lstrip=True),
                           "lstrip = true, which this app does not implement"),
    "damaged-charsmap": ("spm-t5", lambda s: s["normalizer"].update(precompiled_charsmap="AAAA"),
                         "precompiled_charsmap is damaged"),
}


@pytest.mark.parametrize("case", TOKENIZER_REFUSALS)
def test_tokenizer_refuses_what_it_does_not_implement(case, tokenizer_folders, java_classes, tmp_path):
    base, change, words = TOKENIZER_REFUSALS[case]
    base = folder_or_skip(tokenizer_folders, base)
    if change is None:
        shutil.copytree(base, tmp_path / "tok")
        truncated_file(tmp_path / "tok")
        folder = tmp_path / "tok"
    else:
        folder = damaged_tokenizer(base, tmp_path / "tok", change)
    code, answer = run_java(java_classes, "tokenize", folder, write_json(tmp_path / "t.json", ["a b"]), 8)
    assert code == 3, answer  # a DemoException, the app's one-line refusal
    assert words in answer["error"] and "\n" not in answer["error"], answer["error"]


# ---------------------------------------------------------------- schedulers

def dpm(**options):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(**options)


def flow(**options):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**options)


SCHEDULERS = {
    # training/train_teacher.py's PixArt recipe, the shapes pipeline's scheduler
    "shapes-pixart": lambda: dpm(use_flow_sigmas=True, flow_shift=6.0, prediction_type="flow_prediction"),
    # the earlier shapes PixArt teachers': v prediction on betas rescaled to zero terminal SNR
    "zero-snr-v": lambda: dpm(prediction_type="v_prediction", rescale_betas_zero_snr=True,
                              timestep_spacing="trailing"),
    # PixArt-Sigma's own: diffusers' defaults (linear 1e-4..0.02, epsilon, linspace, offset 0)
    "pixart-sigma": lambda: dpm(),
    # Stable Diffusion's: scaled_linear betas, leading spacing with steps_offset 1
    "sd-leading": lambda: dpm(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              timestep_spacing="leading", steps_offset=1),
    # SANA's: DPM-Solver++ on flow sigmas, flow prediction, shift 3
    "sana-flow-sigmas": lambda: dpm(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction"),
    "flow-shift-3": lambda: flow(shift=3.0),  # SD3's
    "flow-shift-6": lambda: flow(shift=6.0),  # the shapes SD3 pipeline's
}


@pytest.mark.parametrize("name,folder", [("shapes-pixart", "shapes-pixart"), ("flow-shift-6", "shapes-sd3")])
def test_the_shipped_pipelines_schedulers_are_among_those_checked(name, folder):
    shipped = json.loads((SHIPPED / folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler = SCHEDULERS[name]()
    checked = dict(scheduler.config)
    assert shipped["_class_name"] == type(scheduler).__name__
    assert {key: shipped[key] for key in checked if key in shipped} == {
        key: value for key, value in checked.items() if key in shipped}


def scheduler_config(name: str, folder: Path) -> Path:
    SCHEDULERS[name]().save_config(folder)  # scheduler_config.json, as in a pipeline folder
    return folder / "scheduler_config.json"


@pytest.mark.parametrize("name", SCHEDULERS)
def test_scheduler_timesteps_and_sigmas_are_diffusers(name, java_classes, tmp_path):
    counts = [1, 2, 7, 13, 20, 50, 999]
    java = java_ok(java_classes, "schedule", scheduler_config(name, tmp_path), ",".join(map(str, counts)))
    for steps, run in zip(counts, java["runs"], strict=True):
        reference = SCHEDULERS[name]()
        reference.set_timesteps(steps)
        if name.startswith("flow"):
            assert run["timesteps"] == pytest.approx(reference.timesteps.tolist(), rel=1e-6, abs=0), steps
        else:  # integers, exactly
            assert run["timesteps"] == reference.timesteps.tolist(), steps
        assert run["sigmas"] == pytest.approx(reference.sigmas.tolist(), rel=SIGMA_RTOL.get(name, 1e-6), abs=0), steps


# The tables are rebuilt with diffusers' float32 operations, but torch's vectorised float32 sqrt
# is not correctly rounded (1 ulp off on ~18% of alphas_cumprod's roots here; Java's is): sigmas
# agree to 1-2 ulps (1e-6). The zero-terminal-SNR rescale takes ratios of those roots, which makes
# alphas_cumprod differ by up to 4e-6 relative, and sigma = sqrt((1 - ac) / ac) near ac = 1 (the
# first timesteps) magnifies that to 1.1e-4. With torch's own sqrt values put in, the float32
# rebuild is bit-exact (checked when this was written): the difference is torch's rounding.
SIGMA_RTOL = {"zero-snr-v": 2e-4}


def fake_model(sample, t):
    """The loop's stand-in for the denoiser: a deterministic function of sample and timestep."""
    return 0.3 * sample + torch.sin(t / 100)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_sampling_loop_matches_diffusers_step_by_step(name, java_classes, tmp_path):
    """Every step's sample within 1e-5 (absolute + relative). diffusers keeps latents and the step
    coefficients in float32, each operation rounding at ~6e-8 relative; Java keeps double. Over
    20 steps the differences stay below 3e-6 of 1 + |sample| here (the most with epsilon
    prediction, whose first x0 = (x - sigma_t eps) / alpha_t divides by alpha_t = 0.006), bounded
    at 5e-6 below so that a drift shows. Errors of logic are far larger: solving at order 1 instead
    of 2 ends 19 apart on PixArt-Sigma's 20 steps."""
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    request = write_json(tmp_path / "latent.json", latent.flatten().tolist())
    java = java_ok(java_classes, "sample", scheduler_config(name, tmp_path), "20,7", request)
    worst = 0.0
    for run in java["runs"]:
        scheduler = SCHEDULERS[name]()
        scheduler.set_timesteps(run["steps"])
        sample = latent.clone()
        assert len(run["samples"]) == len(scheduler.timesteps)
        for index, t in enumerate(scheduler.timesteps):
            sample = scheduler.step(fake_model(sample, t), t, sample).prev_sample
            ours = np.asarray(run["samples"][index])
            theirs = sample.flatten().double().numpy()
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5, err_msg=f"{run['steps']} steps, step {index}")
            worst = max(worst, float(np.max(np.abs(ours - theirs) / (1 + np.abs(theirs)))))
        assert float(sample.abs().max()) < 1e3  # a sane loop, not a blow-up that tolerances hide
    assert worst < 5e-6, worst


SCHEDULER_REFUSALS = {
    "karras-sigmas": ("pixart-sigma", {"use_karras_sigmas": True}, "use_karras_sigmas = true"),
    "thresholding": ("pixart-sigma", {"thresholding": True}, "thresholding = true"),
    "sde-variant": ("pixart-sigma", {"algorithm_type": "sde-dpmsolver++"}, "algorithm_type = sde-dpmsolver++"),
    "third-order": ("pixart-sigma", {"solver_order": 3}, "solver_order = 3.0"),
    "cosine-betas": ("pixart-sigma", {"beta_schedule": "squaredcos_cap_v2"}, "beta_schedule = squaredcos_cap_v2"),
    "final-sigma-min": ("pixart-sigma", {"final_sigmas_type": "sigma_min"}, "final_sigmas_type = sigma_min"),
    "dynamic-shifting": ("flow-shift-3", {"use_dynamic_shifting": True}, "use_dynamic_shifting = true"),
    "stochastic": ("flow-shift-3", {"stochastic_sampling": True}, "stochastic_sampling = true"),
    "flow-sigmas-epsilon": ("sana-flow-sigmas", {"prediction_type": "epsilon"}, "prediction_type = epsilon"),
    "flow-prediction-on-betas": ("pixart-sigma", {"prediction_type": "flow_prediction"},
                                 "prediction_type = flow_prediction"),
    "other-class": ("pixart-sigma", {"_class_name": "EulerDiscreteScheduler"},
                    "_class_name 'EulerDiscreteScheduler' is not implemented by this app"),
    "truncated-json": ("pixart-sigma", None, "scheduler_config.json is not valid JSON"),
}


@pytest.mark.parametrize("case", SCHEDULER_REFUSALS)
def test_scheduler_refuses_unimplemented_options(case, java_classes, tmp_path):
    base, options, words = SCHEDULER_REFUSALS[case]
    path = scheduler_config(base, tmp_path)
    if options is None:
        path.write_text(path.read_text()[:40])
    else:
        path.write_text(json.dumps(json.loads(path.read_text()) | options))
    code, answer = run_java(java_classes, "schedule", path, 7)
    assert code == 3, answer
    assert words in answer["error"] and "\n" not in answer["error"], answer["error"]


# ---------------------------------------------------------------- guidance, noise, pixels

def test_guidance_is_the_pipelines(java_classes, tmp_path):
    gen = torch.Generator().manual_seed(3)
    uncond, cond = torch.randn(2, 1, 8, 4, 4, generator=gen)  # PixArt: 8 = noise + variance
    scale = 4.5
    request = {"uncond": uncond.flatten().tolist(), "cond": cond.flatten().tolist(), "scale": scale,
               "channels": 4}
    java = java_ok(java_classes, "guidance", write_json(tmp_path / "g.json", request))
    exact = uncond.double() + scale * (cond.double() - uncond.double())
    np.testing.assert_allclose(java["combined"], exact.flatten().numpy(), rtol=0, atol=1e-12)
    # The pipelines' own float32 computation on the batch-2 output, unconditional first.
    batched = torch.cat([uncond, cond])
    chunk_uncond, chunk_cond = batched.chunk(2)
    pipeline = chunk_uncond + scale * (chunk_cond - chunk_uncond)
    np.testing.assert_allclose(java["batched"], pipeline.flatten().numpy(), rtol=1e-6, atol=1e-6)
    assert java["batched"] == java["combined"]
    # PixArtSigmaPipeline then keeps the noise half of the learned-sigma output.
    np.testing.assert_allclose(java["noise_half"], pipeline.chunk(2, dim=1)[0].flatten().numpy(), atol=1e-6)
    assert len(java["noise_half"]) == 4 * 4 * 4


@pytest.mark.parametrize("seed", [0, 1, 42, 2**63 - 1, -1, -(2**63)])
def test_latent_noise_is_its_numpy_twin(seed, java_classes):
    count = 4 * 16 * 16 + 1  # odd: the last pair's second value is dropped
    java = np.asarray(java_ok(java_classes, "noise", seed, count)["values"])
    twin = portable_gaussians(seed, count)
    # Same algorithm, same doubles, up to libm's last bit in log / sin / cos (fdlibm in Java).
    np.testing.assert_allclose(java, twin, rtol=0, atol=1e-12)
    assert np.array_equal(java.astype(np.float32), twin.astype(np.float32))


def test_latent_noise_is_standard_gaussian(java_classes):
    values = np.asarray(java_ok(java_classes, "noise", 7, 200_000)["values"])
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1) < 0.01
    assert abs(np.mean(values**4) - 3) < 0.1  # Gaussian kurtosis, not merely unit variance
    other = np.asarray(java_ok(java_classes, "noise", 8, 16)["values"])
    assert not np.allclose(values[:16], other)


def rounding_ties() -> list[float]:
    """Decoded values v whose float32 (v * 0.5 + 0.5) * 255 is exactly k + 0.5: where rounding
    half to even (numpy) and half up differ."""
    ties = []
    for k in range(255):
        x = np.float32((k + 0.5) / 255)
        for candidate in (np.nextafter(x, np.float32(0)), x, np.nextafter(x, np.float32(1))):
            v = np.float32((candidate - np.float32(0.5)) * np.float32(2))
            scaled = (v * np.float32(0.5) + np.float32(0.5)) * np.float32(255)
            if scaled == np.float32(k + 0.5):
                ties.append(float(v))
    return ties


def test_pixels_are_vae_image_processors(java_classes, tmp_path):
    from diffusers.image_processor import VaeImageProcessor

    gen = torch.Generator().manual_seed(4)
    decoded = (torch.rand(2, 3, 12, 20, generator=gen) * 2.6 - 1.3)  # past [-1, 1] too
    flat = decoded.flatten()
    ties = rounding_ties()
    assert len(ties) > 20
    specials = ties + [-1.0, 1.0, 0.0, -0.0, -1.5, 1.5, 1e-30, -1e-30, float("inf"), float("-inf")]
    flat[: len(specials)] = torch.tensor(specials)
    decoded = flat.reshape(decoded.shape)
    request = {"shape": list(decoded.shape), "values": decoded.flatten().tolist()}
    java = java_ok(java_classes, "image", write_json(tmp_path / "image.json", request))

    images = VaeImageProcessor().postprocess(decoded, output_type="pil")
    expected = np.stack([np.asarray(image) for image in images])  # (N, H, W, 3) uint8
    ours = np.asarray(java["rgb"], dtype=np.uint8).reshape(expected.shape)
    assert np.array_equal(ours, expected), int((ours != expected).sum())
    # The ties (the first values, in NCHW order) went to the even neighbour, as numpy's round.
    tie_bytes = ours.transpose(0, 3, 1, 2).flatten()[: len(ties)]
    assert np.all(tie_bytes % 2 == 0) and len(set(tie_bytes.tolist())) > 20
    argb = np.asarray(java["argb"], dtype=np.int64) & 0xFFFFFFFF  # Java ints are signed
    rgb = expected.reshape(2, -1, 3).astype(np.int64)
    assert np.array_equal(argb, 0xFF000000 | rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])


def test_pixels_refuse_nan(java_classes, tmp_path):
    values = [0.0] * (3 * 2 * 2)
    values[5] = float("nan")
    request = tmp_path / "image.json"
    request.write_text(json.dumps({"shape": [1, 3, 2, 2], "values": values}))  # writes NaN
    code, answer = run_java(java_classes, "image", request)
    assert code == 3 and "NaN" in answer["error"], answer
