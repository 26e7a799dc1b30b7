"""`edit-mobile profile --compare A.json B.json ...`: host and device profiles side by side.

Reads the JSON `edit-mobile profile --json` writes, in both of its forms: a host profile (one
"forward" timed here: latency_ms, load_ms, memory.peak_rss_mb) and a device profile (per method:
latency_ms, load_ms, peak_memory_bytes). One row per (profile, method); the PNG draws each
method's median latency per profile, with whiskers from min to p90.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from edit_mobile.errors import UserError
from edit_mobile.runtime.device_profile import MAX_TIMED_RUNS, device_label
from edit_mobile.safe_read import JsonBounds, read_json

FIX = "pass JSON files written by edit-mobile profile --json"


@dataclass(frozen=True)
class Row:
    profile: str  # the JSON file's name
    where: str  # what measured it: "host: executorch, 2 threads" / "Google Pixel 8, Android 14 (API 34), executorch-android"
    method: str
    runs: int
    min_ms: float
    median_ms: float
    p90_ms: float
    load_ms: float | None
    peak_mb: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def compare(paths: list[Path]) -> list[Row]:
    return [row for path in paths for row in read_profile(path)]


def read_profile(path: Path) -> list[Row]:
    if not path.is_file():
        raise UserError(f"--compare {path}: no such file; {FIX}")
    data = read_json(path, FIX, JsonBounds(max_items=MAX_TIMED_RUNS + 1), what="a profile JSON")
    if not isinstance(data, dict) or not str(data.get("created_by", "")).startswith("edit-mobile") \
            or not str(data.get("created_by", "")).endswith(" profile"):
        raise UserError(f"{path} is not a profile JSON (no 'created_by: edit-mobile ... profile'); {FIX}")
    if isinstance(data.get("methods"), dict):
        where = f"{device_label(data.get('device') or {})}, {data.get('runtime', '?')}"
        return [_row(path, where, name, entry, _peak_mb(entry.get("peak_memory_bytes") if isinstance(entry, dict) else None))
                for name, entry in data["methods"].items()]
    if isinstance(data.get("latency_ms"), dict):
        where = f"host: {data.get('runtime', '?')}, {data.get('threads', '?')} threads"
        memory = data.get("memory") if isinstance(data.get("memory"), dict) else {}
        return [_row(path, where, "forward", data, _number(memory.get("peak_rss_mb"), optional=True))]
    raise UserError(f"{path} holds no latency figures (an --etdump profile has per-operator times only); {FIX} "
                    "of a host or --device run")


def _row(path: Path, where: str, method: str, entry, peak_mb: float | None) -> Row:
    latency = entry.get("latency_ms") if isinstance(entry, dict) else None
    if not isinstance(latency, dict):
        raise UserError(f"{path}: method '{method}' has no latency_ms; {FIX}")
    try:
        figures = [_number(latency.get(key)) for key in ("min", "median", "p90")]
        runs = int(_number(latency.get("runs")))
    except ValueError as err:
        raise UserError(f"{path}: method '{method}' latency_ms {err}; {FIX}") from None
    return Row(path.name, where, method, runs, *figures, _number(entry.get("load_ms"), optional=True), peak_mb)


def _number(value, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        if optional:
            return None
        raise ValueError(f"holds {value!r:.30}, not a finite number")
    return float(value)


def _peak_mb(peak_bytes) -> float | None:
    value = _number(peak_bytes, optional=True)
    return None if value is None else value / 2**20


def latency_png(rows: list[Row]):
    """A PIL image: per method, one bar per profile at its median latency, whiskers min to p90."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    methods = list(dict.fromkeys(row.method for row in rows))
    profiles = list(dict.fromkeys((row.profile, row.where) for row in rows))
    width = 0.8 / len(profiles)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 + 1.5 * len(methods) * len(profiles) ** 0.5), 4.2))
    for index, (profile, where) in enumerate(profiles):
        shown = [(methods.index(r.method), r) for r in rows if (r.profile, r.where) == (profile, where)]
        positions = [slot - 0.4 + width * (index + 0.5) for slot, _ in shown]
        medians = [r.median_ms for _, r in shown]
        whiskers = [[r.median_ms - r.min_ms for _, r in shown], [r.p90_ms - r.median_ms for _, r in shown]]
        axes.bar(positions, medians, width, yerr=whiskers, capsize=3, label=f"{where} ({profile})")
    axes.set_xticks(range(len(methods)), methods)
    axes.set_ylabel("latency (ms): median, whiskers min to p90")
    axes.set_title("latency per method")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=1, frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
