"""Sampling-time guidance variants on seen captions (seed 1): prompt accuracy and small squares
(diagnostic). skip-layer guidance (diffusers' SD3 pipeline) and guidance schedules set per step
through callback_on_step_end.

    python docs/shapes_runs/small-squares-not-data/probe_guidance.py pretrained/shapes-sd3 64 base,slg1,... OUT.json"""
import collections
import json
import sys
import time

import torch

from edit_mobile.runtime.evaluate import DiffusersImages, Settings, captions_of
from edit_mobile.shapes import check_image, score

torch.set_num_threads(2)
model, samples, which = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
make = DiffusersImages(model)
family = make.family
base_options = family.pipeline_call_options


def schedule_callback(schedule):
    def callback(pipe, step, timestep, kwargs):
        pipe._guidance_scale = schedule(step + 1)
        return {}
    return callback


VARIANTS = {
    "base": {},
    "slg1": {"skip_guidance_layers": [1]},
    "slg2": {"skip_guidance_layers": [2]},
    "slg12": {"skip_guidance_layers": [1, 2]},
    "slg2-wide": {"skip_guidance_layers": [2], "skip_layer_guidance_stop": 0.6},
    "slg1-wide": {"skip_guidance_layers": [1], "skip_layer_guidance_stop": 0.6},
    "late-high": {"callback_on_step_end": schedule_callback(lambda s: 3.0 if s < 10 else 5.0)},
    "early-low": {"callback_on_step_end": schedule_callback(lambda s: 1.5 if s < 6 else 3.0)},
    "mid-high": {"callback_on_step_end": schedule_callback(lambda s: 5.0 if 4 <= s < 14 else 3.0)},
}
captioned = captions_of("seen", samples, 1)
captions = [c.caption for c in captioned]
results = {}
for name in which:
    extra = VARIANTS[name]
    family.pipeline_call_options = lambda *a, extra=extra: {**base_options(*a), **extra}
    start = time.time()
    images = make(captions, Settings(seed=1))
    entry = score(images, [c.scene for c in captioned])
    tally = collections.Counter()
    for c, image in zip(captioned, images, strict=True):
        for check in check_image(image, c.scene).objects:
            e = check.expected
            if e.size == "small" and e.shape == "square":
                tally["small-square right" if check.found and check.found.shape == "square" else "small-square wrong"] += 1
    results[name] = {"prompt": entry["prompt_accuracy"], "shape": entry["per_attribute"]["shape"], **tally}
    print(name, results[name], f"{time.time() - start:.0f} s", flush=True)
json.dump(results, open(sys.argv[4], "w"), indent=1)
