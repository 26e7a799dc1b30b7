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


def test_vulkan_lowers_away_from_the_native_resolution():
    """At 64 px PixArt builds its position table from constants alone, which Vulkan's
    preprocessing failed on (see backends.vulkan.FoldConstantSubgraphs)."""
    art_dir = exported("tiny-pixart-edit", "vulkan", resolution=(64, 64))
    data = manifest(art_dir)
    assert data["resolution"] == [64, 64]
    assert data["delegation"]["delegates"] == ["VulkanBackend"]
    assert data["delegation"]["non_delegated_ops"] == {}
