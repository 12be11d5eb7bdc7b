"""Shared fixtures for the metasolve test suite.

Everything runs in float64 on one intra-op thread: the problems are tiny, and on small
machines torch's OpenMP pool makes a 16x16 matmul orders of magnitude slower than one thread.
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def poisson16():
    import metasolve as ms

    return ms.Poisson1DFamily(n=16, p=0.01)
