"""Which layers int8 hurts: one layer quantized at a time, output PSNR on held-out records;
and the smallest set of most sensitive layers to keep float for a PSNR target.

Both run on one calibration: the converted graph is built once with every layer quantized
(q/dq kept unfolded) and each configuration bypasses the q/dq of its float layers
(pt2e.with_quantized_only). The final program is then quantized for real with the chosen
float layers and its held-out PSNR measured again (xnnpack.quantize_for_xnnpack).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from edit_mobile.closeness import meets_floor
from edit_mobile.export.quantization import pt2e
from edit_mobile.export.quantization.layers import always_float_layers, layer_units
from edit_mobile.export.quantization.metrics import Inputs, mean_psnr, reference_outputs


@dataclass
class LayerCost:
    layer: str
    psnr_db: float  # held-out output PSNR with only this layer quantized (mean over records)
    min_psnr_db: float


@dataclass
class SensitivityReport:
    scheme: str
    granularity: str
    all_quantized_psnr_db: float
    all_quantized_min_psnr_db: float
    layers: list[LayerCost]  # most sensitive (lowest PSNR) first
    always_float_layers: list[str] = field(default_factory=list)  # per-sample vectors, norms

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FloatLayerChoice:
    float_layers: list[str]  # most sensitive first
    estimated_psnr_db: float
    target_met: bool
    layers_total: int


class SensitivityAnalysis:
    """One calibration, many estimates."""

    def __init__(self, exported: torch.export.ExportedProgram, calibration_inputs: Sequence[Inputs],
                 heldout_inputs: Sequence[Inputs], dynamic: bool = False, granularity: str = "block",
                 progress: bool = True):
        self.dynamic, self.granularity, self.progress = dynamic, granularity, progress
        self.heldout = list(heldout_inputs)
        self.references = reference_outputs(exported.module(), self.heldout)
        self.units = layer_units(exported.graph, granularity, dynamic)
        self.always_float_layers = always_float_layers(exported.graph, dynamic)
        self.exported = exported
        kept: list = []
        self.converted = pt2e.quantize_graph(exported, dynamic, calibration_inputs,
                                             fold_quantize=False, progress=progress, keep_prepared=kept)
        self.observed = kept[0]  # calibrated observers, reused by the final quantization
        self._reports: dict[str, SensitivityReport] = {}

    def psnr(self, module) -> tuple[float, float]:
        return mean_psnr(module, self.references, self.heldout)

    def estimate_with_float(self, float_layers: Sequence[str]) -> float:
        """The worst held-out record's PSNR with these layers float: targets hold every record."""
        return self.psnr(pt2e.with_float_layers(self.converted, float_layers))[1]

    def report(self, scheme: str) -> SensitivityReport:
        if scheme not in self._reports:
            self._reports[scheme] = self._measure(scheme)
        return self._reports[scheme]

    def _measure(self, scheme: str) -> SensitivityReport:
        costs = []
        for unit in tqdm(self.units, desc="layer sensitivity", unit="layer", disable=not self.progress):
            mean, low = self.psnr(pt2e.with_only_layer(self.converted, unit))
            costs.append(LayerCost(unit, mean, low))
        costs.sort(key=lambda cost: (cost.min_psnr_db, cost.psnr_db))  # worst record first: what targets judge
        mean, low = self.psnr(self.converted)
        return SensitivityReport(scheme, self.granularity, mean, low, costs, self.always_float_layers)

    def choose_float_layers(self, min_psnr: float, report: SensitivityReport | None = None) -> FloatLayerChoice:
        """Fewest most-sensitive layers to keep float so the worst held-out record reaches `min_psnr`."""
        order = [cost.layer for cost in (report or self.report("")).layers]
        return choose_float_layers(order, self.estimate_with_float, min_psnr)


def choose_float_layers(order: Sequence[str], worst_psnr_with_float, min_psnr: float) -> FloatLayerChoice:
    """Fewest of `order` (most sensitive first) to keep float so that
    `worst_psnr_with_float(layers)`, the worst held-out record's PSNR, reaches `min_psnr`.

    Binary search over the count k in sensitivity order (the PSNR grows with k). The target
    counts as unreachable when only keeping every layer float meets it."""
    order = list(order)
    estimates: dict[int, float] = {}

    def estimate(k: int) -> float:
        if k not in estimates:
            estimates[k] = worst_psnr_with_float(order[:k]) if k < len(order) else math.inf
        return estimates[k]

    low, high = 0, len(order)
    while low < high:
        middle = (low + high) // 2
        if meets_floor(estimate(middle), min_psnr):
            high = middle
        else:
            low = middle + 1
    met = low < len(order)
    return FloatLayerChoice(order[:low], estimate(low), met, len(order))


def write_report(report: SensitivityReport, out_dir: Path, min_psnr: float | None = None,
                 choice: FloatLayerChoice | None = None) -> list[Path]:
    """sensitivity.json, sensitivity.txt (the table) and sensitivity.png (bars per layer)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    if choice is not None:
        data["min_psnr_db"] = min_psnr
        data["choice"] = asdict(choice)
    (out_dir / "sensitivity.json").write_text(json.dumps(json_safe(data), indent=2) + "\n")
    (out_dir / "sensitivity.txt").write_text(format_table(report, choice) + "\n")
    _plot(report, out_dir / "sensitivity.png", min_psnr)
    return [out_dir / name for name in ("sensitivity.json", "sensitivity.txt", "sensitivity.png")]


def format_table(report: SensitivityReport, choice: FloatLayerChoice | None = None) -> str:
    width = max([len(cost.layer) for cost in report.layers] + [5])
    lines = [
        f"{report.scheme}: output PSNR on held-out records with one layer quantized "
        f"(most sensitive first); all layers quantized: {report.all_quantized_psnr_db:.1f} dB mean, "
        f"{report.all_quantized_min_psnr_db:.1f} dB worst record",
        f"{'layer'.ljust(width)}  mean dB   worst dB",
    ]
    for cost in report.layers:
        lines.append(f"{cost.layer.ljust(width)}  {cost.psnr_db:7.1f}  {cost.min_psnr_db:8.1f}")
    if report.always_float_layers:
        lines.append(f"always float (per-sample vectors, norms): {', '.join(report.always_float_layers)}")
    if choice is not None:
        verdict = "met" if choice.target_met else "NOT reachable without keeping every layer float"
        lines.append(f"float layers for the target ({verdict}): {', '.join(choice.float_layers) or 'none'}; "
                     f"estimated {choice.estimated_psnr_db:.1f} dB")
    return "\n".join(lines)


def _plot(report: SensitivityReport, path: Path, min_psnr: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report.layers[::-1]  # most sensitive at the top
    height = max(2.5, 0.28 * len(layers) + 1.2)
    figure, axes = plt.subplots(figsize=(8, height))
    values = [min(cost.psnr_db, 120.0) for cost in layers]
    axes.barh([cost.layer for cost in layers], values, color="#4878a8")
    axes.axvline(report.all_quantized_psnr_db, color="#c44e52", linestyle="--", label="all layers quantized")
    if min_psnr is not None:
        axes.axvline(min_psnr, color="#55a868", linestyle=":", label=f"target {min_psnr:g} dB")
    axes.set_xlabel("held-out output PSNR with only this layer quantized (dB)")
    axes.set_title(f"{report.scheme} sensitivity ({report.granularity})")
    axes.legend(loc="lower right", fontsize=8)
    axes.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def json_safe(value):
    """`value` with NaN as None and infinities as strings: JSON without extensions."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value
