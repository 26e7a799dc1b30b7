"""Vulkan: lowered here (it runs only where a Vulkan driver is), with EDiT's attention and the
MLP inside the GPU delegate. `--weights external` moves the delegate's constants to its own
vulkan_constants_<digest>.ptd shards; no program runs here, so the artifact is inspected."""

from __future__ import annotations

import re

import pytest
from export_artifacts import attention_or_mlp_outside, exported, manifest

SHARD_NAME = re.compile(r"vulkan_constants_[0-9a-f]{64}\.ptd")


def test_vulkan_program_keeps_attention_and_mlp_on_the_gpu():
    art_dir = exported("tiny-pixart-edit", "vulkan")
    data = manifest(art_dir)
    coverage = data["delegation"]
    print(
        f"\ntiny-pixart-edit vulkan: {coverage['ops_delegated']}/{coverage['ops_total']} ops, "
        f"{coverage['flops_share_delegated']:.4%} of FLOPs delegated; outside: {coverage['non_delegated_ops']}"
    )
    assert coverage["delegates"] == ["VulkanBackend"]
    outside = attention_or_mlp_outside(coverage)
    assert outside == {}, f"attention / MLP compute runs outside Vulkan: {outside}"
    assert [spec["name"] for spec in data["inputs"]][0] == "hidden_states"
    assert (art_dir / "model.pte").read_bytes()[4:8] == b"ET12"


def test_vulkan_lowers_at_64px_and_prints_no_info_lines(tmp_path, capfd):
    """At 64 px PixArt builds its position table from constants alone, which Vulkan's
    preprocessing failed on (see executorch_program.FoldConstantSubgraphs). And ExecuTorch's
    Vulkan modules set the root logger to INFO when imported (~100 lines an export)."""
    from edit_mobile.main import main

    art_dir = tmp_path / "art"
    code = main(["export", "tiny-pixart-edit", "--backend", "vulkan", "--resolution", "64", "-o", str(art_dir)])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert [line for line in (out + err).splitlines() if "INFO" in line] == []
    data = manifest(art_dir)
    assert data["resolution"] == [64, 64]
    assert data["delegation"]["delegates"] == ["VulkanBackend"]
    assert data["delegation"]["non_delegated_ops"] == {}


def test_verbose_shows_third_party_info_lines(tmp_path, monkeypatch, capfd):
    import logging

    from edit_mobile.export.backends import executorch_program
    from edit_mobile.main import configure_logging, main

    def log_and_fail(*args, **kwargs):
        logging.getLogger("executorch.backends.vulkan").info("partitioning the graph")
        raise RuntimeError("stop here")

    monkeypatch.setattr(executorch_program, "to_edge_transform_and_lower", log_and_fail)
    try:
        for flags, shown in (([], False), (["--verbose"], True)):
            code = main([*flags, "export", "tiny-pixart", "--backend", "vulkan", "--resolution", "64",
                         "-o", str(tmp_path / "art")])
            err = capfd.readouterr().err
            assert code == 2 and "vulkan lowering failed in" in err
            assert ("INFO executorch.backends.vulkan: partitioning the graph" in err) is shown, err
    finally:
        configure_logging(verbose=False)  # what every other CLI run in this session gets


def weight_roles(files: dict) -> dict[str, str]:
    """The manifest's data-file roles: `weights`, then `weights.1`, ... (weights_roles)."""
    return {role: entry["path"] for role, entry in files.items() if re.fullmatch(r"weights(\.\d+)?", role)}


def test_vulkan_external_weights_leave_the_pte_for_shards_the_manifest_lists():
    from edit_mobile.models import load_transformer
    from edit_mobile.runtime.manifest import read_manifest

    embedded_dir = exported("tiny-pixart-edit", "vulkan")
    art_dir = exported("tiny-pixart-edit", "vulkan", backend_options={"weights": "external"})
    embedded, data = manifest(embedded_dir), manifest(art_dir)
    assert embedded["program"]["weights"] == "embedded" and weight_roles(embedded["files"]) == {}
    assert data["program"]["weights"] == "external"
    assert data["delegation"]["delegates"] == ["VulkanBackend"]
    shards = weight_roles(data["files"])
    assert "weights" in shards and all(SHARD_NAME.fullmatch(name) for name in shards.values()), shards
    assert sorted(shards.values()) == sorted(path.name for path in art_dir.glob("*.ptd"))  # every file listed
    read_manifest(art_dir)  # the runtime's reader takes the roles and checks every file's sha256

    parameters = sum(p.numel() for p in load_transformer("tiny-pixart-edit").parameters())
    weight_bytes = 4 * parameters  # float32
    sizes = {name: (art_dir / name).stat().st_size for name in shards.values()}
    program, whole = data["files"]["program"]["bytes"], embedded["files"]["program"]["bytes"]
    print(f"\ntiny-pixart-edit vulkan: embedded .pte {whole} B; external .pte {program} B + shards {sizes}; "
          f"weights {weight_bytes} B")
    assert sum(sizes.values()) >= weight_bytes  # every weight (plus the folded position table)
    assert whole - program >= 0.9 * weight_bytes  # the .pte lost (nearly) all the weights' bytes...
    assert abs(program + sum(sizes.values()) - whole) <= 0.01 * whole  # ...which moved, not grew

    # No weight of 1024 elements or more is left in the .pte; each is in a shard, as it is in the
    # embedded .pte (linear weights as the delegate stores them: transposed).
    pte = (art_dir / data["files"]["program"]["path"]).read_bytes()
    stored = b"".join((art_dir / name).read_bytes() for name in shards.values())
    whole_pte = (embedded_dir / embedded["files"]["program"]["path"]).read_bytes()
    for name, weight in load_transformer("tiny-pixart-edit").named_parameters():
        if weight.numel() >= 1024:
            layout = weight.detach().t() if weight.dim() == 2 else weight.detach()
            raw = layout.contiguous().numpy().tobytes()
            assert raw in whole_pte and raw in stored and raw not in pte, name


def test_vulkan_shards_keep_to_their_cap_and_a_larger_constant_is_one_line(tmp_path, monkeypatch, capsys):
    """Shards of at most SHARD_MAX_BYTES (1 GiB; smaller here): several are listed as
    `weights`, `weights.1`, ...; a constant larger than the cap is refused in one line."""
    from edit_mobile.export.artifact import ExportRequest, export_artifact
    from edit_mobile.export.backends import vulkan
    from edit_mobile.main import main
    from edit_mobile.models import load_transformer
    from edit_mobile.runtime.manifest import read_manifest

    largest = 4 * max(p.numel() for p in load_transformer("tiny-pixart-edit").parameters())  # float32
    monkeypatch.setattr(vulkan, "SHARD_MAX_BYTES", largest)
    art_dir = tmp_path / "art"
    export_artifact(ExportRequest(model="tiny-pixart-edit", backend="vulkan", output=art_dir,
                                  backend_options={"weights": "external"}))
    shards = weight_roles(manifest(art_dir)["files"])
    assert len(shards) >= 3 and set(shards) == {"weights", *(f"weights.{i}" for i in range(1, len(shards)))}
    assert all(SHARD_NAME.fullmatch(name) for name in shards.values()), shards
    assert all((art_dir / name).stat().st_size <= largest + 4096 for name in shards.values())  # + header
    from edit_mobile.runtime.device_profile import files_to_push

    read = read_manifest(art_dir)
    assert read.weight_roles() == ["weights", *(f"weights.{i}" for i in range(1, len(shards)))]
    assert set(shards.values()) <= {relative for _, relative in files_to_push(read)}  # a phone gets every shard

    monkeypatch.setattr(vulkan, "SHARD_MAX_BYTES", largest - 1)
    code = main(["export", "tiny-pixart-edit", "--backend", "vulkan", "--weights", "external",
                 "-o", str(tmp_path / "refused")])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("edit-mobile export: error: vulkan with external weights: "), line
    assert f"one constant takes {largest:,} bytes" in line and "--weights embedded" in line, line
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("weights", ["embedded", "external"])
def test_vulkan_takes_weights_on_the_command_line(weights, tmp_path, monkeypatch):
    """The flag reaches the backend (the lowering itself is tested above)."""
    from edit_mobile.export import artifact
    from edit_mobile.main import main

    seen = {}
    monkeypatch.setattr(artifact, "export_artifact", lambda request: seen.setdefault("request", request).output)
    assert main(["export", "tiny-pixart-edit", "--backend", "vulkan", "--weights", weights,
                 "-o", str(tmp_path / "art")]) == 0
    assert seen["request"].backend_options["weights"] == weights
