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
