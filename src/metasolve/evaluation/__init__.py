"""Metrics (iterations, wall-clock) and result records; each experiment renders its own tables
and plots from the records."""

from .metrics import IterationStats, WallClock, compare_wall_clock, iteration_stats
from .records import read_records, record, write_records

__all__ = ["IterationStats", "WallClock", "compare_wall_clock", "iteration_stats",
           "read_records", "record", "write_records"]
