"""Resident memory of this process for the benchmarks (Linux): torch's CPU allocations are
invisible to ``tracemalloc``, so the benchmarks read ``/proc/self/status`` instead.

``lean_allocator()`` makes glibc return every freed block of 1 MiB or more at once
(``mallopt(M_MMAP_THRESHOLD)``), so that the resident size follows the live tensors;
``settle()`` frees what Python and glibc still hold; ``reset_peak()`` restarts the peak
(``/proc/self/clear_refs``); ``resident_mib()`` reads the resident size and its peak
(``VmRSS``, ``VmHWM``) in MiB.
"""

from __future__ import annotations

import ctypes
import gc
import re

_LIBC = ctypes.CDLL("libc.so.6")


def lean_allocator() -> None:
    _LIBC.mallopt(-3, 2 ** 20)  # M_MMAP_THRESHOLD: large blocks mapped, unmapped when freed


def settle() -> None:
    gc.collect()
    _LIBC.malloc_trim(0)


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def resident_mib() -> tuple[float, float]:
    """``(VmRSS, VmHWM)`` in MiB: the resident size now and its peak since the last reset."""
    text = open("/proc/self/status").read()
    read = {key: int(re.search(rf"{key}:\s+(\d+)", text).group(1)) / 1024
            for key in ("VmRSS", "VmHWM")}
    return read["VmRSS"], read["VmHWM"]
