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


def read_records(path) -> list[dict]:
    records = json.loads(Path(path).read_text())
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path} is not a list of result records")
    return records
