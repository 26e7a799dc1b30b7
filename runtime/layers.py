"""The per-layer report shared by the ExecuTorch and ONNX numerical debuggers.

A row compares one intermediate value the artifact produced with the same value computed by
the PyTorch reference, in execution order. The gap "opens" at the first row below the
validation threshold: the layers feeding that value (its `suspects`) are where to look.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edit_mobile.runtime.metrics import Closeness

SHOWN_OPENINGS = 3  # the first failing rows reported as where the gap opens


@dataclass
class LayerRow:
    order: int  # execution order
    where: str  # what produced the value: an ExecuTorch instruction / delegate call, an ONNX node
    module: str  # the model module the value belongs to (deepest known)
    op: str
    shape: tuple[int, ...]
    closeness: Closeness
    suspects: list[str] = field(default_factory=list)  # modules whose weights this value used first

    def as_dict(self) -> dict:
        return {
            "order": self.order, "where": self.where, "module": self.module, "op": self.op,
            "shape": list(self.shape), **self.closeness.as_dict(), "suspects": self.suspects,
        }


@dataclass
class LayerReport:
    runtime: str
    threshold_db: float
    rows: list[LayerRow]
    notes: list[str] = field(default_factory=list)
    weight_mismatches: list[dict] = field(default_factory=list)  # exported weights != reference

    @property
    def failing(self) -> list[LayerRow]:
        return [row for row in self.rows if row.closeness.psnr_db < self.threshold_db]

    @property
    def gap_opens(self) -> list[LayerRow]:
        return self.failing[:SHOWN_OPENINGS]

    def first_layers(self) -> list[str]:
        """Modules where the gap opens, most specific first, without repeats."""
        names: list[str] = []
        for row in self.gap_opens:
            for name in row.suspects or [row.module]:
                if name not in names:
                    names.append(name)
        return names

    def as_dict(self) -> dict:
        return {
            "runtime": self.runtime,
            "threshold_db": self.threshold_db,
            "compared": len(self.rows),
            "failing": len(self.failing),
            "gap_opens_at": [row.as_dict() for row in self.gap_opens],
            "first_layers": self.first_layers(),
            "weight_mismatches": self.weight_mismatches,
            "notes": self.notes,
            "rows": [row.as_dict() for row in self.rows],
        }


def short_module(path: str) -> str:
    """'model.transformer_blocks.1.ff.net.2' -> 'transformer_blocks.1.ff.net.2' (the wrapper's
    'model.' prefix and an fp16 cast wrapper's 'denoiser.' say nothing to a reader)."""
    for prefix in ("denoiser.", "model."):
        if path.startswith(prefix):
            path = path[len(prefix):]
    return path or "(top level)"
