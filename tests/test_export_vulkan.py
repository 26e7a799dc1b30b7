"""Vulkan: lowered here (it runs only where a Vulkan driver is), with EDiT's attention and the
MLP inside the GPU delegate."""

from __future__ import annotations

from export_artifacts import attention_or_mlp_outside, exported, manifest


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
