"""Shared fixtures for the metasolve test suite.

Everything runs in float64 on one intra-op thread: the problems are tiny, and on small
machines torch's OpenMP pool makes a 16x16 matmul orders of magnitude slower than one thread.
The environment variables reach the subprocesses that tests start.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def poisson16():
    import metasolve as ms

    return ms.Poisson1DFamily(n=16, p=0.01)


def check_smoke_outputs(runs: dict) -> None:
    """Every experiment of ``runs`` (name -> ``reproduce`` result) wrote its own records, a JSON
    file and a plot whose figure is labelled throughout, and its tables render (rich and
    Markdown)."""
    import io

    from figures import check_run_figure
    from rich.console import Console

    from metasolve.runner import render_markdown

    for name, result in runs.items():
        records = result["records"]
        assert records and all(r["experiment"] == name for r in records)
        assert result["json"].exists() and result["plot"].exists()
        check_run_figure(name, result)
        Console(file=io.StringIO()).print(result["table"])
        assert name in render_markdown(records)
