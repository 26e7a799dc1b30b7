"""Train a shapes-world teacher: PixArt-Sigma's architecture (diffusers PixArtTransformer2DModel)
or SD3's (SD3Transformer2DModel, joint attention with one MMDiT-X layer), both on rectified flow
(the model predicts noise - x0), on the latents of the shapes VAE, conditioned by the text
encoders of shapes_text (pretrained here to read the world, then frozen). SD3 samples with its
flow-matching Euler scheduler; PixArt with DPM-Solver++ 2M on flow sigmas (SANA's scheduler,
which PixArtSigmaPipeline drives as it is).

Why flow for PixArt too: trained with v-prediction on a zero-terminal-SNR DDPM schedule, the same
PixArt model in the same hour scored prompt accuracy 0.59 seen / 0.52 held-out; with SD3's flow
objective and noise draw, 0.75 / 0.61 (docs/shapes_runs/pixart-flow).

Why a large shift: these latents are flat colours, so thousands of latent values repeat the same
few numbers and the image is still readable from the noisy latent at noise levels where natural
images are not. A training draw that rarely reaches pure noise (SD3's shift 3) teaches the model
to read the background and objects off the noise instead of the caption, and sampling from pure
noise then ignores the caption. Shift 6 moves training to where only the caption can tell the
answer.

256 px images -> 32 x 32 latents -> 16 x 16 = 256 image tokens at patch 2, so image-image
attention matters (an object's shape is spread over ~20-80 tokens). Captions are dropped 10% of
the time for classifier-free guidance. The weights shipped are an EMA of the trained ones.
The result is a complete diffusers pipeline folder, written by the diffusers pipeline itself.

    python -m edit_mobile.training.train_teacher --family pixart --vae build/shapes/vae -o build/shapes/pixart
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

from edit_mobile.errors import UserError
from edit_mobile.fileio import check_output_dir
from edit_mobile.training.loop import TrainingLog, cosine_lr, seed_everything
from edit_mobile.training.shapes_data import IMAGE_SIZE, render_batch, training_scene
from edit_mobile.training.shapes_text import (
    PROMPT_TOKENS,
    T5_WIDTH,
    PixArtShapesText,
    SD3ShapesText,
    pretrain_scene_reading,
)

PIXART_CONFIG = dict(
    num_attention_heads=4, attention_head_dim=32, num_layers=6, in_channels=4,
    out_channels=4,  # no learned variance: PixArtSigmaPipeline uses a 4-channel output as it is
    cross_attention_dim=128, caption_channels=T5_WIDTH, sample_size=32, patch_size=2,
    norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, attention_bias=True,
    activation_fn="gelu-approximate", num_embeds_ada_norm=1000, use_additional_conditions=False,
)
SD3_CONFIG = dict(
    sample_size=32, patch_size=2, in_channels=4, out_channels=4, num_layers=4,
    num_attention_heads=4, attention_head_dim=32, joint_attention_dim=T5_WIDTH,
    caption_projection_dim=128, pooled_projection_dim=128, pos_embed_max_size=64,
    dual_attention_layers=(0,), qk_norm="rms_norm",  # SD3.5's MMDiT-X layout
)
SD3_SHIFT = 6.0  # see the module docstring: flat latents need more noise than 3.0 gives
CAPTION_DROPOUT = 0.1
# Objects cover 2-8% of a latent, so a plain mean-squared error is almost all background and the
# first teachers learned to paint the background and drop the object. Latent pixels that differ
# from the image's median (the background) by more than OBJECT_THRESHOLD weigh 1 + OBJECT_WEIGHT.
OBJECT_WEIGHT = 4.0
OBJECT_THRESHOLD = 0.5
EMA_DECAY = 0.998
LOW_NOISE_SHARE = 0.5  # see sd3_sigmas


def initialise_like_dit(model: torch.nn.Module, zeroed: tuple[str, ...]) -> None:
    """The DiT / PixArt training initialisation, which diffusers' model classes leave out (they
    load trained weights): Xavier-uniform linears with zero biases, and the modules in `zeroed`
    (adaLN modulation, cross-attention output, final projection) set to zero so every block
    starts as the identity. DiT measured it converging markedly faster than default inits."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    for name, module in model.named_modules():
        if name.endswith(zeroed):
            for parameter in module.parameters(recurse=False):
                torch.nn.init.zeros_(parameter)


def object_weights(x0: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) per-pixel loss weights: 1 on the background, 1 + OBJECT_WEIGHT on objects
    (and their one-pixel rim), found as latent pixels far from the image's median latent."""
    median = x0.flatten(2).median(dim=2).values[..., None, None]
    objects = ((x0 - median).norm(dim=1, keepdim=True) > OBJECT_THRESHOLD).float()
    objects = torch.nn.functional.max_pool2d(objects, 3, stride=1, padding=1)
    return 1 + OBJECT_WEIGHT * objects


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return ((prediction - target) ** 2 * weights).sum() / (weights.sum() * prediction.shape[1])


def sd3_sigmas(count: int, generator: torch.Generator) -> torch.Tensor:
    """Training noise levels: a share LOW_NOISE_SHARE uniform, the rest SD3's logit-normal shifted
    by SD3_SHIFT, which alone puts 0.4% of draws below sigma 0.3, where edges are drawn (measured
    on the first PixArt teachers: with 9% of draws at low noise their shapes came out ragged)."""
    shifted = torch.sigmoid(torch.randn(count, generator=generator))
    shifted = SD3_SHIFT * shifted / (1 + (SD3_SHIFT - 1) * shifted)
    uniform = torch.rand(count, generator=generator)
    pick_uniform = torch.rand(count, generator=generator) < LOW_NOISE_SHARE
    return torch.where(pick_uniform, uniform, shifted)


def flow_noised(x0: torch.Tensor, generator: torch.Generator):
    """Both teachers' rectified flow: x_s = (1 - s) x0 + s noise at timestep 1000 s (s from
    sd3_sigmas), target noise - x0. Returns (noisy latents, timesteps, target)."""
    sigma = sd3_sigmas(x0.shape[0], generator)
    noise = torch.randn(x0.shape, generator=generator)
    s = sigma.view(-1, 1, 1, 1)
    return (1 - s) * x0 + s * noise, sigma * 1000, noise - x0


class PixArtRecipe:
    """Rectified flow as SD3Recipe trains it, sampled by DPM-Solver++ 2M on flow sigmas."""

    name = "pixart"
    # Measured on the shipped teacher, 64 seen captions (seed 1): guidance 1.5 0.75, 2.0 0.75,
    # 2.5 0.73, 3.0 0.70, 4.0 0.62; 4.5, the pipeline's default, oversaturates this small model
    # into speckles and stray blobs (docs/shapes_runs/pixart-flow).
    sampling = {"steps": 20, "guidance": 2.0}

    def __init__(self, seed: int):
        from diffusers import DPMSolverMultistepScheduler, PixArtTransformer2DModel

        self.text = PixArtShapesText(seed)
        self.model = PixArtTransformer2DModel(**PIXART_CONFIG)
        initialise_like_dit(self.model, zeroed=("adaln_single.linear", "attn2.to_out.0", "proj_out"))
        self.scheduler = DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=SD3_SHIFT,
                                                     prediction_type="flow_prediction",
                                                     algorithm_type="dpmsolver++", solver_order=2)

    def to_model_space(self, latents: torch.Tensor, vae) -> torch.Tensor:
        return latents * vae.config.scaling_factor  # PixArtSigmaPipeline divides by it, no shift

    def loss(self, model, x0: torch.Tensor, cond: dict, generator: torch.Generator) -> torch.Tensor:
        noisy, timestep, target = flow_noised(x0, generator)
        prediction = model(noisy, encoder_hidden_states=cond["encoder_hidden_states"], timestep=timestep,
                           encoder_attention_mask=cond["encoder_attention_mask"],
                           added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        return weighted_mse(prediction, target, object_weights(x0))

    def pipeline(self, model, vae):
        from diffusers import PixArtSigmaPipeline

        return PixArtSigmaPipeline(tokenizer=self.text.tokenizer, text_encoder=self.text.encoder, vae=vae,
                                   transformer=model, scheduler=self.scheduler)


class SD3Recipe:
    """Rectified flow (SD3): x_t = (1 - s) x0 + s noise, the model predicts noise - x0; s drawn
    logit-normal and shifted by SD3_SHIFT, the shift of the FlowMatchEulerDiscreteScheduler shipped."""

    name = "sd3"
    # Measured on the shipped teacher (32 seen captions, 28 steps): guidance 2.0 0.88, 3.0 0.91,
    # 4.5 0.81, 7.0 (the pipeline's default) 0.69, over-saturated shapes as PixArt's at 4.5;
    # 20 steps at 3.0 keep 0.91.
    sampling = {"steps": 20, "guidance": 3.0}

    def __init__(self, seed: int):
        from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

        self.text = SD3ShapesText(seed)
        self.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=SD3_SHIFT)
        self.model = SD3Transformer2DModel(**SD3_CONFIG)
        initialise_like_dit(self.model, zeroed=("norm1.linear", "norm1_context.linear", "norm_out.linear", "proj_out"))

    def to_model_space(self, latents: torch.Tensor, vae) -> torch.Tensor:
        return (latents - vae.config.shift_factor) * vae.config.scaling_factor

    def loss(self, model, x0: torch.Tensor, cond: dict, generator: torch.Generator) -> torch.Tensor:
        noisy, timestep, target = flow_noised(x0, generator)
        prediction = model(noisy, encoder_hidden_states=cond["encoder_hidden_states"],
                           pooled_projections=cond["pooled_projections"], timestep=timestep,
                           return_dict=False)[0]
        return weighted_mse(prediction, target, object_weights(x0))

    def pipeline(self, model, vae):
        from diffusers import StableDiffusion3Pipeline

        text = self.text
        return StableDiffusion3Pipeline(
            transformer=model, scheduler=self.scheduler, vae=vae,
            text_encoder=text.clip_l, tokenizer=text.clip_tokenizer,
            text_encoder_2=text.clip_g, tokenizer_2=text.clip_tokenizer,
            text_encoder_3=text.t5, tokenizer_3=text.t5_tokenizer,
        )


RECIPES = {"pixart": PixArtRecipe, "sd3": SD3Recipe}


@torch.no_grad()
def encode_dataset(vae, count: int, seed: int, image_size: int, batch: int = 32):
    """`count` training scenes and their VAE latents (the posterior's mode), (N, 4, S/8, S/8)."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    scenes, latents = [], []
    for start in tqdm(range(0, count, batch), desc=f"encoding {image_size} px images", unit="batch"):
        size = min(batch, count - start)
        chunk = [training_scene(rng) for _ in range(size)]
        latents.append(vae.encode(render_batch(chunk, rng, image_size)).latent_dist.mode())
        scenes += chunk
    return scenes, torch.cat(latents)


def cached_dataset(vae_folder: Path, vae, count: int, seed: int, cache: Path, image_size: int = IMAGE_SIZE):
    """The encoded dataset, cached on disk by (VAE weights, count, seed, size): teachers share it.
    The same seed gives the same scenes at every size."""
    from safetensors.torch import load_file, save_file

    from edit_mobile.fileio import sha256_file
    from edit_mobile.shapes import Scene, ShapeObject

    key = sha256_file(vae_folder / "diffusion_pytorch_model.safetensors")[:12]
    stem = cache / f"latents-{key}-{count}-{seed}-{image_size}px"
    if stem.with_suffix(".json").is_file():
        rows = json.loads(stem.with_suffix(".json").read_text())
        scenes = [Scene(tuple(ShapeObject(*o) for o in r["objects"]), r["background"]) for r in rows]
        return scenes, load_file(stem.with_suffix(".safetensors"))["latents"]
    scenes, latents = encode_dataset(vae, count, seed, image_size)
    cache.mkdir(parents=True, exist_ok=True)
    save_file({"latents": latents.contiguous()}, stem.with_suffix(".safetensors"))
    rows = [{"objects": [[o.colour, o.shape, o.size, o.position] for o in s.objects], "background": s.background}
            for s in scenes]
    stem.with_suffix(".json").write_text(json.dumps(rows))
    return scenes, latents


def train(family: str, vae_folder: Path, output: Path, stages: list[tuple[int, int]], batch: int, lr: float,
          seed: int, images: int, cache: Path, text_steps: int = 1500) -> dict:
    """Pretrain the text encoders to read the world (`text_steps`, then frozen: see
    shapes_text), then train the teacher through `stages`, (image size, steps) pairs in order:
    most steps at 128 px (64 tokens, 4x cheaper a step), the last at 256 px."""
    from diffusers import AutoencoderKL

    seed_everything(seed)
    vae = AutoencoderKL.from_pretrained(vae_folder).eval().requires_grad_(False)
    recipe = RECIPES[family](seed)
    text_record = pretrain_scene_reading(recipe.text, text_steps, seed) if text_steps else None
    model = recipe.model.train()
    model.requires_grad_(True)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed + 1)
    generator = torch.Generator().manual_seed(seed + 2)
    total = sum(steps for _, steps in stages)
    log = TrainingLog(output, total, f"shapes {family} teacher")
    step = 0
    for image_size, steps in stages:
        scenes, latents = cached_dataset(vae_folder, vae, images, seed, cache, image_size)
        x0_all = recipe.to_model_space(latents, vae)
        # Each stage its own warm-up and cosine: one schedule over all stages left the last
        # (256 px, where shapes are learnt) at a tenth of the rate (measured: shape accuracy
        # 0.56 -> 0.66 from 1500 more steps at the full rate).
        for stage_step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(stage_step, steps, lr, warmup=100)
            loss = training_step(recipe, model, scenes, x0_all, batch, rng, generator)
            step_with_ema(loss, model, ema, optimizer, decay=min(EMA_DECAY, (1 + step) / (10 + step)))
            step += 1
            log.step(step, step * batch, loss=loss.item())
    summary = log.close()
    recipe.pipeline(ema, vae).save_pretrained(output, safe_serialization=True)
    write_sampling(output, recipe)
    parameters = sum(p.numel() for p in ema.parameters())
    record = {"family": family, "seed": seed, "stages": [list(s) for s in stages], "batch": batch, "lr": lr,
              "images": images, "prompt_tokens": PROMPT_TOKENS, "parameters": parameters,
              "text_pretraining": text_record, **summary}
    (output / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def step_with_ema(loss: torch.Tensor, model, ema, optimizer, decay: float = EMA_DECAY) -> None:
    """One optimizer step on `loss` (gradients clipped to norm 1), then the EMA follows the model."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    with torch.no_grad():
        for shadow, live in zip(ema.parameters(), model.parameters(), strict=True):
            shadow.lerp_(live, 1 - decay)


def write_sampling(folder: Path, recipe) -> None:
    """The recipe's measured best steps and guidance, which every edit-mobile command uses as
    its defaults for this folder (SAMPLING_FILE)."""
    from edit_mobile.models.families.base import SAMPLING_FILE

    if recipe.sampling is not None:
        (folder / SAMPLING_FILE).write_text(json.dumps(recipe.sampling, indent=2) + "\n")


def training_step(recipe, model, scenes, x0_all, batch: int, rng, generator) -> torch.Tensor:
    """The loss on one batch of cached latents, captions drawn afresh (dropped for guidance)."""
    from edit_mobile.shapes import make_caption

    rows = rng.integers(0, len(scenes), size=batch)
    captions = ["" if rng.random() < CAPTION_DROPOUT else make_caption(scenes[i], rng) for i in rows]
    with torch.no_grad():  # the encoders are frozen
        cond = recipe.text.encode(captions)
    return recipe.loss(model, x0_all[torch.from_numpy(rows)], cond, generator)


def parse_stages(text: str) -> list[tuple[int, int]]:
    """"128:6000,256:600" -> [(128, 6000), (256, 600)]."""
    try:
        stages = [tuple(int(v) for v in part.split(":")) for part in text.split(",")]
        if all(len(s) == 2 and s[0] % 64 == 0 and s[0] > 0 and s[1] > 0 for s in stages):
            return stages
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: expected SIZE:STEPS[,SIZE:STEPS...], sizes multiples of 64")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(RECIPES), required=True)
    parser.add_argument("--vae", type=Path, required=True, help="the trained shapes VAE folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="new folder for the pipeline")
    parser.add_argument("--stages", type=parse_stages, default=[(128, 6000), (256, 600)],
                        help="image size and steps of each stage, in order (default 128:6000,256:600)")
    parser.add_argument("--text-steps", type=int, default=1500, help="text encoder pretraining steps (0: none)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--images", type=int, default=8000, help="distinct training images, encoded once")
    parser.add_argument("--cache", type=Path, default=Path("build/shapes/cache"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # New or empty only: the log is written as training goes, so an earlier run's folder is not ours to reuse.
    output = check_output_dir(args.output, "train-teacher")
    if output.exists() and any(output.iterdir()):
        raise UserError(f"{output} is not empty; pass a new or empty folder with -o")
    output.mkdir(parents=True, exist_ok=True)
    record = train(args.family, args.vae, args.output, args.stages, args.batch, args.lr, args.seed,
                   args.images, args.cache, args.text_steps)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
