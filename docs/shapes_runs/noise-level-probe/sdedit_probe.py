"""At which noise level does a shapes teacher lose the object? (diagnostic)

    python docs/shapes_runs/noise-level-probe/sdedit_probe.py pretrained/shapes-pixart 32 [0,8,12,16] [swap]

For one-object seen captions (seed 1): render the exact image, encode it, noise it to the k-th of
the recorded sampler's timesteps and let the teacher finish the remaining steps (SDEdit). Prompt
accuracy against k says from which noise level on the teacher keeps, or spoils, a right object;
k = 0 is ordinary sampling from noise. With `swap` each caption names the next shape (circle ->
square -> triangle -> circle) while the image keeps its own: whose shape does the teacher draw?"""

import sys

import torch
from diffusers import DiffusionPipeline

from edit_mobile.runtime.evaluate import captions_of
from edit_mobile.shapes import check_image
from edit_mobile.shapes.world import render_array
from edit_mobile.training.shapes_data import to_tensor


def main() -> None:
    folder, samples = sys.argv[1], int(sys.argv[2])
    starts = [int(v) for v in (sys.argv[3] if len(sys.argv) > 3 else "0,4,8,12,16").split(",")]
    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    is_pixart = "PixArt" in type(pipe).__name__
    guidance = 2.0 if is_pixart else 3.0
    rows = captions_of("seen", samples, seed=1)
    swap = len(sys.argv) > 4 and sys.argv[4] == "swap"
    captions = [swapped(r) if swap else r.caption for r in rows]
    images = torch.stack([to_tensor(render_array(r.scene, 256, seed=i)) for i, r in enumerate(rows)])
    vae = pipe.vae
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mode()
        if is_pixart:
            x0 = latents * vae.config.scaling_factor
        else:
            x0 = (latents - vae.config.shift_factor) * vae.config.scaling_factor
    for start in starts:
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(x0.shape, generator=generator)
        with torch.no_grad():
            out = finish(pipe, captions, x0, noise, start, guidance, is_pixart)
        checks = [check_image(img, r.scene) for img, r in zip(out, rows, strict=True)]
        right = sum(c.all_correct for c in checks) / len(rows)
        shape = sum(c.shape for c in checks) / len(rows)
        small = [c.shape for c, r in zip(checks, rows, strict=True) if r.scene.objects[0].size == "small"]
        print(f"start step {start:2d} of 20: prompt accuracy {right:.3f}, shape {shape:.3f}, "
              f"small shapes {sum(small)}/{len(small)}", flush=True)
        if swap:
            as_caption = [next_shape(r) == (c.objects[0].found.shape if c.objects[0].found else None)
                          for c, r in zip(checks, rows, strict=True)]
            small_as_caption = [a for a, r in zip(as_caption, rows, strict=True) if r.scene.objects[0].size == "small"]
            print(f"    read as the caption's shape: {sum(as_caption)}/{len(rows)}, "
                  f"small {sum(small_as_caption)}/{len(small_as_caption)}", flush=True)


NEXT_SHAPE = {"circle": "square", "square": "triangle", "triangle": "circle"}


def next_shape(row) -> str:
    return NEXT_SHAPE[row.scene.objects[0].shape]


def swapped(row) -> str:
    return row.caption.replace(row.scene.objects[0].shape, next_shape(row))


def finish(pipe, captions, x0, noise, start, guidance, is_pixart):
    scheduler = pipe.scheduler
    scheduler.set_timesteps(20)
    timesteps = scheduler.timesteps
    t0 = timesteps[start]
    if is_pixart:
        noisy = scheduler.add_noise(x0, noise, t0.repeat(len(captions))) if start else noise
        embeds, mask, neg, neg_mask = pipe.encode_prompt(captions, max_sequence_length=32, clean_caption=False)
        hidden, masks = torch.cat([neg, embeds]), torch.cat([neg_mask, mask])
    else:
        sigma = scheduler.sigmas[start]
        noisy = (1 - sigma) * x0 + sigma * noise
        embeds, neg, pooled, neg_pooled = pipe.encode_prompt(captions, captions, captions, max_sequence_length=32)
        hidden, pooled_all = torch.cat([neg, embeds]), torch.cat([neg_pooled, pooled])
    scheduler.set_timesteps(20)  # fresh solver state; its step index is found from the first t
    x = noisy
    for i, t in enumerate(timesteps):
        if i < start:
            continue
        both = torch.cat([x, x])
        if is_pixart:
            out = pipe.transformer(both, encoder_hidden_states=hidden, encoder_attention_mask=masks,
                                   timestep=t.repeat(len(both)), added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                                   return_dict=False)[0]
        else:
            out = pipe.transformer(both, encoder_hidden_states=hidden, pooled_projections=pooled_all,
                                   timestep=t.repeat(len(both)), return_dict=False)[0]
        un, co = out.chunk(2)
        x = scheduler.step(un + guidance * (co - un), t, x, return_dict=False)[0]
    vae = pipe.vae
    if is_pixart:
        latents = x / vae.config.scaling_factor
    else:
        latents = x / vae.config.scaling_factor + vae.config.shift_factor
    return pipe.image_processor.postprocess(vae.decode(latents, return_dict=False)[0], output_type="pil")


if __name__ == "__main__":
    main()
