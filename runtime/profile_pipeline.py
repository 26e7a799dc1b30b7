"""`edit-mobile profile ART` for a pipeline artifact (export --pipeline), measured here: load time,
the latency of every method on its test vectors (min / median / p90), peak memory, and what one
image costs from those medians at the artifact's default steps and guidance (text encoding per
branch, one denoise call per branch per step, or one for both with a batch-2 method; decoding).
"""

from __future__ import annotations

import os
import time

from edit_mobile.runtime.profiling import latency_stats, peak_rss_mb, reset_peak_rss, rss_mb


def profile_pipeline(art_dir: str | os.PathLike, iters: int = 20, warmup: int = 3, threads: int | None = None,
                     progress=None) -> dict:
    from safetensors.torch import load_file

    from edit_mobile.errors import UserError
    from edit_mobile.runtime.pipeline_artifact import PipelineArtifact

    if iters < 1 or warmup < 0:
        raise UserError(f"--iters {iters} must be at least 1 and --warmup {warmup} at least 0")
    tick = progress or (lambda: None)
    resettable = reset_peak_rss()
    rss_before = rss_mb()
    started = time.perf_counter()
    artifact = PipelineArtifact(art_dir, threads)
    for name in artifact.spec["methods"]:
        artifact.load_method(name)
    load_ms = (time.perf_counter() - started) * 1000
    vectors = load_file(artifact.manifest.file("test_vectors").path)
    methods = {}
    for name, spec in artifact.spec["methods"].items():
        named = {item["name"]: vectors[f"{name}.input.{item['name']}"] for item in spec["inputs"]}
        times = []
        for run in range(warmup + iters):
            begun = time.perf_counter()
            artifact.run(name, named)
            if run >= warmup:
                times.append(time.perf_counter() - begun)
            tick()
        methods[name] = latency_stats(times)
    manifest = artifact.manifest
    return {
        "artifact": str(art_dir), "description": manifest.describe(), "runtime": artifact.methods.runtime,
        "threads": threads, "iters": iters, "warmup": warmup, "load_ms": load_ms, "methods": methods,
        "image_ms": image_estimate(artifact.spec, methods),
        "memory": {"rss_before_load_mb": rss_before, "peak_rss_mb": peak_rss_mb(rss_before), "peak_is_since_load": resettable},
        "program_bytes": sum(entry.path.stat().st_size for entry in artifact.methods.entries),
    }


def image_estimate(spec: dict, methods: dict) -> dict:
    """Milliseconds of one image per resolution, from the methods' medians."""
    steps, guided = spec["defaults"]["steps"], spec["defaults"]["guidance"] > 1.0
    branches = 2 if guided else 1
    # fixed prompts (no encode_prompt method): their embeddings are read, not computed
    encode = methods["encode_prompt"]["median"] * branches if "encode_prompt" in methods else 0.0
    estimate = {}
    for height, width in spec["resolutions"]:
        denoise = f"denoise_{height}x{width}"
        batch = spec["methods"][denoise]["inputs"][0]["shape"][0]
        calls = 1 if batch == branches else branches
        per_step = methods[denoise]["median"] * calls
        decode = methods[f"decode_{height}x{width}"]["median"]
        estimate[f"{height}x{width}"] = {"steps": steps, "guided": guided, "encode": encode, "per_step": per_step,
                                          "decode": decode, "total": encode + steps * per_step + decode}
    return estimate
