"""What every benchmark here prints beside its figures: the CPU they were measured on (machines
differ between sessions, so only ratios from one run are compared). The widest vector unit is
named too: sessions have run on an AVX2-only AMD EPYC and on AVX-512 EPYCs and Xeons that report
the same model name."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            lines = info.read().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    return ", ".join(part for part in (name or platform.processor() or "unknown CPU", vector) if part)
