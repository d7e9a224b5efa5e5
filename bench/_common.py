"""Shared helpers for the benchmark scripts (peak memory, timing, printing)."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timed(label: str, rows: int | None = None) -> Iterator[None]:
    """Print how long the block took, rows per second and the peak memory so far."""
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    rate = f", {rows / seconds:,.0f} rows/s" if rows else ""
    print(f"{label}: {seconds:.2f} s{rate}, peak memory {peak_rss_mib():,.0f} MiB", flush=True)
