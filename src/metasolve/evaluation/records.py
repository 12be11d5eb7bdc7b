"""Results as records (docs/architecture.md, convention 11): flat dicts, one per measured number.

Keys: ``experiment``, ``method``, ``metric``, ``value``, ``paper`` (the paper's number for the cell
or ``None``), plus the setting keys that locate the cell. Tables, plots and docs render from them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def record(experiment: str, method: str, metric: str, value: float, paper: float | None = None,
           **settings) -> dict:
    value = float(value)
    return {"experiment": experiment, "method": method, "metric": metric,
            "value": value if math.isfinite(value) else None,
            "paper": None if paper is None else float(paper), **settings}


def write_records(path, records: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    return path


#: The keys every record has, with the types their values may take (``value`` is ``None`` for a
#: number that was not finite; see :func:`record`).
REQUIRED = {"experiment": (str,), "method": (str,), "metric": (str,),
            "value": (int, float, type(None))}


def read_records(path) -> list[dict]:
    """The records in JSON file ``path``, checked: a list of dicts, each with the
    :data:`REQUIRED` keys of the right types. A ValueError names the file and the first fault
    (OSError if it cannot be read)."""
    path = Path(path)
    try:
        records = json.loads(path.read_text())
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a text (JSON) file: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno}") from exc
    if not isinstance(records, list):
        raise ValueError(f"{path} is not a list of result records "
                         f"(got a JSON {type(records).__name__})")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise ValueError(f"{path}: record {i} is a {type(r).__name__}, not a JSON object")
        missing = [key for key in REQUIRED if key not in r]
        if missing:
            raise ValueError(f"{path}: record {i} lacks the key(s) {missing}")
        for key, types in REQUIRED.items():
            # bool is an int to Python, never a measured value.
            if isinstance(r[key], bool) or not isinstance(r[key], types):
                want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise ValueError(f"{path}: record {i} has {key}={r[key]!r}, expected {want}")
    return records


#: Words that mark a timing: a metric or setting key holding one differs between runs by nature.
TIMING_WORDS = ("seconds", "wall_time")


def without_timings(records: list[dict]) -> list[dict]:
    """``records`` without the timing records and timing settings (``train_seconds``,
    ``wall_time_ratio``, ...): what two runs of the same code must agree on exactly
    (docs/architecture.md, convention 13)."""
    return [{k: v for k, v in r.items() if not any(w in k for w in TIMING_WORDS)}
            for r in records if not any(w in r["metric"] for w in TIMING_WORDS)]
