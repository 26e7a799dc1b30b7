"""Where an export's memory goes (not a test): `edit-mobile export` run in this process, with
the resident memory at every stage the backends name (`named_stage`) and the peak inside each,
and the graph size of every dependency viewer a partitioner builds.

    python bench/export_stages.py [--every-s 0.5] [--json FILE] -- MODEL --backend xnnpack ... -o ART_DIR

Everything after `--` is `edit-mobile export`'s own arguments. The peaks are exact on Linux: at
every stage's enter and leave the kernel's peak-RSS mark (VmHWM) is read into every open stage
and reset (`reset_peak_rss`), so each stage's peak is the highest RSS while it was open. Where the
mark cannot be reset they are sampled every `--every-s` instead (a shorter spike can be missed;
the output says which). Used to find the partitioners' quadratic reachability sets
(docs/bench_runs/partition-memory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from pathlib import Path

from edit_mobile.export.backends import base, partition_reachability
from edit_mobile.runtime.profiling import peak_rss_mb, reset_peak_rss, rss_mb


def resident_gb() -> float:
    megabytes = rss_mb()
    return float("nan") if megabytes is None else megabytes / 1024


class StageMemory:
    """The stack of open stages, a timeline of enters and leaves, and the peak within each."""

    def __init__(self, every_s: float):
        self.started = time.perf_counter()
        self.stack = ["export"]
        self.timeline: list[dict] = []
        self.peaks: dict[str, float] = {}
        self.graph_nodes: list[int] = []
        self.exact = reset_peak_rss()
        if not self.exact:
            threading.Thread(target=self._sample, args=(every_s,), daemon=True).start()

    def open_stages(self) -> list[str]:
        return [" > ".join(self.stack[:depth]) for depth in range(1, len(self.stack) + 1)]

    def _sample(self, every_s: float) -> None:
        while True:
            self._fold(resident_gb())
            time.sleep(every_s)

    def _fold(self, gigabytes: float) -> None:
        for key in self.open_stages():
            self.peaks[key] = max(self.peaks.get(key, 0.0), gigabytes)

    def fold_kernel_peak(self) -> None:
        """The highest RSS since the last reset belongs to every stage open since then."""
        if self.exact:
            self._fold(peak_rss_mb() / 1024)
            reset_peak_rss()

    def mark(self, event: str, stage: str) -> None:
        self.fold_kernel_peak()
        row = {"s": round(time.perf_counter() - self.started, 1), "event": event, "stage": stage,
               "rss_gb": round(resident_gb(), 3)}
        self.timeline.append(row)
        print(f"[{row['s']:7.1f} s] {event:5} {stage}: {row['rss_gb']:.2f} GB", flush=True)

    @contextlib.contextmanager
    def stage(self, name: str):
        self.stack.append(name)
        self.mark("enter", name)
        try:
            with original_named_stage(name):
                yield
        finally:
            self.mark("leave", name)
            self.stack.pop()


original_named_stage = base.named_stage


def instrument(memory: StageMemory) -> None:
    """Before the backends import `named_stage`, so theirs is this one; count partitioned graphs."""
    base.named_stage = memory.stage
    viewer = partition_reachability.ReachabilityViewer
    counted_init = viewer.__init__

    def init(self, graph_module):
        memory.graph_nodes.append(len(graph_module.graph.nodes))
        counted_init(self, graph_module)

    viewer.__init__ = init


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every-s", type=float, default=0.5, help="sampling interval of the peaks")
    parser.add_argument("--json", type=Path, help="write the timeline, peaks and graph sizes here")
    parser.add_argument("export_args", nargs=argparse.REMAINDER, help="-- then edit-mobile export's arguments")
    args = parser.parse_args()
    export_args = args.export_args[1:] if args.export_args[:1] == ["--"] else args.export_args
    memory = StageMemory(args.every_s)
    instrument(memory)
    from edit_mobile.main import main as edit_mobile

    code = edit_mobile(["export", *export_args])
    memory.fold_kernel_peak()
    peaks = dict(sorted(memory.peaks.items(), key=lambda item: -item[1]))
    print(f"\npeak resident memory by stage ({'exact, VmHWM' if memory.exact else 'sampled'}):")
    for key, value in list(peaks.items())[:10]:
        print(f"  {value:6.2f} GB  {key}")
    print(f"dependency viewers built, nodes each: {memory.graph_nodes} (XNNPACK's partitioner builds two a graph)")
    if args.json:
        args.json.write_text(json.dumps({"argv": export_args, "timeline": memory.timeline, "peaks_gb": peaks,
                                         "partitioned_graph_nodes": memory.graph_nodes, "exact_peaks": memory.exact}, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
